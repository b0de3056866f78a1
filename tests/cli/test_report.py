"""The report tool: a Markdown table and PNG plots from generated run directories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from vitrain.report import PLOTS, cli, group_runs, read_curves, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_run(
    root: Path, name: str, overrides: list[str], acc: float, params: int, status="completed"
) -> Path:
    """A run directory as Hydra and vitrain leave it, with a 3-epoch CSV log."""
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    summary = {
        "status": status,
        "model": overrides[0].split("=")[1],
        "monitor": {"metric": "val/acc1", "mode": "max"},
        "best": {"epoch": 2, "val/acc1": acc, "val/loss": 1 - acc},
        "params": {"total": params, "trainable": params},
        "throughput": {"samples_per_s": 1000.0 / params * 1e6},
        "wall_time_s": 10.0,
    }
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "csv").mkdir()
    lines = ["epoch,step,train/loss,val/acc1"]
    for epoch in range(3):
        lines += [f"{epoch},{epoch * 2},{2.0 - epoch},", f"{epoch},{epoch * 2 + 1},{1.0 - epoch},"]
        lines.append(f"{epoch},{epoch * 2 + 1},,{acc * (epoch + 1) / 3}")
    (run / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")
    return run


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """Two models x 2 seeds, one failed job, one job still without a summary."""
    root = tmp_path / "sweep"
    common = "trainer.max_epochs=3"
    make_run(root, "0", ["model=vit_ti16", "seed=1", common], 0.90, 5_000_000)
    make_run(root, "1", ["model=vit_ti16", "seed=2", common], 0.80, 5_000_000)
    make_run(root, "2", ["model=t2t_vit_7", "seed=1", common], 0.95, 4_000_000)
    make_run(root, "3", ["model=t2t_vit_7", "seed=2", common], 0.97, 4_000_000)
    make_run(root, "4", ["model=t2t_vit_7", "seed=3", common], 0.0, 4_000_000, status="failed")
    (root / "5" / ".hydra").mkdir(parents=True)
    (root / "5" / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["model=vit_ti16", "seed=3"]))
    return root


def test_report_table_and_plots(sweep, tmp_path):
    out = tmp_path / "report"
    path = write_report([sweep], out, title="ViT vs T2T")
    text = path.read_text()
    assert text.startswith("# ViT vs T2T")
    assert "4 runs in 2 groups" in text  # the failed and the unfinished job are left out
    assert "Shared overrides: `trainer.max_epochs=3`" in text
    assert "Best on `val/acc1` (the selection split): `model=t2t_vit_7` (0.9600)." in text  # a sweep's pick
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| `")}
    assert set(rows) == {"`model=vit_ti16`", "`model=t2t_vit_7`"}
    # mean ± sample std over the seeds: (0.9, 0.8) -> 0.85 ± 0.0707; (0.95, 0.97) -> 0.96 ± 0.0141
    assert "| 2 | 0.8500 ± 0.0707 | 0.1500 | 5,000,000 | 200.0 | 10.0 |" in rows["`model=vit_ti16`"]
    assert "| 2 | 0.9600 ± 0.0141 | 0.0400 | 4,000,000 | 250.0 | 10.0 |" in rows["`model=t2t_vit_7`"]
    for name in PLOTS:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name


def test_curves_average_steps_within_an_epoch(sweep):
    curves = read_curves(sweep / "0" / "csv" / "metrics.csv")
    assert curves["train/loss"] == {0: 1.5, 1: 0.5, 2: -0.5}
    assert curves["val/acc1"][2] == pytest.approx(0.9)


def test_groups_ignore_only_the_seed(sweep):
    from vitrain.report import find_runs

    groups, shared = group_runs(find_runs([sweep]))
    assert [(g.label, len(g.runs)) for g in groups] == [("model=vit_ti16", 2), ("model=t2t_vit_7", 2)]
    epochs, values = groups[1].mean_curve("val/acc1")
    assert epochs == [0, 1, 2] and values[-1] == pytest.approx(0.96)


def test_run_names_and_restated_values_do_not_split_a_group(tmp_path):
    from vitrain.report import find_runs

    root = tmp_path / "runs"
    # seed 1 restates data.test_size=100, which every run's resolved config holds anyway
    make_run(root, "a", ["model=sam_tiny", "seed=1", "run_name=q1", "data.test_size=100"], 0.7, 3)
    make_run(root, "b", ["model=sam_tiny", "seed=2", "run_name=q2"], 0.6, 3)
    make_run(root, "c", ["model=sam_tiny", "seed=3", "run_name=q3", "data.test_size=50"], 0.5, 3)
    for name, size in (("a", 100), ("b", 100), ("c", 50)):
        (root / name / "resolved_config.yaml").write_text(yaml.safe_dump({"data": {"test_size": size}}))
    runs = find_runs([root])
    groups, _ = group_runs(runs[:2])
    assert [(g.label, len(g.runs)) for g in groups] == [("sam_tiny", 2)]  # all shared: the model names it
    # once a run holds another value, data.test_size is a setting again: three groups
    groups, _ = group_runs(runs)
    assert [g.label for g in groups] == ["data.test_size=100", "sam_tiny", "data.test_size=50"]


def test_cli_errors_name_the_directory(tmp_path, capsys):
    assert cli([str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 1
    assert "nope: no such directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli([str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 1
    assert "no completed runs" in capsys.readouterr().err
