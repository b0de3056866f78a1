"""Every option of every config group composes, resolves and instantiates its parts."""

from __future__ import annotations

import pytest
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from tests.helpers import CONF, compose_train

GROUPS = [
    "model", "data", "optimizer", "scheduler", "trainer", "callbacks", "logger", "paths",
    "debug", "experiment", "hparams_search",
]  # fmt: skip


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


CASES = [(g, o) for g in GROUPS for o in options(g)]
# data options that the default (image) model cannot use, composed with a model that can
MODEL_FOR_DATA = {
    "text": "gpt_tiny", "text_stream": "gpt_tiny", "coco": "detr_tiny", "shapes": "detr_tiny",
    "coco_stream": "detr_tiny", "shapes_masks": "sam_tiny", "coco_masks": "sam_tiny", "sa1b": "sam_tiny",
    "glue": "bert_tiny_cls", "text_classification": "gpt_tiny_cls",
    "conll": "bert_tiny_tagging", "sft": "gpt_tiny_sft",
}  # fmt: skip


def test_every_group_has_options():
    assert {g for g, _ in CASES} == set(GROUPS)
    assert {"vit_ti16", "vit_s16", "vit_b16", "vit_l16"} <= set(options("model"))
    assert {"digits", "cifar10", "cifar100", "imagenet"} <= set(options("data"))


@pytest.mark.parametrize(("group", "option"), CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_option_composes_and_resolves(group, option, tmp_path):
    paired = [f"model={MODEL_FOR_DATA[option]}"] if group == "data" and option in MODEL_FOR_DATA else []
    cfg = compose_train(f"{group}={option}", *paired, output_dir=str(tmp_path))
    resolved = OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    assert resolved["paths"]["output_dir"] == str(tmp_path)
    # data-driven sizes flow into the network (MAE networks have no classes)
    if "num_classes" in resolved["model"]["net"]:
        assert resolved["model"]["net"]["num_classes"] == resolved["data"]["num_classes"]
    if "img_size" in resolved["model"]["net"]:  # image networks (language models have none)
        assert resolved["model"]["net"]["img_size"] == resolved["data"]["image_size"]
        assert resolved["model"]["net"]["in_chans"] == resolved["data"]["in_chans"]
    get_class(cfg.model._target_), get_class(cfg.data._target_)
    for node in [*cfg.callbacks.values(), *cfg.logger.values()]:
        if node is not None:
            instantiate(node)
    optimizer = instantiate(cfg.optimizer)
    assert callable(optimizer)


def test_callbacks_monitor_the_task_metric(tmp_path):
    cfg = compose_train(output_dir=str(tmp_path))
    ckpt = cfg.callbacks.model_checkpoint
    assert (ckpt.monitor, ckpt.mode) == ("val/acc1", "max")
    assert ckpt.dirpath == f"{tmp_path}/checkpoints"


def test_experiment_overrides_apply(tmp_path):
    cfg = compose_train("experiment=vit_b16_imagenet", output_dir=str(tmp_path))
    assert cfg.model.net.name == "vit_base_patch16_224"
    assert cfg.model.mixup_alpha == 0.8 and cfg.model.label_smoothing == 0.1
    assert cfg.data._target_.endswith("ImageFolderDataModule")
    assert cfg.trainer.precision == "bf16-mixed"


def test_optuna_search_config(tmp_path):
    cfg = compose_train("hparams_search=vit_optuna", output_dir=str(tmp_path))
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert set(cfg.hydra.sweeper.params) == {
        "optimizer.lr", "optimizer.weight_decay", "model.net.drop_path_rate",
    }  # fmt: skip


def test_t2t_recipe(tmp_path):
    cfg = compose_train("experiment=t2t_vit_14_imagenet", output_dir=str(tmp_path))
    assert cfg.model.net.name == "t2t_vit_14" and cfg.trainer.max_epochs == 310
    assert (
        cfg.callbacks.ema.decay == 0.99996
        and cfg.global_batch_size == 512
        and cfg.optimizer.weight_decay == 0.05
    )
    assert (cfg.model.mixup_alpha, cfg.model.cutmix_alpha, cfg.model.net.drop_path_rate) == (0.8, 1.0, 0.1)
    assert cfg.data.auto_augment.startswith("rand-m9")


@pytest.mark.parametrize(("model", "direction"), [("vit_ti16", "maximize"), ("mae_vit_tiny", "minimize")])
def test_optuna_direction_follows_the_task(model, direction, tmp_path):
    cfg = compose_train("hparams_search=vit_optuna", f"model={model}", output_dir=str(tmp_path))
    assert cfg.hydra.sweeper.direction == direction
