"""Run lifecycle: exact resume, preemption, EMA, eval / export / predict, bad checkpoints."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file

from tests.helpers import QUIET, ROOT, TINY_VIT, run_train, write_image
from vitrain.callbacks import AtomicCheckpointIO
from vitrain.checkpoints import net_state_dict

pytestmark = pytest.mark.xdist_group("lifecycle")  # one worker builds the module-scoped full_run

SMALL = [*TINY_VIT, "data.image_size=16", "data.batch_size=32", "trainer.limit_val_batches=2"]
EVERY_EPOCH = ["callbacks.model_checkpoint.save_top_k=-1"]


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def load(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    """4 epochs x 4 steps with EMA, a checkpoint every epoch."""
    run_dir = tmp_path_factory.mktemp("full") / "run"
    proc = run_train(
        run_dir,
        *SMALL,
        *EVERY_EPOCH,
        "trainer.max_epochs=4",
        "trainer.limit_train_batches=4",
        "callbacks=ema",
    )
    assert proc.returncode == 0, proc.stderr
    return run_dir


@pytest.mark.slow
def test_resume_from_epoch_checkpoint_is_exact(full_run, tmp_path):
    middle = full_run / "checkpoints" / "epoch001.ckpt"
    assert load(middle)["global_step"] == 8
    run_dir = tmp_path / "resumed"
    proc = run_train(
        run_dir, *SMALL, *EVERY_EPOCH, "trainer.max_epochs=4", "trainer.limit_train_batches=4",
        "callbacks=ema", f"ckpt_path={middle}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    resumed, full = summary(run_dir), summary(full_run)
    assert resumed["resumed_from"] == str(middle) and resumed["global_step"] == full["global_step"] == 16
    assert resumed["last"] == full["last"]  # identical validation metrics
    a, b = load(run_dir / "checkpoints" / "last.ckpt"), load(full_run / "checkpoints" / "last.ckpt")
    assert_same_state(a["state_dict"], b["state_dict"])  # EMA weights
    assert_same_state(a["current_model_state"], b["current_model_state"])  # live weights
    assert a["lr_schedulers"][0]["last_epoch"] == b["lr_schedulers"][0]["last_epoch"] == 16
    assert_same_state(
        a["optimizer_states"][0]["state"][0], b["optimizer_states"][0]["state"][0]
    )  # optimizer moments


def test_ema_weights_are_validated_saved_and_exported(full_run, tmp_path):
    ckpt = load(full_run / "checkpoints" / "last.ckpt")
    ema, live = ckpt["state_dict"], ckpt["current_model_state"]
    assert not torch.equal(ema["net.blocks.0.attn.qkv.weight"], live["net.blocks.0.attn.qkv.weight"])
    assert int(ckpt["averaging_state"]["n_averaged"]) == 16
    # eval of the checkpoint uses the averaged weights and reproduces the last validation
    proc = run_train(
        tmp_path / "eval", *SMALL, "mode=eval", f"ckpt_path={full_run / 'checkpoints' / 'last.ckpt'}"
    )
    assert proc.returncode == 0, proc.stderr
    evaluated, trained = summary(tmp_path / "eval"), summary(full_run)
    assert evaluated["mode"] == "eval"
    assert evaluated["metrics"]["val/acc1"] == pytest.approx(trained["last"]["val/acc1"], abs=1e-6)
    assert evaluated["metrics"]["val/loss"] == pytest.approx(trained["last"]["val/loss"], rel=1e-5)


def test_eval_reproduces_best_metric(full_run, tmp_path):
    trained = summary(full_run)
    best = Path(trained["checkpoints"]["best"])
    proc = run_train(tmp_path / "eval", *SMALL, "mode=eval", f"ckpt_path={best}")
    assert proc.returncode == 0, proc.stderr
    assert summary(tmp_path / "eval")["metrics"]["val/acc1"] == pytest.approx(
        trained["best"]["val/acc1"], abs=1e-6
    )


def test_export_round_trips_through_plain_timm(full_run, tmp_path):
    ckpt_path = full_run / "checkpoints" / "last.ckpt"
    proc = run_train(tmp_path / "export", *SMALL, "mode=export", f"ckpt_path={ckpt_path}")
    assert proc.returncode == 0, proc.stderr
    assert summary(tmp_path / "export") == {
        "status": "completed", "mode": "export", "checkpoint": str(ckpt_path),
        "export_dir": str(tmp_path / "export" / "export"),
    }  # fmt: skip
    out = tmp_path / "export" / "export"
    config = json.loads((out / "config.json").read_text())
    assert config["name"] == "vit_tiny_patch16_224" and config["class_names"] == [str(i) for i in range(10)]
    net = timm.create_model(config["name"], **config["kwargs"])
    net.load_state_dict(load_file(out / "model.safetensors"))  # strict: every key present
    expected = net_state_dict(load(ckpt_path))  # the EMA weights
    assert_same_state(net.state_dict(), expected)
    net.eval()
    assert net(torch.randn(2, 1, 16, 16)).shape == (2, 10)


def test_predict_writes_top5_with_class_names(tmp_path, image_tree):
    train_dir = tmp_path / "train"
    common = [
        *TINY_VIT,
        "data=imagenet",
        f"data.root={image_tree}",
        "data.num_classes=3",
        "data.image_size=32",
    ]
    proc = run_train(train_dir, *common, "trainer.max_epochs=1", "data.batch_size=4")
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "to_predict"
    names = ["a.jpg", "b.png", "c.png", "sub/d.jpg", "sub/e.png"]
    for i, (name, mode) in enumerate(zip(names, ["RGB", "L", "RGBA", "L", "RGB"], strict=True)):
        write_image(folder / name, mode, seed=i)
    proc = run_train(
        tmp_path / "predict", *common, "mode=predict", f"ckpt_path={train_dir / 'checkpoints' / 'last.ckpt'}",
        f"data.predict_dir={folder}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    record = summary(tmp_path / "predict")
    assert record["mode"] == "predict" and record["status"] == "completed" and record["files"] == len(names)
    with open(tmp_path / "predict" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert [str(Path(r["file"]).relative_to(folder)) for r in rows] == names
    for row in rows:
        assert {row["class_1"], row["class_2"], row["class_3"]} == {"cat", "dog", "fox"}
        probs = [float(row[f"prob_{k}"]) for k in (1, 2, 3)]
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_missing_or_corrupt_checkpoint(tmp_path, mode):
    missing = tmp_path / "gone.ckpt"
    proc = run_train(tmp_path / "a", *SMALL, f"mode={mode}", f"ckpt_path={missing}")
    assert proc.returncode == 1 and f"ckpt_path={missing}: no such checkpoint file" in proc.stderr
    assert "Traceback" not in proc.stderr
    corrupt = tmp_path / "bad.ckpt"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    proc = run_train(tmp_path / "b", *SMALL, f"mode={mode}", f"ckpt_path={corrupt}")
    assert proc.returncode == 1 and f"ckpt_path={corrupt}: not a readable checkpoint" in proc.stderr
    assert "Traceback" not in proc.stderr


def start_training(run_dir: Path, env: dict, *overrides: str) -> subprocess.Popen:
    args = [sys.executable, str(ROOT / "train.py"), f"hydra.run.dir={run_dir}", "logger=csv", *QUIET, *SMALL]
    args += [*EVERY_EPOCH, *overrides]
    return subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.slow
@pytest.mark.xdist_group("signals")  # not with the module's full_run group: the longest test on its own
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_saves_checkpoint_and_resume_auto_continues(tmp_path, signum):
    run_dir = tmp_path / "run"
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "scontrol").write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/scontrol_args\n')
    (fake_bin / "scontrol").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242"}
    # no augmentation or drop path: the only randomness left is the data order
    overrides = [
        "trainer.max_epochs=16", "trainer.limit_train_batches=8", "data.augment=false",
        "model.net.drop_path_rate=0.0",
    ]  # fmt: skip
    proc = start_training(run_dir, env, *overrides)
    first = run_dir / "checkpoints" / "epoch000.ckpt"
    deadline = time.time() + 120
    while not first.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert first.exists(), proc.communicate()[1]
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    interrupted = summary(run_dir)
    assert interrupted["status"] == "interrupted" and 8 <= interrupted["global_step"] < 128
    last = load(run_dir / "checkpoints" / "last.ckpt")
    assert last["global_step"] == interrupted["global_step"]
    requeued = (tmp_path / "scontrol_args").read_text().split() if signum == signal.SIGUSR1 else None
    assert requeued in (None, ["requeue", "4242"])

    proc = run_train(run_dir, *SMALL, *EVERY_EPOCH, *overrides, "resume=auto")
    assert proc.returncode == 0, proc.stderr
    resumed = summary(run_dir)
    assert resumed["status"] == "completed" and resumed["global_step"] == 128
    assert resumed["resumed_from"] == str(run_dir / "checkpoints" / "last.ckpt")
    if signum == signal.SIGTERM:  # the mid-epoch resume skipped exactly the batches already seen
        straight = tmp_path / "straight"
        assert run_train(straight, *SMALL, *EVERY_EPOCH, *overrides).returncode == 0
        a, b = load(run_dir / "checkpoints" / "last.ckpt"), load(straight / "checkpoints" / "last.ckpt")
        assert_same_state(a["state_dict"], b["state_dict"])


def test_resume_auto_starts_fresh_without_checkpoints(tmp_path):
    proc = run_train(
        tmp_path / "run", *SMALL, "trainer.max_epochs=1", "trainer.limit_train_batches=2", "resume=auto"
    )
    assert proc.returncode == 0, proc.stderr
    assert summary(tmp_path / "run")["resumed_from"] is None


def test_atomic_checkpoint_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, target)
    assert load(target) == {"step": 1}

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"step": 2}, target)
    monkeypatch.undo()
    assert load(target) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temp file left behind
