"""Scale: DDP on CPU equals one process, sweeps with DDP, precision, compile, batch rules."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tests.helpers import QUIET, ROOT, TINY_VIT, compose_train, run_cli, run_train
from vitrain.data.base import EpochSampler
from vitrain.errors import UserError
from vitrain.models import create_vit
from vitrain.run.scale import derive_accumulation, scaled_lr, world_size

# no augmentation or drop path: two runs differ only in how the global batch is split
DETERMINISTIC = [
    *TINY_VIT, "data.image_size=16", "data.augment=false", "model.net.drop_path_rate=0.0",
    "trainer.max_epochs=2", "trainer.limit_train_batches=4", "callbacks.model_checkpoint.save_top_k=-1",
]  # fmt: skip


def load(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_accumulation_and_lr_scaling_arithmetic():
    assert derive_accumulation(64, 8, 4096, 1) == 8
    assert derive_accumulation(64, 8, None, 3) == 3
    with pytest.raises(UserError, match="global_batch_size=1000 is not a multiple of .* 64 x 8 = 512"):
        derive_accumulation(64, 8, 1000, 1)
    assert scaled_lr(1.5e-4, 4096) == pytest.approx(2.4e-3)  # MAE pretraining
    assert scaled_lr(5e-4, 1024) == pytest.approx(2e-3)


def test_world_size_from_trainer_config(tmp_path):
    cfg = compose_train("trainer=ddp_cpu", "trainer.num_nodes=3", output_dir=str(tmp_path))
    assert world_size(cfg.trainer) == 6
    assert world_size(compose_train(output_dir=str(tmp_path)).trainer) == 1


def test_global_batch_sets_accumulation_and_lr(tmp_path):
    proc = run_train(
        tmp_path / "run", "dry_run=true", "trainer=ddp_cpu", "data.batch_size=16", "global_batch_size=128",
        "base_lr=1e-3", "hydra.verbose=vitrain",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Global batch 128 = 16 per device x 2 processes x 4 accumulation; lr 0.0005" in proc.stderr


def test_sampler_shards_cover_the_epoch_once():
    shards = [EpochSampler(10, seed=3, rank=r, world=3, even=False) for r in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(10))  # evaluation: every sample once
    train = [EpochSampler(10, seed=3, rank=r, world=3) for r in range(3)]
    assert [len(list(s)) for s in train] == [3, 3, 3] == [len(s) for s in train]
    single = list(EpochSampler(10, seed=3, world=1))
    step0 = {next(iter(s)) for s in train}
    assert step0 == set(single[:3])  # one step of 3 ranks = the first 3 samples of one process


@pytest.mark.slow
@pytest.mark.xdist_group("ddp")  # DDP ranks of two tests must not meet on one port
def test_two_process_ddp_matches_one_process(tmp_path):
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    proc = run_cli(ddp, *DETERMINISTIC, "trainer=ddp_cpu", "data.batch_size=16", timeout=600)
    assert proc.returncode == 0, proc.stderr
    proc = run_train(single, *DETERMINISTIC, "trainer=cpu", "data.batch_size=32")
    assert proc.returncode == 0, proc.stderr
    a, b = json.loads((ddp / "summary.json").read_text()), json.loads((single / "summary.json").read_text())
    assert a["global_step"] == b["global_step"] == 8
    assert a["last"]["val/loss"] == pytest.approx(b["last"]["val/loss"], rel=1e-4)
    assert a["last"]["val/acc1"] == pytest.approx(b["last"]["val/acc1"], abs=1 / 359 + 1e-9)
    # the held-out test split: every image once across the two ranks
    assert a["test"]["test/acc1"] == pytest.approx(b["test"]["test/acc1"], abs=1 / 270 + 1e-9)
    wa = load(ddp / "checkpoints" / "last.ckpt")["state_dict"]
    wb = load(single / "checkpoints" / "last.ckpt")["state_dict"]
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-4, atol=1e-5, msg=key)
    # one run: one directory, one summary, checkpoints written once, one resolved config
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp", "single"]
    assert sorted(p.name for p in (ddp / "checkpoints").iterdir()) == [
        "epoch000.ckpt",
        "epoch001.ckpt",
        "last.ckpt",
    ]
    assert (ddp / "train_ddp_process_1.log").exists()  # rank 1 joined this run directory


@pytest.mark.slow
@pytest.mark.xdist_group("ddp")
def test_multirun_with_ddp_cpu_gives_one_directory_per_job(tmp_path):
    """Also: frozen parameters (model.freeze) and LoRA adapters (model.lora) under DDP without
    find_unused_parameters (frozen before the strategy wraps the module, so DDP never waits for
    their gradients)."""
    sweep = tmp_path / "sweep"
    args = [
        sys.executable, str(ROOT / "train.py"), "-m", f"hydra.sweep.dir={sweep}", f"paths.log_dir={tmp_path / 'logs'}",
        "logger=csv", *QUIET, *DETERMINISTIC, "trainer=ddp_cpu", "trainer.max_epochs=1", "model.lora.r=0,4",
        "model.freeze=[blocks.0]",
    ]  # fmt: skip
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs == ["0", "1"]
    for job in jobs:
        summary = json.loads((sweep / job / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["global_step"] == 4
        assert (sweep / job / "train_ddp_process_1.log").exists()
        assert summary["params"]["trainable"] < summary["params"]["total"]
    # same seed: the frozen block is still the initial one in both jobs; job 1 trains adapters
    # (its blocks.1 weights stay the initial ones too), job 0 trains blocks.1 itself
    a, b = (load(sweep / job / "checkpoints" / "last.ckpt")["state_dict"] for job in jobs)
    assert a["net.blocks.0.attn.qkv.weight"].equal(b["net.blocks.0.attn.qkv.weight"])
    assert not a["net.blocks.1.attn.qkv.weight"].equal(b["net.blocks.1.attn.qkv.weight"])
    assert (
        "net.blocks.1.attn.qkv.lora_B.default.weight" in b
        and b["net.blocks.1.attn.qkv.lora_B.default.weight"].any()
    )
    lrs = {json.loads((sweep / j / "summary.json").read_text())["config"] for j in jobs}
    assert len(lrs) == 2
    assert not (tmp_path / "logs").exists()  # no rank started a sweep of its own
    assert proc.stdout.count("Launching 2 jobs locally") + proc.stderr.count("Launching 2 jobs locally") == 1


def test_bf16_mixed_on_cpu_and_16_mixed_composes(tmp_path):
    proc = run_train(tmp_path / "run", *TINY_VIT, "data.image_size=16", "trainer.max_epochs=1",
                   "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.precision=bf16-mixed")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["global_step"] == 2
    cfg = compose_train("trainer=gpu", "trainer.precision=16-mixed", output_dir=str(tmp_path))
    assert cfg.trainer.precision == "16-mixed"
    for option in ("ddp", "fsdp"):
        assert compose_train(f"trainer={option}", output_dir=str(tmp_path)).trainer.precision == "bf16-mixed"


def test_activation_checkpointing_keeps_gradients():
    torch.manual_seed(0)
    net = create_vit(
        "vit_tiny_patch16_224", embed_dim=32, depth=2, num_heads=2, img_size=32, drop_path_rate=0.0
    )
    x = torch.randn(2, 3, 32, 32)
    net(x).sum().backward()
    plain = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    net.set_grad_checkpointing(True)
    net(x).sum().backward()
    for g, p in zip(plain, net.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad)


@pytest.mark.slow
def test_compile_smoke(tmp_path):
    proc = run_train(tmp_path / "run", *TINY_VIT, "data.image_size=16", "trainer.max_epochs=1", "compile=true",
                   "trainer.limit_train_batches=2", "trainer.limit_val_batches=1")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    ckpt = load(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert not any("_orig_mod." in k for k in ckpt["state_dict"])  # compiled in place: plain names
    proc = run_train(tmp_path / "export", *TINY_VIT, "data.image_size=16", "mode=export",
                   f"ckpt_path={tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
