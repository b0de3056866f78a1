"""Preemption under DDP (2 CPU processes): every rank stops at the same step, one checkpoint,
and ``resume=auto`` ends with the weights of the uninterrupted run."""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers import TINY_VIT, run_cli

# augmentation and drop path on: per-sample and per-batch seeding make DDP resumes exact too
RUN = [
    *TINY_VIT, "trainer=ddp_cpu", "data.image_size=16", "data.batch_size=16", "data.augment=true",
    "model.net.drop_path_rate=0.1", "trainer.max_epochs=2", "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=1", "callbacks.model_checkpoint.save_top_k=-1",
]  # fmt: skip


def signal_at(name: str, step: int, rank: int) -> list[str]:
    return [
        f"+callbacks.{name}._target_=tests.helpers.SignalAtStep",
        f"+callbacks.{name}.step={step}",
        f"+callbacks.{name}.rank={rank}",
    ]


def load(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_interrupted_at(run_dir, step: int) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["global_step"] == step
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["epoch000.ckpt", "last.ckpt"]
    assert load(run_dir / "checkpoints" / "last.ckpt")["global_step"] == step
    rank1 = (run_dir / "train_ddp_process_1.log").read_text()
    assert "Stopped by SIGTERM" in rank1 and "Traceback" not in rank1


@pytest.mark.slow
def test_signal_to_one_rank_stops_both_and_resume_matches_the_uninterrupted_run(tmp_path):
    straight, run = tmp_path / "straight", tmp_path / "run"
    assert run_cli(straight, *RUN, timeout=600).returncode == 0
    proc = run_cli(run, *RUN, *signal_at("stop", 6, rank=1), timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert_interrupted_at(run, 6)
    assert "Another rank received SIGTERM" in proc.stderr + (run / "train.log").read_text()
    proc = run_cli(run, *RUN, "resume=auto", timeout=600)
    assert proc.returncode == 0, proc.stderr
    a, b = load(run / "checkpoints" / "epoch001.ckpt"), load(straight / "checkpoints" / "epoch001.ckpt")
    assert a["global_step"] == b["global_step"] == 8
    for key in b["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=0, atol=0, msg=key)


@pytest.mark.slow
def test_ranks_signalled_at_different_steps_stop_at_the_first(tmp_path):
    run = tmp_path / "run"
    proc = run_cli(run, *RUN, *signal_at("stop0", 5, rank=0), *signal_at("stop1", 6, rank=1), timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert_interrupted_at(run, 5)
