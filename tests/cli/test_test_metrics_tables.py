"""The sweep table and the report show held-out test metrics beside the validation ones."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from vitrain.results.report import write_report
from vitrain.results.sweep_table import columns, read_job


def make_job(root: Path, name: str, overrides: list[str], val: float, test: float | None) -> Path:
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    summary = {
        "status": "completed",
        "monitor": {"metric": "val/acc1", "mode": "max"},
        "best": {"epoch": 1, "val/acc1": val, "val/loss": 1 - val},
        "last": {"epoch": 1, "val/acc1": val},
        "test": None if test is None else {"checkpoint": "x.ckpt", "test/acc1": test, "test/loss": 1 - test},
        "params": {"total": 10, "trainable": 10},
        "wall_time_s": 1.0,
    }
    (job / "summary.json").write_text(json.dumps(summary))
    return job


def test_sweep_rows_and_columns_carry_test_metrics(tmp_path):
    with_test = make_job(tmp_path, "0", ["seed=1"], 0.9, 0.85)
    without = make_job(tmp_path, "1", ["seed=2"], 0.8, None)
    rows = [read_job(with_test, tmp_path), read_job(without, tmp_path)]
    assert rows[0]["test/acc1"] == 0.85 and "test/acc1" not in rows[1]
    cols = columns(rows)
    assert (
        cols.index("val/loss") < cols.index("test/acc1") < cols.index("test/loss") < cols.index("wall_time_s")
    )


def test_report_shows_test_metric_mean_and_std(tmp_path):
    sweep = tmp_path / "sweep"
    make_job(sweep, "0", ["model=a", "seed=1"], 0.90, 0.80)
    make_job(sweep, "1", ["model=a", "seed=2"], 0.80, 0.90)
    text = write_report([sweep], tmp_path / "out").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| run"))
    assert "val/acc1 (mean ± std) | test/acc1 (mean ± std) |" in header and "test/loss" in header
    row = next(line for line in text.splitlines() if line.startswith("| `"))
    assert "| 0.8500 ± 0.0707 | 0.8500 ± 0.0707 |" in row
    assert "held-out test split" in text
