"""Sweeps: the sweep table, multiruns and Optuna through the CLI, debug configs, the SLURM launcher."""

from __future__ import annotations

import csv
import json
import math
import subprocess
from pathlib import Path

import pytest
import yaml
from hydra.utils import instantiate
from lightning.pytorch.profilers import SimpleProfiler

from tests.helpers import QUIET, TINY_VIT, compose_train, launch_cli
from vitrain.results.sweep_table import CSV_NAME, MD_NAME, write_sweep_table
from vitrain.tools.sweep import main as cli

TINY_RUN = [
    *TINY_VIT,
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "data.image_size=16",
    "logger=csv",
]


def run_multirun(sweep_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    """Run ``python train.py -m`` (its entry point, in this process) with its sweep directory at
    ``sweep_dir``: Hydra's basic launcher and the Optuna sweeper run the jobs one after another."""
    return launch_cli(
        "-m",
        f"hydra.sweep.dir={sweep_dir}",
        f"paths.log_dir={sweep_dir.parent / 'logs'}",
        f"paths.data_dir={sweep_dir.parent / 'data'}",
        *QUIET,
        *overrides,
    )


def read_table(sweep_dir: Path) -> list[dict[str, str]]:
    """The rows of ``sweep_summary.csv``."""
    with open(sweep_dir / CSV_NAME, newline="") as f:
        return list(csv.DictReader(f))


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The numbered job directories of a sweep."""
    return sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def make_job(sweep_dir: Path, num: int, overrides: list[str], summary: dict | None) -> None:
    """A job directory as Hydra and ``vitrain.run`` leave it (``summary`` None: none written)."""
    job = sweep_dir / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"job": {"num": num}}}))
    if summary is not None:
        (job / "summary.json").write_text(json.dumps(summary))


def test_table_writer_on_generated_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    monitor = {"metric": "val/acc1", "mode": "max"}
    common = "trainer.max_epochs=3"
    make_job(sweep, 0, ["optimizer.lr=0.001", common], {
        "status": "completed", "monitor": monitor, "wall_time_s": 12.5,
        "best": {"epoch": 1, "step": 8, "val/loss": 0.5, "val/acc1": 0.9, "val/acc5": 1.0},
        "last": {"epoch": 2, "step": 12, "val/loss": 0.6, "val/acc1": 0.85, "val/acc5": 1.0},
    })  # fmt: skip
    make_job(sweep, 1, ["optimizer.lr=0.1", common], {"status": "failed", "error": "lr | too\nhigh"})
    make_job(sweep, 2, ["optimizer.lr=0.01", common], None)
    make_job(sweep, 10, ["optimizer.lr=0.0001", common], {
        "status": "completed", "monitor": monitor, "wall_time_s": 3.0,
        "best": {"epoch": 0, "step": 4, "val/loss": 0.7, "val/acc1": 0.95},
        "last": {"epoch": 0, "step": 4, "val/loss": 0.7, "val/acc1": 0.95},
    })  # fmt: skip

    rows = write_sweep_table(sweep)
    assert [r["job"] for r in rows] == [0, 1, 2, 10]  # numeric order, not "10" before "2"

    table = read_table(sweep)
    assert [r["job"] for r in table] == ["0", "1", "2", "10"]
    assert [r["status"] for r in table] == ["completed", "failed", "missing", "completed"]
    done, failed, missing, other = table
    assert done["overrides"] == f"optimizer.lr=0.001 {common}"
    assert done["monitor"] == "val/acc1" and done["mode"] == "max"
    assert float(done["best"]) == 0.9 and float(done["last"]) == 0.85 and done["best_epoch"] == "1"
    assert float(done["val/loss"]) == 0.5 and float(done["val/acc5"]) == 1.0
    assert float(done["wall_time_s"]) == 12.5 and done["error"] == ""
    assert other["val/acc5"] == ""  # the union of val/* metrics; absent ones are empty
    assert failed["error"] == "lr | too\nhigh" and failed["best"] == ""
    assert missing["best"] == "" and missing["error"] == ""

    md = (sweep / MD_NAME).read_text()
    assert "4 jobs: 2 completed, 1 failed, 1 missing" in md
    assert "Monitored metric: val/acc1 (max)" in md
    assert f"Overrides shared by every job: `{common}`" in md
    assert "Best job: 10 (val/acc1=0.9500)" in md
    lines = [line for line in md.splitlines() if line.startswith("|")]
    assert lines[0].startswith("| job | subdir | status | overrides (differing) | best | last |")
    assert len(lines) == 2 + 4
    assert lines[2].startswith("| 0 | 0 | completed | `optimizer.lr=0.001` | 0.9000 | 0.8500 | 1 |")
    assert common not in lines[2]
    assert r"lr \| too high" in lines[3]  # pipes escaped, newlines folded: the row stays one row
    assert all(line.count(" | ") == lines[0].count(" | ") for line in lines[2:])

    (sweep / CSV_NAME).unlink()
    cli([str(sweep)])  # python -m vitrain.sweep SWEEP_DIR rewrites the table by hand
    assert len(read_table(sweep)) == 4


def test_table_of_an_empty_sweep_dir(tmp_path):
    assert write_sweep_table(tmp_path) == []
    assert read_table(tmp_path) == []
    assert "0 jobs" in (tmp_path / MD_NAME).read_text()


@pytest.mark.slow
def test_grid_sweep_writes_a_job_dir_per_job_and_the_table(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_multirun(sweep, *TINY_RUN, "data.batch_size=32", "optimizer.lr=1e-3,3e-4")
    assert proc.returncode == 0, proc.stderr
    jobs = job_dirs(sweep)
    assert [j.name for j in jobs] == ["0", "1"]
    for job in jobs:
        summary = json.loads((job / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["best"]["step"] == 2

    table = read_table(sweep)
    assert [r["status"] for r in table] == ["completed", "completed"]
    assert "optimizer.lr=0.001" in table[0]["overrides"] and "optimizer.lr=0.0003" in table[1]["overrides"]
    assert table[0]["overrides"] != table[1]["overrides"]
    assert all(0.0 <= float(r["best"]) <= 1.0 and float(r["val/loss"]) > 0 for r in table)
    assert f"Sweep table of 2 jobs: {sweep / MD_NAME}" in proc.stdout + proc.stderr  # Hydra's log


@pytest.mark.slow
def test_a_failed_job_does_not_stop_the_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_multirun(sweep, *TINY_RUN, "data.batch_size=16,0")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "data.batch_size=0: must be a positive integer" in proc.stderr

    failed = json.loads((sweep / "1" / "summary.json").read_text())
    assert failed["status"] == "failed" and "data.batch_size=0" in failed["error"]
    table = read_table(sweep)
    assert [(r["job"], r["status"]) for r in table] == [("0", "completed"), ("1", "failed")]
    assert "data.batch_size=0: must be a positive integer" in table[1]["error"]
    assert table[1]["best"] == "" and float(table[0]["best"]) >= 0.0
    md = (sweep / MD_NAME).read_text()
    assert "2 jobs: 1 completed, 1 failed" in md and "| 1 | 1 | failed | `data.batch_size=0` |" in md


@pytest.mark.slow
def test_a_crashing_job_is_recorded_and_the_sweep_goes_on(tmp_path):
    # A negative learning rate fails inside torch (a crash, not a user mistake): the job is
    # recorded as failed with the error, and the next job still runs.
    sweep = tmp_path / "sweep"
    proc = run_multirun(sweep, *TINY_RUN, "data.batch_size=32", "optimizer.lr=-1,1e-3")
    assert proc.returncode == 0, proc.stderr
    table = read_table(sweep)
    assert [r["job"] for r in table] == ["0", "1"]
    assert table[0]["status"] == "failed" and "Invalid learning rate" in table[0]["error"]
    assert table[1]["status"] == "completed"


@pytest.mark.slow
def test_optuna_search(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_multirun(
        sweep, *TINY_RUN, "data.batch_size=32", "hparams_search=vit_optuna",
        "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=1", "hydra.sweeper.sampler.n_startup_trials=2",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert [j.name for j in job_dirs(sweep)] == ["0", "1", "2"]

    table = read_table(sweep)
    assert [r["status"] for r in table] == ["completed"] * 3
    params = ("optimizer.lr=", "optimizer.weight_decay=", "model.net.drop_path_rate=")
    for row in table:
        assert all(p in row["overrides"] for p in params), row["overrides"]
    assert len({r["overrides"] for r in table}) == 3

    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(results["best_params"]) == {
        "optimizer.lr",
        "optimizer.weight_decay",
        "model.net.drop_path_rate",
    }
    best = max(float(r["best"]) for r in table)  # the objective is the best val/acc1 of each trial
    assert math.isclose(results["best_value"], best, rel_tol=1e-6)


def test_slurm_launcher_composes_without_slurm(tmp_path):
    cfg = compose_train(
        "hydra/launcher=slurm", "trainer=gpu", "trainer.devices=4", "trainer.num_nodes=2",
        output_dir=str(tmp_path / "run"),
    )  # fmt: skip
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher.tasks_per_node == launcher.gpus_per_node == cfg.trainer.devices == 4
    assert launcher.nodes == cfg.trainer.num_nodes == 2
    assert launcher.partition is None and launcher.signal_delay_s == 120
    assert launcher.submitit_folder.startswith(str(cfg.hydra.sweep.dir))


@pytest.mark.parametrize(
    ("option", "check"),
    [
        ("overfit", lambda t: t.overfit_batches == 2 and t.limit_train_batches == 2 and t.max_epochs > 2),
        ("profiler", lambda t: isinstance(t.profiler, SimpleProfiler) and t.max_epochs == 1),
    ],
)
def test_debug_options_build_a_trainer(tmp_path, option, check):
    cfg = compose_train(f"debug={option}", "trainer=cpu", *QUIET, output_dir=str(tmp_path / "run"))
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert check(trainer)


def test_multirun_with_the_default_sweep_dir(tmp_path, monkeypatch):
    """``python train.py -m`` without ``hydra.sweep.dir``: the sweep dir goes under paths.log_dir.

    Regression: the default sweep dir resolved ``${hydra:runtime.cwd}`` before Hydra had set its
    config, so every plain multirun stopped with "HydraConfig was not set".
    """
    logs = tmp_path / "logs"
    monkeypatch.chdir(tmp_path)
    result = launch_cli("-m", f"paths.log_dir={logs}", "dry_run=true", "seed=1,2")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("params: total=") == 2
    (sweep,) = (logs / "train" / "multiruns").iterdir()
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    assert not (tmp_path / "multirun").exists()
