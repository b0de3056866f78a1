"""The sweep table: one row per job of a multirun, as ``sweep_summary.csv`` and ``sweep_summary.md``.

Every job directory holds Hydra's ``.hydra/overrides.yaml`` and, written by ``vitrain.run``,
``summary.json`` with the job's status, the monitored metric and the best and last validation
metrics. A job directory without ``summary.json`` (the process died before it could write one)
is listed with status ``missing``.

The run layer writes the table while a multirun goes (``vitrain.run.sweep_summary.SweepSummary``,
a Hydra callback); ``python -m vitrain.sweep SWEEP_DIR`` writes it by hand (a sweep that was
killed, say).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import shlex
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

CSV_NAME = "sweep_summary.csv"
MD_NAME = "sweep_summary.md"
MISSING = "missing"
# Columns before the best entry's ``val/*`` metrics (then the held-out ``test/*`` ones), and after them.
HEAD_COLUMNS = ["job", "subdir", "status", "overrides", "monitor", "mode", "best", "last", "best_epoch"]
TAIL_COLUMNS = ["wall_time_s", "error"]
# Longest error text shown in the Markdown table (the CSV keeps it whole).
MD_ERROR_CHARS = 300


def find_job_dirs(sweep_dir: Path) -> list[Path]:
    """Every directory under ``sweep_dir`` that holds Hydra's ``.hydra/overrides.yaml``."""
    return sorted(
        p.parent.parent for p in Path(sweep_dir).rglob("overrides.yaml") if p.parent.name == ".hydra"
    )


def read_job(job_dir: Path, sweep_dir: Path) -> dict[str, Any]:
    """One table row for ``job_dir``: its overrides and what its ``summary.json`` says.

    The ``val/*`` metrics of the best entry are included under their own names, and so are the
    ``test/*`` metrics of the best checkpoint on the held-out test split when the run has them.
    """
    job_dir = Path(job_dir)
    overrides = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text()) or []
    row: dict[str, Any] = {
        "job": _job_number(job_dir),
        "subdir": str(job_dir.relative_to(sweep_dir)),
        "overrides": [str(o) for o in overrides],
        "status": MISSING,
        "error": "",
    }
    summary_path = job_dir / "summary.json"
    try:
        summary = json.loads(summary_path.read_text())
    except FileNotFoundError:
        return row
    except (OSError, ValueError) as err:
        row["error"] = f"unreadable {summary_path.name}: {err}"
        return row
    # summary.json from before run statuses existed was only written by completed runs
    row["status"] = summary.get("status", "completed")
    row["error"] = summary.get("error") or ""
    monitor = summary.get("monitor") or {}
    metric = monitor.get("metric")
    best, last = summary.get("best") or {}, summary.get("last") or {}
    row.update(
        monitor=metric,
        mode=monitor.get("mode"),
        best=best.get(metric),
        last=last.get(metric),
        best_epoch=best.get("epoch"),
        wall_time_s=summary.get("wall_time_s"),
    )
    row.update({k: v for k, v in best.items() if k.startswith("val/")})
    row.update({k: v for k, v in (summary.get("test") or {}).items() if k.startswith("test/")})
    return row


def collect_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """The rows of every job in ``sweep_dir``, ordered by job number."""
    sweep_dir = Path(sweep_dir)
    rows = [read_job(d, sweep_dir) for d in find_job_dirs(sweep_dir)]
    return sorted(
        rows, key=lambda r: (r["job"] is None, r["job"] if r["job"] is not None else 0, r["subdir"])
    )


def columns(rows: list[dict[str, Any]]) -> list[str]:
    """The CSV columns: fixed ones around the union of the rows' ``val/*`` then ``test/*``
    metrics (each sorted)."""
    metrics = [
        sorted({k for row in rows for k in row if k.startswith(prefix)}) for prefix in ("val/", "test/")
    ]
    return [*HEAD_COLUMNS, *metrics[0], *metrics[1], *TAIL_COLUMNS]


def best_row(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The completed row with the best monitored value (by its mode), or None."""
    scored = [r for r in rows if r["status"] == "completed" and _is_number(r.get("best"))]
    if not scored:
        return None
    pick = min if scored[0].get("mode") == "min" else max
    return pick(scored, key=lambda r: r["best"])


def write_sweep_table(sweep_dir: Path) -> list[dict[str, Any]]:
    """Write ``sweep_summary.csv`` and ``sweep_summary.md`` into ``sweep_dir``; return the rows.

    The CSV holds every override of each job (shell-quoted, space-separated) and full error
    messages; the Markdown table shows the overrides that differ between jobs and lists the
    ones they share above it.
    """
    sweep_dir = Path(sweep_dir)
    rows = collect_rows(sweep_dir)
    cols = columns(rows)
    _write_atomic(sweep_dir / CSV_NAME, _csv_text(rows, cols))
    _write_atomic(sweep_dir / MD_NAME, markdown(rows, cols, title=f"Sweep {sweep_dir}"))
    return rows


def markdown(rows: list[dict[str, Any]], cols: list[str], title: str = "Sweep") -> str:
    """The Markdown document: a header (monitor, shared overrides, best job) and the table."""
    shared = _shared_overrides(rows)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    lines = [f"# {title}", ""]
    lines.append(f"{len(rows)} jobs: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
    monitors = sorted({f"{r['monitor']} ({r['mode']})" for r in rows if r.get("monitor")})
    if monitors:
        lines.append(f"Monitored metric: {', '.join(monitors)}")
    if shared:
        lines.append("Overrides shared by every job: " + " ".join(f"`{_md(o)}`" for o in shared))
    best = best_row(rows)
    if best is not None:
        lines.append(f"Best job: {best['job']} ({best['monitor']}={_fmt(best['best'])})")
    lines.append("")
    md_cols = [
        c if c != "overrides" else "overrides (differing)" for c in cols if c not in ("monitor", "mode")
    ]
    lines.append("| " + " | ".join(md_cols) + " |")
    lines.append("|" + "|".join("---" for _ in md_cols) + "|")
    for row in rows:
        cells = []
        for col in cols:
            if col in ("monitor", "mode"):
                continue
            if col == "overrides":
                cells.append(" ".join(f"`{_md(o)}`" for o in row["overrides"] if o not in shared))
            elif col == "error":
                text = " ".join(str(row.get("error") or "").split())
                cut = text[:MD_ERROR_CHARS] + ("…" if len(text) > MD_ERROR_CHARS else "")
                cells.append(_md(cut))
            else:
                cells.append(_md(_fmt(row.get(col), decimals=1 if col == "wall_time_s" else 4)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _csv_text(rows: list[dict[str, Any]], cols: list[str]) -> str:
    """The CSV document (header plus one line per row); missing values are empty cells."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        out = {c: ("" if row.get(c) is None else row.get(c)) for c in cols}
        out["overrides"] = shlex.join(row["overrides"])
        writer.writerow(out)
    return buf.getvalue()


def _shared_overrides(rows: list[dict[str, Any]]) -> list[str]:
    """Overrides that every job has (in the first job's order); none with fewer than two jobs."""
    if len(rows) < 2:
        return []
    common = set(rows[0]["overrides"]).intersection(*(r["overrides"] for r in rows[1:]))
    return [o for o in rows[0]["overrides"] if o in common]


def _job_number(job_dir: Path) -> int | None:
    """``hydra.job.num`` from the job's ``.hydra/hydra.yaml``; else the directory name if numeric."""
    try:
        hydra_cfg = yaml.safe_load((job_dir / ".hydra" / "hydra.yaml").read_text()) or {}
        num = hydra_cfg.get("hydra", {}).get("job", {}).get("num")
        if isinstance(num, int):
            return num
    except (OSError, yaml.YAMLError, AttributeError):
        pass
    return int(job_dir.name) if job_dir.name.isdigit() else None


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and move it into place."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _is_number(value: Any) -> bool:
    """A real number that is not NaN."""
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


def _fmt(value: Any, decimals: int = 4) -> str:
    """A table cell: floats rounded, None (a metric the run did not log) "n/a"."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{decimals}f}"
    return str(value)


def _md(text: str) -> str:
    """Escape the characters that would break a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")
