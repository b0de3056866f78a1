"""Experiment reports: a Markdown table and plots from the ``summary.json`` of finished runs.

:func:`write_report` (``python -m vitrain.report DIR [DIR ...] --out OUT``) reads every run
under the given sweep or run directories (a run is a directory holding Hydra's
``.hydra/overrides.yaml`` and vitrain's ``summary.json``). It reports training runs only: a run that failed, a ``mode=eval`` / ``test`` /
``export`` / ``predict`` run (it evaluates a checkpoint, it did not train) and a run of 0 training
steps are left out and listed with the reason. Runs are split by task (each task has its own
metrics), then grouped: runs that differ only in ``seed=`` (or ``run_name=``, or an override that
restates a value every run has) form one group. It writes into ``OUT``:

- ``report.md``: one table per task, one row per group: runs, distinct seeds, the monitored
  metric's best value (mean ± sample std), the same metric of the best checkpoint on the held-out
  test split when the runs have one (``test/*``, mean ± std), the task's other best ``val/*`` and
  ``test/*`` metrics (mean), parameters, training samples/s, wall time. A group whose runs share
  a seed is flagged: its ± is run-to-run noise, not a spread over seeds;
- ``metric_vs_params.png``: the monitored metric against the parameter count (mean ± std), one
  panel per task;
- ``metric_vs_throughput.png``: the monitored metric against training samples/s;
- ``curves.png``: per-epoch ``train/loss`` and the monitored metric from each run's
  ``csv/metrics.csv`` (the CSV logger's file), averaged over the seeds of each group, one row of
  panels per task. Legends sit below their panel (labels wrapped), so the panels keep their size.

A group's label is the overrides that differ between groups (``model=t2t_vit_7``); overrides
shared by every run are listed above the tables.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import statistics
import textwrap
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from vitrain.errors import UserError
from vitrain.results.sweep_table import _fmt, _is_number, find_job_dirs

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
    def task(self) -> str:
        """The task that trained the run (``summary.json``'s ``task``, else the class of the
        resolved config's ``model._target_``, else named by its monitored metric)."""
        if self.summary.get("task"):
            return str(self.summary["task"])
        config = resolved_config(self.path)
        target = OmegaConf.select(config, "model._target_", default=None) if config is not None else None
        return str(target).rsplit(".", 1)[-1] if target else f"task monitoring {self.monitor}"

    @property
    def seed(self) -> Any:
        """The run's global seed: ``summary.json``'s ``seed``, else its ``seed=`` override, else the
        resolved config's (None when unknown)."""
        if "seed" in self.summary:
            return self.summary["seed"]
        for override in self.overrides:
            key, _, value = override.lstrip("+").partition("=")
            if key == "seed":
                return yaml.safe_load(value)
        config = resolved_config(self.path)
        return OmegaConf.select(config, "seed", default=None) if config is not None else None

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
        """End-to-end training samples/s (the Throughput callback's; summaries written before it
        was the only definition may hold a compute-only ``train_samples_per_s`` instead)."""
        throughput = self.summary.get("throughput") or {}
        return throughput.get("samples_per_s") or self.summary.get("train_samples_per_s")


@dataclass
class Group:
    """Runs of one task that differ only in their seed."""

    label: str
    runs: list[Run]
    # the overrides that define the group (the naming ones, seed= and run_name=, left out)
    overrides: tuple[str, ...] = ()

    @property
    def task(self) -> str:
        return self.runs[0].task

    @property
    def monitor(self) -> str | None:
        return self.runs[0].monitor

    @property
    def seeds(self) -> list[Any]:
        """The distinct seeds of the runs (unknown ones left out)."""
        return sorted({r.seed for r in self.runs if r.seed is not None}, key=str)

    @property
    def repeats_share_a_seed(self) -> bool:
        """Several runs but fewer distinct seeds: their spread is not a spread over seeds."""
        return len(self.runs) > 1 and len(self.seeds) < len(self.runs)

    def values(self, metric: str) -> list[float]:
        return [v for r in self.runs if _is_number(v := r.metric(metric))]

    def mean_std(self, metric: str) -> tuple[float, float | None] | None:
        """Mean and sample standard deviation (None for one run) of the best ``metric``."""
        values = self.values(metric)
        if not values:
            return None
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None

    def mean_of(self, getter) -> float | None:
        values = [v for v in map(getter, self.runs) if _is_number(v)]
        return statistics.fmean(values) if values else None

    def mean_curve(self, metric: str) -> tuple[list[int], list[float]]:
        """Epochs and the mean over runs of ``metric`` at the epochs every run has."""
        curves = [r.curves.get(metric, {}) for r in self.runs]
        epochs = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
        return epochs, [statistics.fmean(c[e] for c in curves) for e in epochs]


def find_runs(dirs: list[Path]) -> list[Run]:
    """The completed training runs under ``dirs`` (each a run directory or a folder of them)."""
    return scan_runs(dirs)[0]


def scan_runs(dirs: list[Path]) -> tuple[list[Run], list[tuple[Path, str]]]:
    """The completed training runs under ``dirs``, and ``(directory, reason)`` of each run left out."""
    runs, left_out = [], []
    for root in dirs:
        if not Path(root).is_dir():
            raise UserError(f"{root}: no such directory. Pass sweep or run directories.")
        for job in find_job_dirs(root):
            run = read_run(job)
            if isinstance(run, str):
                left_out.append((job, run))
            else:
                runs.append(run)
    if left_out:
        log.warning(
            "Left out %d runs: %s", len(left_out), "; ".join(f"{path} ({why})" for path, why in left_out)
        )
    return runs, left_out


def read_run(job: Path) -> Run | str:
    """The training run in ``job``, or why it is left out (no summary, not completed, not a
    training run, no training step)."""
    try:
        summary = json.loads((job / "summary.json").read_text())
    except (OSError, ValueError):
        return "no readable summary.json"
    status = summary.get("status", "completed")
    if status != "completed":
        return f"status {status}"
    mode = summary.get("mode", "train")
    if mode != "train":
        return f"mode={mode}: evaluates a checkpoint, did not train"
    if summary.get("global_step") == 0:
        return "0 training steps"
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
    """Group runs by their task and their overrides without those that only name a run
    (``seed=``, ``run_name=``) or restate a value every run has; also return the overrides all
    runs share. Groups come task by task; a group's label leaves out what every run of its task
    shares (the task's table lists that, see :func:`shared_overrides`)."""

    def key(run: Run) -> tuple[str, ...]:
        return tuple(
            o
            for o in run.overrides
            if o.lstrip("+~").partition("=")[0] not in NAMING_KEYS and not restates_every_run(o, runs)
        )

    keys = {id(r): key(r) for r in runs}
    out = []
    for task in dict.fromkeys(r.task for r in runs):
        members = [r for r in runs if r.task == task]
        common = _common([keys[id(r)] for r in members])
        groups: dict[tuple[str, ...], list[Run]] = {}
        for run in members:
            groups.setdefault(keys[id(run)], []).append(run)
        for k, grouped in groups.items():
            label = " ".join(o for o in k if o not in common) or str(grouped[0].summary.get("model") or "all")
            out.append(Group(label, grouped, k))
    return out, _common(list(keys.values()))


def _common(keys: list[tuple[str, ...]]) -> list[str]:
    """The overrides every key holds, in the order of the first."""
    return [o for o in keys[0] if all(o in k for k in keys[1:])] if keys else []


def shared_overrides(groups: list[Group]) -> list[str]:
    """The overrides every run of ``groups`` has (after the naming keys are dropped)."""
    return _common([g.overrides for g in groups])


def by_task(groups: list[Group]) -> dict[str, list[Group]]:
    """The groups of each task, in order."""
    tasks: dict[str, list[Group]] = {}
    for g in groups:
        tasks.setdefault(g.task, []).append(g)
    return tasks


def markdown(
    groups: list[Group], shared: list[str], title: str, left_out: list[tuple[Path, str]] = ()
) -> str:
    """The report: a header (runs, runs left out, shared overrides) and one table per task."""
    tasks = by_task(groups)
    lines = [f"# {title}", ""]
    per_task = f" of {len(tasks)} tasks, one table each" if len(tasks) > 1 else ""
    lines.append(f"{sum(len(g.runs) for g in groups)} training runs in {len(groups)} groups{per_task}.")
    if left_out:
        lines.append(
            f"Left out ({len(left_out)}): " + "; ".join(f"`{p}` ({why})" for p, why in left_out) + "."
        )
    if shared:
        lines.append("Shared overrides: " + " ".join(f"`{o}`" for o in shared))
    for task, members in tasks.items():
        lines += ["", *task_table(task, members, len(tasks) > 1, shared)]
    return "\n".join(lines) + "\n"


def task_table(task: str, groups: list[Group], heading: bool, global_shared: list[str] = ()) -> list[str]:
    """One task's table: its monitored metric, its own other metrics, one row per group."""
    monitor = next((g.monitor for g in groups if g.monitor), None)
    test_monitor = "test/" + monitor.split("/", 1)[-1] if monitor else None
    tested = {k for g in groups for r in g.runs for k in r.test if k.startswith("test/")}
    if test_monitor not in tested:
        test_monitor = None
    metrics = sorted({k for g in groups for r in g.runs for k in r.best if k.startswith("val/")} - {monitor})
    metrics += sorted(tested - {test_monitor})
    lines = [f"## {task}", ""] if heading else []
    own = [o for o in shared_overrides(groups) if o not in global_shared]
    if own:
        lines += ["Shared by this task's runs: " + " ".join(f"`{o}`" for o in own), ""]
    if monitor:
        mode = groups[0].runs[0].summary.get("monitor", {}).get("mode", "")
        lines.append(
            f"Metric: best `{monitor}` of each run ({mode}), mean ± std over the runs of a group; the "
            "other `val/*` columns are at each run's best epoch (mean)"
            + (
                f"; `test/*` columns evaluate that best checkpoint once on the held-out test split "
                f"({test_monitor}: mean ± std)."
                if test_monitor
                else "."
            )
        )
        if len(groups) > 1 and (best := best_group(groups, monitor)) is not None:
            value = best.mean_std(monitor)[0]
            lines.append(f"Best on `{monitor}` (the selection split): `{best.label}` ({value:.4f}).")
        lines.append("")
    tests = [f"{test_monitor} (mean ± std)"] if test_monitor else []
    head = [
        "run",
        "runs",
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
    warnings = []
    for g in groups:
        stats = g.mean_std(monitor) if monitor else None
        flag = " (!)" if g.repeats_share_a_seed else ""
        cells = [f"`{g.label}`", str(len(g.runs)), f"{len(g.seeds)}{flag}"]
        cells.append(_mean_std(stats))
        if test_monitor:
            cells.append(_mean_std(g.mean_std(test_monitor)))
        cells += [_fmt(stats_m[0] if (stats_m := g.mean_std(m)) else None) for m in metrics]
        cells.append(_fmt_int(g.mean_of(lambda r: (r.summary.get("params") or {}).get("total"))))
        cells.append(_fmt(g.mean_of(lambda r: r.samples_per_s), 1))
        cells.append(_fmt(g.mean_of(lambda r: r.summary.get("wall_time_s")), 1))
        lines.append("| " + " | ".join(cells) + " |")
        if g.repeats_share_a_seed:
            seeds = ", ".join(map(str, g.seeds)) or "unknown"
            warnings.append(
                f"(!) `{g.label}`: {len(g.runs)} runs but {len(g.seeds)} distinct seed(s) ({seeds}): its ± "
                "is run-to-run noise, not a spread over seeds; give each repeat its own seed= (seed=1,2,3)."
            )
    for warning in warnings:
        log.warning(warning.replace("`", ""))
    return lines + ([""] + warnings if warnings else [])


LEGEND_WIDTH = 60  # characters per line of a legend label
PANEL = (5.5, 3.6)  # inches of one panel (width, height), whatever its legend holds
LEGEND_LINE = 0.16  # inches per line of legend text (fontsize 7, with spacing)


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
    """Write the three PNG plots into ``out`` (one row of panels per task); return their paths."""
    return [_save(fig, out / name) for name, fig in figures(groups).items()]


def figures(groups: list[Group]) -> dict[str, Any]:
    """The three figures of :data:`PLOTS`: one row of panels per task, each panel's legend in a
    band of its own below it, as tall as its wrapped labels need, so the panels keep their size."""
    import matplotlib

    matplotlib.use("Agg")

    tasks = by_task(groups)
    out = {}
    for name, getter, xlabel in (
        (PLOTS[0], lambda r: (r.summary.get("params") or {}).get("total"), "parameters"),
        (PLOTS[1], lambda r: r.samples_per_s, "training samples/s"),
    ):
        fig, panels = _panel_grid(tasks, columns=1)
        for (ax, legend), (task, members) in zip(panels, tasks.items(), strict=True):
            _metric_against(ax[0], task, members, getter, xlabel)
            _legend_in(legend[0], ax[0])
        out[name] = fig
    fig, panels = _panel_grid(tasks, columns=2)
    for (axes, legends), (task, members) in zip(panels, tasks.items(), strict=True):
        for ax, legend, metric in zip(
            axes, legends, ("train/loss", members[0].monitor or "metric"), strict=True
        ):
            _curves(ax, task, members, metric)
            _legend_in(legend, ax)
    out[PLOTS[2]] = fig
    return out


def _panel_grid(tasks: dict[str, list[Group]], columns: int):
    """A figure with, per task, a row of ``columns`` panels and below each a legend band sized
    for that task's wrapped group labels; returns ``(fig, [(panels, legend_axes), ...])``."""
    import matplotlib.pyplot as plt

    bands = [
        LEGEND_LINE * (sum(_label_lines(g.label) for g in members) + 1) + 0.2 for members in tasks.values()
    ]
    heights = [h for band in bands for h in (PANEL[1], band)]
    fig = plt.figure(figsize=(PANEL[0] * columns, sum(heights)), layout="constrained")
    grid = fig.add_gridspec(len(heights), columns, height_ratios=heights)
    rows = []
    for i in range(len(tasks)):
        panels = [fig.add_subplot(grid[2 * i, c]) for c in range(columns)]
        legends = [fig.add_subplot(grid[2 * i + 1, c]) for c in range(columns)]
        for legend in legends:
            legend.axis("off")
        rows.append((panels, legends))
    return fig, rows


def _label_lines(label: str) -> int:
    return len(textwrap.wrap(label, LEGEND_WIDTH)) or 1


def _legend_in(band, ax) -> None:
    """The legend of ``ax`` (labels wrapped) at the top of its band below it."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        wrapped = [textwrap.fill(label, LEGEND_WIDTH) for label in labels]
        band.legend(handles, wrapped, fontsize=7, loc="upper center", frameon=False)


def _metric_against(ax, task: str, groups: list[Group], getter, xlabel: str) -> None:
    """One panel: each group's best monitored metric (mean ± std) against ``getter`` of its runs."""
    monitor = groups[0].monitor or "metric"
    mode = (groups[0].runs[0].summary.get("monitor") or {}).get("mode")
    better = {"max": " (higher is better)", "min": " (lower is better)"}.get(mode, "")
    xs = []
    for i, g in enumerate(groups):
        stats, x = g.mean_std(monitor), g.mean_of(getter)
        if stats and x is not None:
            marker = "osD^v"[i // 10 % 5]  # the 10 colours repeat: the marker tells groups apart
            ax.errorbar([x], [stats[0]], yerr=[stats[1] or 0.0], fmt=marker, capsize=4, label=g.label)
            xs.append(x)
    # a log axis only across a decade or more: below that its minor tick labels overlap
    wide = len(xs) > 1 and min(xs) > 0 and max(xs) / min(xs) >= 10
    ax.set(xlabel=xlabel, ylabel=f"best {monitor}{better}", xscale="log" if wide else "linear", title=task)
    ax.margins(x=0.2, y=0.15)  # points off the frame
    ax.grid(alpha=0.3)


def _curves(ax, task: str, groups: list[Group], metric: str) -> None:
    """One panel: ``metric`` per epoch, the mean of each group's runs."""
    from matplotlib.ticker import MaxNLocator

    for i, g in enumerate(groups):
        epochs, values = g.mean_curve(metric)
        if epochs:  # the 10 colours repeat: the line style tells groups apart
            ax.plot(epochs, values, marker=".", linestyle=("-", "--", ":", "-.")[i // 10 % 4], label=g.label)
    ax.set(xlabel="epoch", ylabel=metric, title=f"{task}: {metric} (mean of a group's runs)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def write_report(dirs: list[Path], out: Path, title: str = "Report") -> Path:
    """Read the runs under ``dirs``; write ``report.md`` and the plots into ``out``."""
    runs, left_out = scan_runs(dirs)
    if not runs:
        why = "; ".join(f"{p} ({reason})" for p, reason in left_out) or "no run directories"
        raise UserError(f"no completed training runs under {', '.join(map(str, dirs))}: {why}")
    groups, shared = group_runs(runs)
    out.mkdir(parents=True, exist_ok=True)
    plot(groups, out)
    path = out / REPORT_NAME
    path.write_text(markdown(groups, shared, title, left_out))
    return path


def _save(fig, path: Path) -> Path:
    # the constrained layout sizes panels, labels and legend bands; the tight box trims the margin
    fig.savefig(path, dpi=110, bbox_inches="tight", pad_inches=0.1)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _mean_std(stats: tuple[float, float | None] | None) -> str:
    """A "mean ± std" cell; a single run has no spread, so its value stands alone."""
    if stats is None:
        return ""
    mean, std = stats
    return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"


def _fmt_int(value: float | None) -> str:
    return "" if value is None else f"{round(value):,}"
