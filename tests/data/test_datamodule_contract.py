"""The DataModule contract (vitrain.data.base.DataModule): checked when a class is defined, the
loader settings checked once for every DataModule, the orchestration reading it directly."""

from __future__ import annotations

import pytest
from hydra.utils import get_class
from omegaconf import OmegaConf

import vitrain.run.checks as vr
from tests.helpers import CONF
from vitrain.data.base import DataModule, ShardedDataModule
from vitrain.data.stream import StreamingTextDataModule
from vitrain.errors import UserError


def test_every_data_option_is_a_data_module_of_a_kind():
    targets = {path.stem: OmegaConf.load(path)._target_ for path in (CONF / "data").glob("*.yaml")}
    assert len(targets) >= 15
    for option, target in targets.items():
        cls = get_class(target)
        assert issubclass(cls, DataModule) and isinstance(cls.kind, str) and cls.kind, option
    assert set(vr.data_options("text")) == {"text", "text_stream"}


def test_the_contract_is_checked_when_a_class_is_defined():
    with pytest.raises(TypeError, match="Bad.*kind must be a non-empty string"):

        class Bad(DataModule):
            kind = ""

    with pytest.raises(TypeError, match="Sizes.*model_size_keys .* needs a model_sizes"):

        class Sizes(DataModule):
            kind = "text"
            model_size_keys = ("vocab_size",)

    with pytest.raises(TypeError, match="Flag.*early_setup must be True or False"):

        class Flag(DataModule):
            kind = "text"
            early_setup = "no"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(batch_size=0), "data.batch_size=0: must be a positive integer"),
        (dict(batch_size=2.5), "data.batch_size=2.5: must be a positive integer"),
        (dict(batch_size=2, num_workers=-1), "data.num_workers=-1: the number of loader processes must be 0"),
        (
            dict(batch_size=2, repeated_aug=0),
            "data.repeated_aug=0: must be a positive integer (1: off; DeiT: 3)",
        ),
    ],
)
def test_loader_settings_are_checked_once_for_every_data_module(kwargs, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        ShardedDataModule(**kwargs)


def test_streaming_data_refuses_persistent_workers_and_inherits_the_checks(tmp_path):
    # litdata's workers learn the epoch when they start: kept workers would repeat epoch 1's order
    with pytest.raises(UserError, match="data.persistent_workers=true: StreamingTextDataModule"):
        StreamingTextDataModule(root=str(tmp_path), num_workers=2, persistent_workers=True)
    with pytest.raises(UserError, match="data.batch_size=0: must be a positive integer"):
        StreamingTextDataModule(root=str(tmp_path), batch_size=0)
    with pytest.raises(UserError, match=r"data.packing='gpt': choose one of causal, masked"):
        StreamingTextDataModule(root=str(tmp_path), packing="gpt")
    # without workers there is nothing to keep: accepted, as by every DataModule
    with pytest.raises(UserError, match="cannot read"):
        StreamingTextDataModule(root=str(tmp_path), num_workers=0, persistent_workers=True)


def test_a_data_target_outside_the_contract_is_one_message():
    cfg = OmegaConf.create(
        {
            "model": {"_target_": "vitrain.tasks.ClassificationTask"},
            "data": {"_target_": "lightning.pytorch.LightningDataModule"},
        }
    )
    with pytest.raises(
        UserError, match="data=mine: lightning.pytorch.LightningDataModule is not a vitrain DataModule"
    ):
        vr.check_pairing(cfg, {"data": "mine", "model": "vit_ti16"})
