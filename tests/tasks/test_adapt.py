"""Task.adapt / Task.freeze: frozen parameters leave the optimizer, frozen modules stay in eval
mode through Lightning's epochs, and the linear probe is a use of the same freezing."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from vitrain.errors import UserError
from vitrain.models import create_vit
from vitrain.models.adapters import select
from vitrain.models.vit import prepare_linear_probe
from vitrain.tasks import ClassificationTask


def tiny_task(**kwargs) -> ClassificationTask:
    torch.manual_seed(0)
    net = create_vit("vit_tiny_patch16_224", img_size=16, patch_size=8, in_chans=1, num_classes=3, embed_dim=32,
                     depth=2, num_heads=2, drop_path_rate=0.1)  # fmt: skip
    return ClassificationTask(net, optimizer=partial(torch.optim.SGD, lr=0.1), **kwargs)


def optimized(task) -> set[int]:
    return {id(p) for group in task.build_optimizer().param_groups for p in group["params"]}


def test_pattern_selection():
    names = ["blocks.0.attn.qkv.weight", "blocks.0.norm1.weight", "blocks.1.attn.qkv.weight", "head.weight"]
    assert select(names, ["blocks.0"], "k") == set(names[:2])
    assert select(names, ["*", "!head"], "k") == set(names[:3])
    assert select(names, ["*.qkv.*", "!blocks.1.*"], "k") == {names[0]}
    with pytest.raises(UserError, match=r"model.freeze: 'decoder.\*' matches no parameter.*: blocks, head\."):
        select(names, ["decoder.*"], "model.freeze")


def test_freeze_patterns_leave_the_optimizer_and_run_in_eval_mode():
    task = tiny_task()
    task.adapt(freeze=["patch_embed", "blocks.0.*", "pos_embed"])
    frozen = {n for n, p in task.named_parameters() if not p.requires_grad}
    assert frozen == {
        n for n, _ in task.named_parameters() if n.startswith(("net.patch_embed.", "net.blocks.0."))
    } | {"net.pos_embed"}
    assert all(id(p) not in optimized(task) for n, p in task.named_parameters() if n in frozen)
    task.train()
    assert task.frozen_eval_modules == ["net.patch_embed", "net.blocks.0"]
    assert not task.net.blocks[0].training and not task.net.blocks[0].drop_path1.training
    assert task.net.blocks[1].training and task.net.blocks.training and task.net.head.training
    spared = tiny_task()
    spared.adapt(freeze=["blocks.0"], frozen_eval=False)
    assert spared.train().net.blocks[0].training  # model.frozen_eval=false: dropout and drop path stay on


def test_frozen_modules_stay_in_eval_mode_every_epoch_and_lora_dropout_trains():
    """Lightning sets train() at the start of fit and after every validation loop."""
    task = tiny_task()
    task.adapt(freeze=["blocks.0"], lora={"r": 2, "dropout": 0.1})
    seen = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            attn = pl_module.net.blocks[1].attn.qkv
            seen.append((pl_module.net.blocks[0].training, pl_module.net.patch_embed.training,
                         attn.lora_dropout["default"].training, pl_module.net.head.training))  # fmt: skip

    data = TensorDataset(torch.randn(8, 1, 16, 16), torch.randint(0, 3, (8,)))
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Record()])  # fmt: skip
    trainer.fit(task, DataLoader(data, batch_size=4), DataLoader(data, batch_size=4))
    assert seen == [(False, False, True, True)] * 4


def test_freezing_everything_is_one_message():
    with pytest.raises(UserError, match=r"model.freeze=\['\*'\] leaves nothing to train: all \d+ parameter"):
        tiny_task().adapt(freeze=["*"])
    with pytest.raises(
        UserError, match=r"model.freeze=\['blocks', 'head'\] with model.lora.r=2 leaves nothing"
    ):
        tiny_task().adapt(freeze=["blocks", "head"], lora={"r": 2})


def test_linear_probe_is_the_freezing_of_everything_but_the_head():
    probe = tiny_task(linear_probe=True)
    manual = tiny_task()
    prepare_linear_probe(manual.net)
    manual.adapt(freeze=["*", "!head"])
    for task in (probe, manual):
        task.train()
    assert [n for n, p in probe.named_parameters() if p.requires_grad] == [
        "net.head.1.weight",
        "net.head.1.bias",
    ]
    assert probe.frozen_eval_modules == manual.frozen_eval_modules
    assert {n: m.training for n, m in probe.named_modules()} == {
        n: m.training for n, m in manual.named_modules()
    }


def test_save_adapter_without_lora_is_one_message(tmp_path):
    with pytest.raises(UserError, match="export_adapter=true: this checkpoint has no LoRA adapters"):
        tiny_task().save_adapter(tmp_path)
