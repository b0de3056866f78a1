"""One clear message (exit 1, a failed summary.json) for user mistakes; never a silent wrong run."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

import vitrain.run as vr
from tests.helpers import QUIET, ROOT, TINY_VIT, assert_user_error, compose_train, launch_cli
from vitrain.checkpoints import export_network, load_task_weights
from vitrain.errors import UserError
from vitrain.models.sizes import check_image_size, covers_input, nearest_valid, patch_stages
from vitrain.models.t2t_vit import SOFT_SPLITS
from vitrain.run.checks import MODES, check_value_ranges
from vitrain.run.cli import config_groups, explain
from vitrain.run.lifecycle import resume_command, resume_from
from vitrain.run.stored_config import checkpoint_config
from vitrain.run.summary import stopping_limits
from vitrain.tasks.detection import DetectionTask
from vitrain.tools.prepare import main as prepare

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
        # a run that trains nothing would report untrained weights as a result
        ("trainer.max_epochs=0", "trainer.max_epochs=0: the run would train nothing"),
        ("trainer.max_steps=0", "trainer.max_steps=0: the run would train nothing"),
        # rates and probabilities, checked when the config is composed (not at the first step)
        (
            "model.net.drop_path_rate=2",
            "model.net.drop_path_rate=2: the stochastic depth (drop path) rate must be in [0, 1)",
        ),
        ("model.label_smoothing=1.5", "model.label_smoothing=1.5: label smoothing must be in [0, 1)"),
        ("+model.net.drop_rate=-0.1", "model.net.drop_rate=-0.1: the dropout rate must be in [0, 1)"),
        ("model.mixup_alpha=-1", "model.mixup_alpha=-1: mixup's Beta parameter (0: off) must be in [0, inf)"),
        ("data.num_workers=-1", "data.num_workers=-1: the number of loader processes must be 0"),
        (
            "trainer.precision=bogus",
            "trainer.precision=bogus: not a precision Lightning knows. Choose one of transformer-engine, transformer-engine-float16, 16-true, 16-mixed, bf16-true, bf16-mixed, 32-true, 64-true",
        ),
        # SAM with the default data names the data of its kind
        (
            "model=sam_tiny",
            "needs segmentation data, but data=digits (DigitsDataModule) provides image_classification data. Add data=coco_masks|sa1b|shapes_masks",
        ),
        ("model.freeze=[decoder.*]", "model.freeze: 'decoder.*' matches no parameter. Names are relative to the "
         "network, e.g. 'blocks.0.*'; its top-level names: cls_token, pos_embed, patch_embed, blocks, norm, head."),
        ("model.freeze=[blocks,cls_token,pos_embed,patch_embed,norm,head]", "leaves nothing to train"),
        ("model.lora.r=2 model.lora.target_modules=[qkvv]", "model.lora.target_modules=['qkvv']: Target modules"),
        ("model.lora.r=2 +model.lora.rank=4", "model.lora.rank: no such setting"),
        (
            "logger=wandb logger.wandb.mode=sometimes",
            "logger.wandb.mode='sometimes': choose one of auto, online, offline, disabled.",
        ),
    ],
)  # fmt: skip
def test_user_mistake_is_one_message_and_a_failed_summary(tmp_path, override, message, caplog):
    code, summary = run_main(tmp_path, *override.split())
    assert code == 1
    assert summary["status"] == "failed" and message in summary["error"]
    assert message in caplog.text and "Traceback" not in caplog.text
    assert "lightning.pytorch" not in summary["error"]  # names the key, not Lightning's internals


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["model=mae_vit_tiny", "model.net.mask_ratio=1.0"],
            "model.net.mask_ratio=1.0: the fraction of patches masked must be in (0, 1)",
        ),
        (
            ["model=bert_tiny", "data=text", "model.mask_prob=0"],
            "model.mask_prob=0: the fraction of tokens masked must be in (0, 1)",
        ),
        (
            ["model=sam_tiny", "data=shapes_masks", "model.net.drop_path=1"],
            "model.net.drop_path=1: the stochastic depth (drop path) rate",
        ),
        (
            ["data=imagenet", "data.re_prob=1.5"],
            "data.re_prob=1.5: the random erasing probability must be in [0, 1]",
        ),
    ],
)
def test_rates_of_every_family_are_checked_when_composed(overrides, message):
    with pytest.raises(UserError, match=re.escape(message)):
        check_value_ranges(compose_train(*overrides))


def test_composition_mistakes_write_a_failed_summary(tmp_path):
    run_dir = tmp_path / "run"
    proc = launch_cli(f"hydra.run.dir={run_dir}", "experiment=does_not_exist")
    assert_user_error(proc, "experiment=does_not_exist: Could not find 'experiment/does_not_exist'")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "experiment=does_not_exist" in summary["error"]
    # without hydra.run.dir: the run directory the rest of the command line names
    logs = tmp_path / "logs"
    proc = launch_cli(f"paths.log_dir={logs}", "task_name=t", "run_name=r", "model=vit_b17")
    assert_user_error(proc, "Did you mean model=vit_b16?")
    summary = json.loads((logs / "t" / "runs" / "r" / "summary.json").read_text())
    assert summary["status"] == "failed" and "model=vit_b17" in summary["error"]
    # a completed run keeps its summary; a multirun has no single run directory
    (run_dir / "summary.json").write_text(json.dumps({"status": "completed", "global_step": 4}))
    assert_user_error(launch_cli(f"hydra.run.dir={run_dir}", "model=vit_b17"), "model=vit_b17")
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    proc = launch_cli("-m", f"paths.log_dir={tmp_path / 'multi'}", "model=vit_b17,vit_b16")
    assert_user_error(proc, "model=vit_b17")
    assert not list(tmp_path.glob("multi/**/summary.json"))


@pytest.mark.parametrize("data", ["imagenet", "imagenet_stream"])
def test_image_folder_data_defaults_to_what_the_machine_has(data, monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    cfg = compose_train(f"data={data}")
    assert cfg.data.num_workers == 2  # not 8 on a 2-core machine
    assert cfg.data.pin_memory is torch.cuda.is_available()
    stored = checkpoint_config(cfg, {"model": "vit_ti16", "data": data})["data"]
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(64)), raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    assert compose_train(f"data={data}").data.num_workers == 8  # the usual count where cores allow
    # a checkpoint keeps the machine settings unresolved: mode=eval elsewhere fits that machine
    assert OmegaConf.create(stored).num_workers == 8


def test_readme_lists_every_mode():
    text = (ROOT / "README.md").read_text()
    listed = re.search(r"`mode`\s*\(([^)]*)\)", text).group(1)
    assert re.findall(r"`(\w+)`", listed) == list(MODES)


def write_corrupt(path: Path) -> None:
    """A file with an image suffix that does not decode (a truncated JPEG: header, no data)."""
    path.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 40)


def test_prepare_refuses_corrupt_images_naming_them_or_skips_them(image_tree, tmp_path, caplog):
    write_corrupt(image_tree / "train" / "dog" / "broken.jpg")
    out = tmp_path / "shards"
    args = ["images", "--root", str(image_tree), "--out", str(out), "--chunk-bytes", "64KB"]
    with pytest.raises(SystemExit) as stop:
        prepare([*args, "--workers", "2"])  # decoded in two worker processes
    assert stop.value.code == 1
    assert f"{image_tree / 'train' / 'dog' / 'broken.jpg'}" in caplog.text
    assert "1 of 37 image files do not decode" in caplog.text and "--skip-corrupt" in caplog.text
    assert "Traceback" not in caplog.text and not out.exists()  # nothing written
    meta = prepare([*args, "--workers", "1", "--skip-corrupt"])
    assert meta["splits"] == {"train": 24, "val": 12}  # left out, with a count
    assert "left out 1 of 37 images that do not decode" in caplog.text


def test_a_shard_item_that_does_not_decode_names_itself(image_tree, tmp_path, monkeypatch, caplog):
    # shards written before prepare checked images (or a file corrupted since): the first val image
    write_corrupt(image_tree / "val" / "cat" / "0.jpg")
    monkeypatch.setattr("vitrain.data.write_shards.corrupt_images", lambda paths, workers: {})
    out = tmp_path / "shards"
    prepare(["images", "--root", str(image_tree), "--out", str(out), "--workers", "1"])
    code, summary = run_main(
        tmp_path / "run", "data=imagenet_stream", f"data.root={out}", "data.num_workers=0",
        "data.batch_size=4", "data.auto_augment=null",
    )  # fmt: skip
    assert code == 1 and summary["status"] == "failed"
    expected = f"shard item that does not decode: item 0, source file {image_tree / 'val' / 'cat' / '0.jpg'}"
    assert expected in summary["error"] and "write the shards again" in summary["error"]
    assert expected in caplog.text and "Traceback" not in caplog.text


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

    monkeypatch.setattr("vitrain.run.train.train", crash)
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
    command = resume_command(tmp_path)
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
    limits = stopping_limits(OmegaConf.create({"max_epochs": 3, "max_steps": -1}))
    assert limits == {"max_epochs": 3, "max_steps": -1, "max_time": None}


def test_corrupt_last_checkpoint_names_the_ways_out(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    torch.save({"global_step": 4}, folder / "epoch000.ckpt")
    (folder / "last.ckpt").write_bytes(b"truncated")  # newest: what resume=auto picks
    cfg = OmegaConf.create({"ckpt_path": None, "resume": "auto", "paths": {"checkpoint_dir": str(folder)}})
    with pytest.raises(UserError) as err:
        resume_from(cfg, {})
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
        resume_from(cfg, {})
    cfg.paths.checkpoint_dir = str(tmp_path / "fresh")
    assert resume_from(cfg, {"status": "failed"}) == (None, None)
