"""The report tool: a Markdown table and PNG plots from generated run directories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from vitrain.results.report import PLOTS, group_runs, read_curves, scan_runs, write_report
from vitrain.tools.report import main as cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_run(
    root: Path, name: str, overrides: list[str], acc: float, params: int, status="completed", **summary
) -> Path:
    """A run directory as Hydra and vitrain leave it, with a 3-epoch CSV log of ``train/loss`` and
    the monitored metric (``val/acc1`` unless ``summary`` names another monitor)."""
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
        **summary,
    }
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "csv").mkdir()
    monitor = summary["monitor"]["metric"]
    lines = [f"epoch,step,train/loss,{monitor}"]
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
    assert "4 training runs in 2 groups" in text  # the failed and the unfinished job are left out
    assert (
        f"`{sweep / '4'}` (status failed)" in text and f"`{sweep / '5'}` (no readable summary.json)" in text
    )
    assert "Shared overrides: `trainer.max_epochs=3`" in text
    assert "Best on `val/acc1` (the selection split): `model=t2t_vit_7` (0.9600)." in text  # a sweep's pick
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| `")}
    assert set(rows) == {"`model=vit_ti16`", "`model=t2t_vit_7`"}
    # mean ± sample std over the seeds: (0.9, 0.8) -> 0.85 ± 0.0707; (0.95, 0.97) -> 0.96 ± 0.0141
    # runs, distinct seeds, mean ± sample std over the seeds
    assert "| 2 | 2 | 0.8500 ± 0.0707 | 0.1500 | 5,000,000 | 200.0 | 10.0 |" in rows["`model=vit_ti16`"]
    assert "| 2 | 2 | 0.9600 ± 0.0141 | 0.0400 | 4,000,000 | 250.0 | 10.0 |" in rows["`model=t2t_vit_7`"]
    for name in PLOTS:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name


def test_curves_average_steps_within_an_epoch(sweep):
    curves = read_curves(sweep / "0" / "csv" / "metrics.csv")
    assert curves["train/loss"] == {0: 1.5, 1: 0.5, 2: -0.5}
    assert curves["val/acc1"][2] == pytest.approx(0.9)


def test_groups_ignore_only_the_seed(sweep):
    from vitrain.results.report import find_runs

    groups, shared = group_runs(find_runs([sweep]))
    assert [(g.label, len(g.runs)) for g in groups] == [("model=vit_ti16", 2), ("model=t2t_vit_7", 2)]
    epochs, values = groups[1].mean_curve("val/acc1")
    assert epochs == [0, 1, 2] and values[-1] == pytest.approx(0.96)


def test_run_names_and_restated_values_do_not_split_a_group(tmp_path):
    from vitrain.results.report import find_runs

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
    assert "no completed training runs" in capsys.readouterr().err


def mixed_runs(root: Path) -> Path:
    """What a user's logs/ holds after a while: two tasks with their own metrics, repeats that
    all used the default seed 42, a mode=test run, a run of 0 steps, long override labels."""
    long = [
        "data.root=/data/some/long/path/to/imagenet_subset_100",
        "optimizer.lr=0.0005",
        "model.net.drop_path_rate=0.1",
    ]
    for i in range(3):  # three repeats without seed=: every one used seed 42
        make_run(
            root,
            f"vit_{i}",
            ["model=vit_ti16", *long],
            0.80 + 0.01 * i,
            5_000_000,
            seed=42,
            task="ClassificationTask",
        )
    for seed in (1, 2):
        make_run(root, f"t2t_{seed}", ["model=t2t_vit_7", f"seed={seed}", *long], 0.9, 4_000_000, seed=seed,
                 task="ClassificationTask")  # fmt: skip
    other_data = ["data.root=/data/another/rather/long/path/to/a/dataset/folder_with_a_long_name", *long[1:]]
    make_run(root, "t2t_other", ["model=t2t_vit_7", "seed=1", *other_data], 0.7, 4_000_000, seed=1,
             task="ClassificationTask")  # fmt: skip
    mae = {"task": "MAETask", "monitor": {"metric": "val/loss", "mode": "min"}, "seed": 42}
    make_run(root, "mae", ["model=mae_vit_tiny"], 0.3, 3_000_000, best={"epoch": 2, "val/loss": 0.3}, **mae)
    make_run(root, "mae_long", ["model=mae_vit_tiny", "model.net.mask_ratio=0.5"], 0.4, 3_000_000,
             best={"epoch": 2, "val/loss": 0.4}, **mae)  # fmt: skip
    test = root / "test_only"  # mode=test of a checkpoint: evaluates, does not train
    (test / ".hydra").mkdir(parents=True)
    (test / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["mode=test", "ckpt_path=x.ckpt"]))
    (test / "summary.json").write_text(
        json.dumps({"status": "completed", "mode": "test", "metrics": {"test/acc1": 0.5}})
    )
    make_run(root, "no_steps", ["model=vit_ti16", "trainer.max_epochs=0"], 0.1, 5_000_000, global_step=0, seed=42,
             task="ClassificationTask")  # fmt: skip
    return root


def test_mixed_runs_one_table_per_task_distinct_seeds_and_left_out_runs(tmp_path):
    root = mixed_runs(tmp_path / "logs")
    runs, left_out = scan_runs([root])
    assert {p.name: why for p, why in left_out} == {
        "test_only": "mode=test: evaluates a checkpoint, did not train",
        "no_steps": "0 training steps",
    }
    text = write_report([root], tmp_path / "report").read_text()
    assert "8 training runs in 5 groups of 2 tasks, one table each." in text
    sections = {part.split("\n", 1)[0]: part for part in text.split("\n## ")[1:]}
    assert set(sections) == {"ClassificationTask", "MAETask"}
    classification, mae = sections["ClassificationTask"], sections["MAETask"]
    # each table holds its task's metrics only (no column of n/a from the other task)
    assert "val/acc1 (mean ± std)" in classification and "val/acc1" not in mae
    assert "val/loss (mean ± std)" in mae and "n/a" not in text
    rows = {
        line.split("|")[1].strip(): line.split("|")[2:4]
        for line in text.splitlines()
        if line.startswith("| `")
    }
    vit = "`model=vit_ti16 data.root=/data/some/long/path/to/imagenet_subset_100`"
    t2t = "`model=t2t_vit_7 data.root=/data/some/long/path/to/imagenet_subset_100`"
    assert [c.strip() for c in rows[vit]] == ["3", "1 (!)"]  # 3 runs, 1 distinct seed
    assert [c.strip() for c in rows[t2t]] == ["2", "2"]
    assert f"(!) {vit}: 3 runs but 1 distinct seed(s) (42)" in text
    # what all of a task's runs share is said once above its table, not in every label
    assert (
        "Shared by this task's runs: `optimizer.lr=0.0005` `model.net.drop_path_rate=0.1`" in classification
    )
    assert "`mode=test" not in text.split("Left out")[0]  # not a row


def test_long_legends_leave_the_panels_their_size(tmp_path):
    """Each panel's legend sits in a band of its own below it, as tall as its wrapped labels
    need: 8 more groups with long labels (which used to squeeze the panels into slivers) leave
    every panel taller than 60% of a panel without a legend, and no legend covers a panel."""
    from vitrain.results.report import PANEL, figures, find_runs

    root = mixed_runs(tmp_path / "logs")
    for i in range(8):
        folder = f"/data/a/rather/long/path/to/one/of/eight/datasets/number_{i:02d}/with/a/long/name"
        make_run(root, f"many_{i}", ["model=vit_ti16", f"data.root={folder}"], 0.5, 5_000_000,
                 task="ClassificationTask", seed=i)  # fmt: skip
    groups, _ = group_runs(find_runs([root]))
    for name, fig in figures(groups).items():
        fig.canvas.draw()
        panels = [ax for ax in fig.axes if ax.axison]
        legends = [leg.get_window_extent() for ax in fig.axes if (leg := ax.get_legend()) is not None]
        assert len(panels) == (4 if name == PLOTS[2] else 2) and len(legends) == len(panels), name
        for ax in panels:
            box = ax.get_window_extent()
            assert box.height / fig.dpi > 0.6 * PANEL[1], (name, ax.get_title())  # not a sliver
            assert not any(box.overlaps(legend) for legend in legends), (name, ax.get_title())
