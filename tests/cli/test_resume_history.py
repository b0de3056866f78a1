"""What a run already wrote survives resuming and re-launching: metrics.csv, summary.json, logs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger

from tests.helpers import TINY_VIT, run_train
from vitrain.callbacks import RunStats
from vitrain.loggers import CSVLogger
from vitrain.run.lifecycle import trim_csv_history

SMALL = [*TINY_VIT, "data.image_size=16", "data.batch_size=32", "trainer.limit_train_batches=3",
         "trainer.limit_val_batches=1", "logger=[csv,tensorboard]"]  # fmt: skip


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_resume_appends_history_and_a_finished_run_is_left_alone(tmp_path):
    run_dir = tmp_path / "run"
    assert run_train(run_dir, *SMALL, "trainer.max_epochs=2").returncode == 0
    metrics, summary = run_dir / "csv" / "metrics.csv", run_dir / "summary.json"
    first_rows, first_summary = rows(metrics), summary.read_text()
    first_events = set((run_dir / "tensorboard").glob("events.out.tfevents.*"))

    again = run_train(run_dir, *SMALL, "trainer.max_epochs=2")  # re-launch of a finished run
    assert again.returncode == 0 and "already holds a completed run" in again.stderr
    assert summary.read_text() == first_summary and rows(metrics) == first_rows

    longer = run_train(run_dir, *SMALL, "trainer.max_epochs=3")  # continue it for one more epoch
    assert longer.returncode == 0, longer.stderr
    all_rows = rows(metrics)
    assert [{k: r[k] for k in first_rows[0]} for r in all_rows[: len(first_rows)]] == first_rows
    val = [r for r in all_rows if r.get("val/acc1")]
    assert [int(r["epoch"]) for r in val] == [0, 1, 2]
    result = json.loads(summary.read_text())
    assert result["status"] == "completed" and result["global_step"] == 9
    assert result["resumed_from"].endswith("last.ckpt")
    best = max(val, key=lambda r: float(r["val/acc1"]))
    assert result["best"]["epoch"] == int(best["epoch"])  # over the whole run, not the last segment
    # one samples/s (the Throughput callback's), over every segment: the first run's 3 measured
    # batches (6 less 3 warm-up) travel through last.ckpt; the resumed epoch's 3 are all warm-up
    assert result["train_samples_per_s"] == round(result["throughput"]["samples_per_s"], 2) > 0
    assert result["throughput"]["measured_steps"] == 3
    events = set((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert first_events and first_events < events  # TensorBoard keeps the first segment's files, adds new
    history = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
    stats = next(v for k, v in history.items() if k.startswith("RunStats"))
    assert [h["epoch"] for h in stats["history"]] == [0, 1, 2]


def test_run_stats_travel_in_checkpoints():
    before = RunStats()
    before.history = [{"epoch": 0, "step": 3, "val/loss": 0.611}, {"epoch": 1, "step": 6, "val/loss": 0.7}]
    after = RunStats()
    after.load_state_dict(before.state_dict())
    after.history.append({"epoch": 2, "step": 9, "val/loss": 0.632})
    assert after.best("val/loss", "min")["epoch"] == 0
    assert after.fit_seconds >= 0.0


def test_csv_logger_appends_to_an_existing_file(tmp_path):
    first = CSVLogger(tmp_path, name="csv", version="")
    first.log_metrics({"a": 1.0}, step=1)
    first.save()
    second = CSVLogger(tmp_path, name="csv", version="")
    second.log_metrics({"a": 2.0}, step=2)
    second.log_metrics({"b": 3.0}, step=3)  # a new column rewrites the header once
    second.save()
    got = rows(tmp_path / "csv" / "metrics.csv")
    assert [(r["step"], r["a"], r.get("b")) for r in got] == [
        ("1", "1.0", ""),
        ("2", "2.0", ""),
        ("3", "", "3.0"),
    ]
    plain = LightningCSVLogger(tmp_path, name="csv", version="")  # Lightning's own deletes the history
    plain.log_metrics({"a": 4.0}, step=4)
    plain.save()
    assert len(rows(tmp_path / "csv" / "metrics.csv")) == 1


def test_trim_drops_rows_logged_after_the_resume_checkpoint(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,step,x\n0,3,1\n0,6,2\n1,7,3\n1,9,4\n")
    assert trim_csv_history(path, 6) == 2
    assert [r["step"] for r in rows(path)] == ["3", "6"]
    assert trim_csv_history(tmp_path / "none.csv", 6) == 0


def train_acc1_by_epoch(run_dir: Path) -> dict[int, float]:
    return {
        int(r["epoch"]): float(r["train/acc1"])
        for r in rows(run_dir / "csv" / "metrics.csv")
        if r.get("train/acc1")
    }


def test_train_accuracy_of_an_epoch_resumed_midway_covers_the_whole_epoch(tmp_path):
    # validation (and a checkpoint) every 2 of the 4 batches of an epoch; stopping at step 6
    # leaves last.ckpt in the middle of epoch 1. A constant lr: the schedule must not depend on
    # max_steps, so that the stopped run trains exactly as the straight one
    run = [*TINY_VIT, "data.image_size=16", "data.batch_size=16", "trainer.limit_train_batches=4",
           "trainer.limit_val_batches=1", "+trainer.val_check_interval=2", "trainer.max_epochs=2",
           "scheduler=constant"]  # fmt: skip
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert run_train(straight, *run).returncode == 0
    assert run_train(resumed, *run, "trainer.max_steps=6").returncode == 0
    proc = run_train(resumed, *run)  # resume=auto: the rest of epoch 1
    assert proc.returncode == 0, proc.stderr
    assert "resume=auto: continuing from" in proc.stderr
    # the epoch's accuracy counts its first 2 batches (before the stop) too, and only its own
    assert set(train_acc1_by_epoch(straight)) == {0, 1}  # logged once per epoch
    assert train_acc1_by_epoch(resumed) == train_acc1_by_epoch(straight)
