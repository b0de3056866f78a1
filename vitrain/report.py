"""Experiment reports: a Markdown table and plots from the ``summary.json`` of finished runs.

``python -m vitrain.report DIR [DIR ...] --out OUT`` reads every run under the given sweep or
run directories (a run is a directory holding Hydra's ``.hydra/overrides.yaml`` and vitrain's
``summary.json``), groups runs that differ only in ``seed=`` (or ``run_name=``, or an override
that restates a value every run has), and writes into ``OUT``:

- ``report.md``: one row per group: runs, the monitored metric's best value (mean ± sample std
  over seeds), the same metric of the best checkpoint on the held-out test split when the runs
  have one (``test/*``, mean ± std), the other best ``val/*`` and ``test/*`` metrics (mean),
  parameters, training samples/s, wall time;
- ``metric_vs_params.png``: the monitored metric against the parameter count (mean ± std);
- ``metric_vs_throughput.png``: the monitored metric against training samples/s;
- ``curves.png``: per-epoch ``train/loss`` and the monitored metric from each run's
  ``csv/metrics.csv`` (the CSV logger's file), averaged over the seeds of each group.

A group's label is the overrides that differ between groups (``model=t2t_vit_7``); overrides
shared by every run are listed above the table.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import logging
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from vitrain.sweep import _fmt, _is_number, find_job_dirs

log = logging.getLogger(__name__)

REPORT_NAME = "report.md"
PLOTS = ("metric_vs_params.png", "metric_vs_throughput.png", "curves.png")


@dataclass
class Run:
    """One finished run: where it is, its overrides and what its ``summary.json`` says."""

    path: Path
    overrides: list[str]
    summary: dict[str, Any]
    # per-epoch values from csv/metrics.csv: {metric: {epoch: value}}
    curves: dict[str, dict[int, float]] = field(default_factory=dict)

    @property
    def monitor(self) -> str | None:
        return (self.summary.get("monitor") or {}).get("metric")

    @property
    def best(self) -> dict[str, Any]:
        return self.summary.get("best") or {}

    @property
    def test(self) -> dict[str, Any]:
        """The held-out test metrics of the best checkpoint (``test/*``; {} when none)."""
        return self.summary.get("test") or {}

    def metric(self, name: str) -> Any:
        """A ``test/*`` metric from the test evaluation, any other from the best validation entry."""
        return (self.test if name.startswith("test/") else self.best).get(name)

    @property
    def samples_per_s(self) -> float | None:
        """End-to-end training samples/s (Throughput callback), else compute-only (RunStats)."""
        throughput = self.summary.get("throughput") or {}
        return throughput.get("samples_per_s") or self.summary.get("train_samples_per_s")


@dataclass
class Group:
    """Runs that differ only in their seed."""

    label: str
    runs: list[Run]

    def values(self, metric: str) -> list[float]:
        return [v for r in self.runs if _is_number(v := r.metric(metric))]

    def mean_std(self, metric: str) -> tuple[float, float] | None:
        """Mean and sample standard deviation (0 for one run) of the best ``metric``."""
        values = self.values(metric)
        if not values:
            return None
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    def mean_of(self, getter) -> float | None:
        values = [v for v in map(getter, self.runs) if _is_number(v)]
        return statistics.fmean(values) if values else None

    def mean_curve(self, metric: str) -> tuple[list[int], list[float]]:
        """Epochs and the mean over runs of ``metric`` at the epochs every run has."""
        curves = [r.curves.get(metric, {}) for r in self.runs]
        epochs = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
        return epochs, [statistics.fmean(c[e] for c in curves) for e in epochs]


def find_runs(dirs: list[Path]) -> list[Run]:
    """The completed runs under ``dirs`` (each a run directory or a folder of them)."""
    runs, skipped = [], 0
    for root in dirs:
        if not Path(root).is_dir():
            raise FileNotFoundError(f"{root}: no such directory. Pass sweep or run directories.")
        for job in find_job_dirs(root):
            run = read_run(job)
            if run is None:
                skipped += 1
            else:
                runs.append(run)
    if skipped:
        log.warning("Left out %d runs that have no completed summary.json", skipped)
    return runs


def read_run(job: Path) -> Run | None:
    """The run in ``job``, or None when it has no ``summary.json`` or did not complete."""
    try:
        summary = json.loads((job / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    if summary.get("status", "completed") != "completed":
        return None
    overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()) or []
    return Run(job, [str(o) for o in overrides], summary, read_curves(job / "csv" / "metrics.csv"))


def read_curves(path: Path) -> dict[str, dict[int, float]]:
    """Per-epoch means of every metric in a Lightning CSVLogger file ({} when there is none).

    Step-level rows (``train/loss`` every ``log_every_n_steps``) are averaged within their epoch.
    """
    if not path.is_file():
        return {}
    sums: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if not row.get("epoch"):
                continue
            epoch = int(float(row["epoch"]))
            for key, value in row.items():
                if key in ("epoch", "step") or value in (None, ""):
                    continue
                sums[key][epoch].append(float(value))
    return {k: {e: statistics.fmean(v) for e, v in per_epoch.items()} for k, per_epoch in sums.items()}


# overrides that name a run rather than set anything: runs differing only in them are seeds of one group
NAMING_KEYS = ("seed", "run_name")


def restates_every_run(override: str, runs: list[Run]) -> bool:
    """Whether ``key=value`` only restates what every run's resolved config already holds
    (``data.test_size=100`` given to one run whose experiment sets 100 anyway)."""
    key, sep, value = override.partition("=")
    if not sep or key.startswith(("+", "~", "hydra.")):
        return False
    for run in runs:
        config = resolved_config(run.path)
        found = OmegaConf.select(config, key, default="<missing>") if config is not None else "<missing>"
        if OmegaConf.is_config(found) or found != yaml.safe_load(value):
            return False
    return True


@functools.cache
def resolved_config(run_dir: Path):
    """The run's ``resolved_config.yaml`` (None when it has none)."""
    path = run_dir / "resolved_config.yaml"
    return OmegaConf.load(path) if path.is_file() else None


def group_runs(runs: list[Run]) -> tuple[list[Group], list[str]]:
    """Group runs by their overrides without those that only name a run (``seed=``,
    ``run_name=``) or restate a value every run has; also return the overrides all share."""

    def key(run: Run) -> tuple[str, ...]:
        return tuple(
            o
            for o in run.overrides
            if o.lstrip("+~").partition("=")[0] not in NAMING_KEYS and not restates_every_run(o, runs)
        )

    keys = [key(r) for r in runs]
    shared = [o for o in keys[0] if all(o in k for k in keys[1:])] if keys else []
    groups: dict[tuple[str, ...], list[Run]] = {}
    for run, k in zip(runs, keys, strict=True):
        groups.setdefault(k, []).append(run)
    out = []
    for k, members in groups.items():
        label = " ".join(o for o in k if o not in shared) or str(members[0].summary.get("model") or "all")
        out.append(Group(label, members))
    return out, shared


def markdown(groups: list[Group], shared: list[str], title: str) -> str:
    """The report: a header (metric, shared overrides) and one table row per group."""
    monitor = next((r.monitor for g in groups for r in g.runs if r.monitor), None)
    test_monitor = "test/" + monitor.split("/", 1)[-1] if monitor else None
    tested = {k for g in groups for r in g.runs for k in r.test if k.startswith("test/")}
    if test_monitor not in tested:
        test_monitor = None
    metrics = sorted({k for g in groups for r in g.runs for k in r.best if k.startswith("val/")} - {monitor})
    metrics += sorted(tested - {test_monitor})
    lines = [f"# {title}", ""]
    lines.append(f"{sum(len(g.runs) for g in groups)} runs in {len(groups)} groups (seeds averaged).")
    if monitor:
        mode = groups[0].runs[0].summary.get("monitor", {}).get("mode", "")
        lines.append(
            f"Metric: best `{monitor}` of each run ({mode}), mean ± std over seeds; the other "
            "`val/*` columns are at each run's best epoch (mean)"
            + (
                f"; `test/*` columns evaluate that best checkpoint once on the held-out test split ({test_monitor}: "
                "mean ± std)."
                if test_monitor
                else "."
            )
        )
    if shared:
        lines.append("Shared overrides: " + " ".join(f"`{o}`" for o in shared))
    if monitor and len(groups) > 1 and (best := best_group(groups, monitor)) is not None:
        value = best.mean_std(monitor)[0]
        lines.append(f"Best on `{monitor}` (the selection split): `{best.label}` ({value:.4f}).")
    lines.append("")
    tests = [f"{test_monitor} (mean ± std)"] if test_monitor else []
    head = [
        "run",
        "seeds",
        f"{monitor} (mean ± std)",
        *tests,
        *metrics,
        "params",
        "train samples/s",
        "wall s",
    ]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join("---" for _ in head) + "|")
    for g in groups:
        stats = g.mean_std(monitor) if monitor else None
        cells = [f"`{g.label}`", str(len(g.runs)), f"{stats[0]:.4f} ± {stats[1]:.4f}" if stats else ""]
        if test_monitor:
            test_stats = g.mean_std(test_monitor)
            cells.append(f"{test_stats[0]:.4f} ± {test_stats[1]:.4f}" if test_stats else "")
        cells += [_fmt(stats_m[0] if (stats_m := g.mean_std(m)) else None) for m in metrics]
        cells.append(_fmt_int(g.mean_of(lambda r: (r.summary.get("params") or {}).get("total"))))
        cells.append(_fmt(g.mean_of(lambda r: r.samples_per_s), 1))
        cells.append(_fmt(g.mean_of(lambda r: r.summary.get("wall_time_s")), 1))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def best_group(groups: list[Group], monitor: str) -> Group | None:
    """The group whose mean best ``monitor`` is best (in the runs' monitor mode): a sweep's choice,
    e.g. BERT's learning rate from its grid."""
    scored = [(stats[0], g) for g in groups if (stats := g.mean_std(monitor))]
    if not scored:
        return None
    mode = (groups[0].runs[0].summary.get("monitor") or {}).get("mode", "max")
    pick = max if mode == "max" else min
    return pick(scored, key=lambda item: item[0])[1]


def plot(groups: list[Group], out: Path) -> list[Path]:
    """Write the three PNG plots into ``out``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monitor = next((r.monitor for g in groups for r in g.runs if r.monitor), "metric")
    written = []
    for name, getter, xlabel in (
        (PLOTS[0], lambda r: (r.summary.get("params") or {}).get("total"), "parameters"),
        (PLOTS[1], lambda r: r.samples_per_s, "training samples/s"),
    ):
        fig, ax = plt.subplots(figsize=(6, 4))
        for g in groups:
            stats, x = g.mean_std(monitor), g.mean_of(getter)
            if stats and x is not None:
                ax.errorbar([x], [stats[0]], yerr=[stats[1]], fmt="o", capsize=4, label=g.label)
        ax.set(xlabel=xlabel, ylabel=f"best {monitor}", xscale="log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        written.append(_save(fig, out / name))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("train/loss", monitor), strict=True):
        for g in groups:
            epochs, values = g.mean_curve(metric)
            if epochs:
                ax.plot(epochs, values, marker=".", label=g.label)
        ax.set(xlabel="epoch", ylabel=metric, title=f"{metric} (mean over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    written.append(_save(fig, out / PLOTS[2]))
    return written


def write_report(dirs: list[Path], out: Path, title: str = "Report") -> Path:
    """Read the runs under ``dirs``; write ``report.md`` and the plots into ``out``."""
    runs = find_runs(dirs)
    if not runs:
        raise ValueError(
            f"no completed runs (summary.json with status completed) under {', '.join(map(str, dirs))}"
        )
    groups, shared = group_runs(runs)
    out.mkdir(parents=True, exist_ok=True)
    plot(groups, out)
    path = out / REPORT_NAME
    path.write_text(markdown(groups, shared, title))
    return path


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _fmt_int(value: float | None) -> str:
    return "" if value is None else f"{round(value):,}"


def cli(argv: list[str] | None = None) -> int:
    """``python -m vitrain.report DIR [DIR ...] --out OUT [--title TITLE]``."""
    parser = argparse.ArgumentParser(prog="python -m vitrain.report", description=__doc__.split("\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="sweep or run directories")
    parser.add_argument("--out", type=Path, required=True, help="folder for report.md and the PNG plots")
    parser.add_argument("--title", default="Report", help="the report's heading")
    args = parser.parse_args(argv)
    try:
        path = write_report(args.dirs, args.out, args.title)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(path.read_text())
    print(f"Wrote {path} and {', '.join(PLOTS)} in {args.out}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(cli())
