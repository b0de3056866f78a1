"""One clear message (exit 1, a failed summary.json) for user mistakes; never a silent wrong run."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

import vitrain.run as vr
from tests.helpers import QUIET, TINY_VIT, compose_train
from vitrain.checkpoints import export_network, load_task_weights
from vitrain.cli import config_groups, explain
from vitrain.errors import UserError
from vitrain.models.sizes import check_image_size, covers_input, nearest_valid, patch_stages
from vitrain.models.t2t_vit import SOFT_SPLITS
from vitrain.tasks.detection import DetectionTask

TINY = [*TINY_VIT, *QUIET, "logger=csv", "data.image_size=16", "trainer.max_epochs=1",
        "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"]  # fmt: skip


def run_main(tmp_path: Path, *overrides: str):
    """``vitrain.run.main`` in this process, as ``train.py`` would call it; returns (exit, summary)."""
    cfg = compose_train(*TINY, *overrides, output_dir=str(tmp_path))
    code = 0
    try:
        vr.main(cfg)
    except SystemExit as stop:
        code = stop.code
    summary = json.loads((tmp_path / "summary.json").read_text())
    return code, summary


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed=abc", "seed='abc': must be an integer"),
        ("data.image_size=30", "data.image_size=30 (model.net.img_size) does not fit the patch size 16"),
        ("trainer.devices=64", "trainer.devices=64 starts 64 CPU processes"),
        ("optimizer.lr=-1", "Invalid learning rate: -1"),
        ("model.freeze=[decoder.*]", "model.freeze: 'decoder.*' matches no parameter. Names are relative to the "
         "network, e.g. 'blocks.0.*'; its top-level names: cls_token, pos_embed, patch_embed, blocks, norm, head."),
        ("model.freeze=[blocks,cls_token,pos_embed,patch_embed,norm,head]", "leaves nothing to train"),
        ("model.lora.r=2 model.lora.target_modules=[qkvv]", "model.lora.target_modules=['qkvv']: Target modules"),
        ("model.lora.r=2 +model.lora.rank=4", "model.lora.rank: no such setting"),
    ],
)  # fmt: skip
def test_user_mistake_is_one_message_and_a_failed_summary(tmp_path, override, message, caplog):
    code, summary = run_main(tmp_path, *override.split())
    assert code == 1
    assert summary["status"] == "failed" and message in summary["error"]
    assert message in caplog.text and "Traceback" not in caplog.text


def test_image_size_check_names_the_nearest_valid_sizes():
    with pytest.raises(UserError, match=r"data.image_size=16 or data.image_size=32"):
        check_image_size(30, patch_stages(16), "the patch size 16 of vit")
    check_image_size((32, 48), patch_stages(16), "vit")  # both sides multiples: fine
    assert covers_input(224, SOFT_SPLITS) and not covers_input(30, SOFT_SPLITS)
    assert nearest_valid(30, SOFT_SPLITS) == [29, 31]
    with pytest.raises(UserError, match="soft splits"):
        check_image_size(30, SOFT_SPLITS, "the soft splits of t2t_vit_7")


def test_training_set_smaller_than_one_batch_stops_before_training(tmp_path, image_tree):
    code, summary = run_main(
        tmp_path, "data=imagenet", f"data.root={image_tree}", "data.num_classes=3", "data.batch_size=128"
    )
    assert code == 1 and summary["status"] == "failed"
    assert (
        "the training split has 24 samples" in summary["error"] and "data.batch_size=128" in summary["error"]
    )
    assert not (tmp_path / "checkpoints").exists()


def test_a_crash_leaves_a_failed_summary(tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(vr, "fit", crash)
    cfg = compose_train(*TINY, output_dir=str(tmp_path))
    with pytest.raises(RuntimeError, match="simulated"):
        vr.main(cfg)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"] == "RuntimeError: out of memory (simulated)"


def test_misspelled_option_and_parent_key_suggestions():
    missing = "Could not find 'model/vit_b17'\n\nAvailable options in 'model':\n\tvit_b16\n\tvit_s16\n"
    assert "Did you mean model=vit_b16?" in explain(Exception(missing), ["model=vit_b17"])
    bad_parent = Exception("Could not override 'trainr.max_epochs'.\nTo append ...")
    assert "Did you mean trainer.max_epochs?" in explain(bad_parent, ["trainr.max_epochs=2"])


def test_help_lists_config_groups_but_not_internal_folders():
    groups = config_groups()
    assert not any(line.startswith("_") for line in groups.splitlines())
    assert "model: " in groups and "vit_ti16" in groups and "callbacks: " in groups and "ema" in groups


def test_wandb_sweep_dir_is_null_in_a_single_run(tmp_path):
    cfg = compose_train(*TINY, output_dir=str(tmp_path))
    assert cfg.logger.wandb.sweep_dir is None if "wandb" in cfg.logger else True
    cfg = compose_train(*QUIET, "logger=wandb", output_dir=str(tmp_path))
    assert cfg.logger.wandb.sweep_dir is None


def test_checkpoint_of_another_network_is_one_clear_error():
    a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 5)
    task = torch.nn.Module()
    task.net = b
    checkpoint = {
        "state_dict": {f"net.{k}": v for k, v in a.state_dict().items()},
        "vitrain": {"net": {"name": "vit_small_patch16_224"}},
    }
    with pytest.raises(
        UserError, match=r"holds vit_small_patch16_224, which does not fit model=vit_ti16"
    ) as err:
        load_task_weights(task, checkpoint, "x.ckpt", "vit_ti16")
    assert "net.bias: (3,) in the checkpoint, (5,) here" in str(err.value)


def test_export_writes_files_readable_like_the_others(tmp_path):
    checkpoint = {"state_dict": {"net.w": torch.ones(2)}, "vitrain": {"net": {"name": "x"}}}
    out = export_network(checkpoint, tmp_path / "export")
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert modes["model.safetensors"] == modes["config.json"]


def test_resume_command_names_this_run(tmp_path):
    compose_train(*TINY, "optimizer.lr=0.01", output_dir=str(tmp_path))
    command = vr.resume_command(tmp_path)
    assert "optimizer.lr=0.01" in command and f"hydra.run.dir={tmp_path}" in command


def test_empty_size_ranges_of_coco_map_are_not_logged():
    logged = {}
    fake = SimpleNamespace(
        val_map=SimpleNamespace(
            compute=lambda: {k: torch.tensor(-1.0 if k == "map_small" else 0.5) for k in vr_keys()},
            reset=lambda: None,
        ),
        log=lambda name, value, **kw: logged.__setitem__(name, float(value)),
    )
    DetectionTask.on_validation_epoch_end(fake)
    assert "val/map_small" not in logged and logged["val/map"] == 0.5 and logged["val/map_large"] == 0.5


def vr_keys():
    from vitrain.tasks.detection import MAP_KEYS

    return MAP_KEYS.keys()


def test_stopping_limits_are_plain_values():
    limits = vr.stopping_limits(OmegaConf.create({"max_epochs": 3, "max_steps": -1}))
    assert limits == {"max_epochs": 3, "max_steps": -1, "max_time": None}


def test_corrupt_last_checkpoint_names_the_ways_out(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    torch.save({"global_step": 4}, folder / "epoch000.ckpt")
    (folder / "last.ckpt").write_bytes(b"truncated")  # newest: what resume=auto picks
    cfg = OmegaConf.create({"ckpt_path": None, "resume": "auto", "paths": {"checkpoint_dir": str(folder)}})
    with pytest.raises(UserError) as err:
        vr.resume_from(cfg, {})
    text = str(err.value)
    assert f"resume=auto found={folder / 'last.ckpt'}: not a readable checkpoint" in text
    assert f"ckpt_path=<one of: {folder / 'epoch000.ckpt'}>" in text and "resume=never" in text


def test_resume_never_refuses_to_overwrite_a_run(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    torch.save({"global_step": 4}, folder / "last.ckpt")
    cfg = OmegaConf.create(
        {
            "ckpt_path": None,
            "resume": "never",
            "paths": {"checkpoint_dir": str(folder), "output_dir": str(tmp_path)},
        }
    )
    with pytest.raises(UserError, match="would overwrite it. Pick a new run_name"):
        vr.resume_from(cfg, {})
    cfg.paths.checkpoint_dir = str(tmp_path / "fresh")
    assert vr.resume_from(cfg, {"status": "failed"}) == (None, None)
