"""``model.freeze`` and ``model.lora`` from the command line: dry_run counts, LoRA runs of every
family, exact resume, the merged export (no peft needed) and the adapter alone (peft's format),
and base weights that load before the adapters are added."""

from __future__ import annotations

import json
import re

import pytest
import torch
from hydra.utils import instantiate
from safetensors.torch import load_file, save_file

from tests.helpers import TINY_VIT, compose_train, run_train
from vitrain.checkpoints import load_task_weights, read_weights
from vitrain.errors import UserError
from vitrain.models import adapters
from vitrain.run.build import build_task


def load(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_dry_run_counts_reflect_freezing(tmp_path):
    proc = run_train(tmp_path / "run", *TINY_VIT, "dry_run=true", "model.freeze=[blocks.0,cls_token]")
    assert proc.returncode == 0, proc.stderr
    first, *table = proc.stdout.splitlines()
    total, trainable = map(int, re.fullmatch(r"params: total=(\d+) trainable=(\d+)", first).groups())
    net = instantiate(compose_train(*TINY_VIT).model.net)
    frozen = sum(
        p.numel() for n, p in net.named_parameters() if n.startswith("blocks.0.") or n == "cls_token"
    )
    assert total == sum(p.numel() for p in net.parameters()) and trainable == total - frozen
    blocks = sum(p.numel() for p in net.blocks.parameters())
    assert f"  blocks: total={blocks} trainable={blocks - frozen + 32}" in table  # cls_token: 32
    assert "  cls_token: total=32 trainable=0" in table


# a tiny ViT with every source of randomness on: augmentation, drop path, LoRA dropout
LORA_VIT = [
    *TINY_VIT, "data.image_size=16", "data.batch_size=32", "data.augment=true", "model.net.drop_path_rate=0.1",
    "trainer.max_epochs=2", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
    "callbacks.model_checkpoint.save_top_k=-1", "test_after_fit=false",
    "model.lora.r=4", "model.lora.alpha=8", "model.lora.dropout=0.1",
]  # fmt: skip


def test_lora_run_resumes_exactly_and_exports_merged_and_as_a_peft_adapter(tmp_path):
    from peft import PeftModel

    straight, resumed, export = tmp_path / "straight", tmp_path / "resumed", tmp_path / "export"
    assert run_train(straight, *LORA_VIT).returncode == 0
    # a second run continues the first one's epoch-0 checkpoint: its adapters, optimizer and RNG states
    proc = run_train(resumed, *LORA_VIT, f"ckpt_path={straight / 'checkpoints' / 'epoch000.ckpt'}")
    assert proc.returncode == 0, proc.stderr
    a, b = load(resumed / "checkpoints" / "epoch001.ckpt"), load(straight / "checkpoints" / "epoch001.ckpt")
    assert a["global_step"] == b["global_step"] == 6
    state = b["state_dict"]
    assert not any("base_layer" in k or "base_model" in k for k in state)  # vitrain's own key layout
    assert "net.blocks.0.attn.qkv.weight" in state and "net.blocks.0.attn.qkv.lora_B.default.weight" in state
    assert state["net.blocks.0.attn.qkv.lora_B.default.weight"].abs().sum() > 0  # the adapters trained
    for key in state:
        torch.testing.assert_close(a["state_dict"][key], state[key], rtol=0, atol=0, msg=key)
    summary = json.loads((straight / "summary.json").read_text())
    assert 0 < summary["params"]["trainable"] < summary["params"]["total"] / 5

    ckpt = straight / "checkpoints" / "epoch001.ckpt"
    with pytest.raises(UserError, match=r"init_from=.* holds LoRA adapters .* mode=export"):
        read_weights(ckpt, "model.net.init_from")  # its base weights alone are not the trained network
    proc = run_train(export, "mode=export", f"ckpt_path={ckpt}", "export_adapter=true")
    assert proc.returncode == 0, proc.stderr
    task = build_task(compose_train(*LORA_VIT))
    load_task_weights(task, load(ckpt), ckpt, "vit_ti16")
    images = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        expected = task.eval()(images)
        # the merged export: plain timm, no peft, the same function
        import timm

        config = json.loads((export / "export" / "config.json").read_text())
        plain = timm.create_model(config["name"], **config["kwargs"]).eval()
        merged = load_file(export / "export" / "model.safetensors")
        assert not any("lora" in k for k in merged)
        plain.load_state_dict(merged)
        assert (plain(images) - expected).abs().max() <= 1e-5
        # the adapter alone, on the base network (the checkpoint's frozen weights), through peft
        base = timm.create_model(config["name"], **config["kwargs"])
        base.load_state_dict(
            {k[4:]: v for k, v in state.items() if k.startswith("net.") and ".lora_" not in k}
        )
        peft_net = PeftModel.from_pretrained(base, str(export / "export" / "adapter")).eval()
        assert (peft_net(images) - expected).abs().max() <= 1e-5


TINY_GPT = ["model=gpt_tiny", "+model.net.n_layer=1", "+model.net.n_embd=32", "+model.net.n_head=2",
            "+model.net.n_positions=64"]  # fmt: skip
TINY_BERT = ["model=bert_tiny", "+model.net.n_layer=1", "+model.net.n_embd=32", "+model.net.n_head=2",
             "+model.net.n_positions=64"]  # fmt: skip
TEXT = ["data=text", "data.vocab_size=300", "data.seq_len=32", "data.batch_size=8"]
TINY_SAM = [
    "model=sam_tiny", "data=shapes_masks", "data.image_size=32", "data.train_size=8", "data.val_size=4",
    "data.test_size=4", "data.batch_size=4", "model.num_rounds=2", "model.mask_only_rounds=1", "model.val_clicks=1",
    "+model.net.encoder_embed_dim=32", "+model.net.encoder_depth=2", "+model.net.encoder_num_heads=2",
    "+model.net.encoder_global_attn_indexes=[1]", "+model.net.window_size=4", "+model.net.prompt_embed_dim=32",
    "+model.net.decoder_num_heads=2", "+model.net.decoder_mlp_dim=64", "+model.net.iou_head_hidden_dim=32",
]  # fmt: skip


@pytest.mark.parametrize(
    ("family", "overrides", "adapted"),
    [
        ("gpt_bf16", [*TINY_GPT, *TEXT, "trainer.precision=bf16-mixed"], "net.blocks.0.attn.proj"),
        ("bert", [*TINY_BERT, *TEXT], "net.layers.0.attn.qkv"),
        ("sam", TINY_SAM, "net.mask_decoder.transformer.layers.0.self_attn.q_proj"),
    ],
)
def test_lora_trains_a_step_on_every_family(tmp_path, family, overrides, adapted):
    proc = run_train(
        tmp_path / family, *overrides, "model.lora.r=2", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1", "test_after_fit=false", "callbacks.model_checkpoint.save_top_k=0",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / family / "summary.json").read_text())
    assert summary["global_step"] == 2 and 0 < summary["params"]["trainable"] < summary["params"]["total"] / 5
    state = load(tmp_path / family / "checkpoints" / "last.ckpt")["state_dict"]
    assert f"{adapted}.weight" in state and not any("base_layer" in k for k in state)
    assert state[f"{adapted}.lora_B.default.weight"].abs().sum() > 0


def vit_export(path, seed: int = 3) -> None:
    """A mode=export ``model.safetensors`` of the tiny test ViT (digits: 32 px, 1 channel)."""
    torch.manual_seed(seed)
    save_file(instantiate(compose_train(*TINY_VIT).model.net).state_dict(), path)


def gpt_hf_file(path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(3)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=64, n_embd=32, n_layer=1, n_head=2))
    save_file({k: v.contiguous() for k, v in hf.state_dict().items() if k != "lm_head.weight"}, path)


def sam_file(path) -> None:
    """An official-layout SAM checkpoint (``model.net.checkpoint``) of the tiny test SAM."""
    torch.manual_seed(3)
    torch.save(instantiate(compose_train(*TINY_SAM).model.net).state_dict(), path)


@pytest.mark.parametrize(
    ("write", "name", "overrides", "new"),
    [
        (vit_export, "model.safetensors", [*TINY_VIT, "model.net.init_from={file}"], ("head.",)),
        (gpt_hf_file, "model.safetensors", [*TINY_GPT, "data=text", "model.net.vocab_size=50",
                                            "model.net.hf_weights={file}"], ()),
        (sam_file, "sam.pth", [*TINY_SAM, "model.net.checkpoint={file}"], ()),
    ],
)  # fmt: skip
def test_adapters_are_added_after_the_base_weights_load(tmp_path, write, name, overrides, new):
    """init_from / hf_weights / checkpoint: the adapted network holds the file's weights (the
    same as without adapters, whatever the random seed) and starts with the same function."""
    file = tmp_path / name
    write(file)
    overrides = [o.format(file=file) for o in overrides]
    torch.manual_seed(0)
    plain = build_task(compose_train(*overrides)).net.state_dict()
    torch.manual_seed(1)
    task = build_task(compose_train(*overrides, "model.lora.r=2"))
    state = task.net.state_dict()
    assert task.lora is not None and any(".lora_A." in k for k in state)
    for key, value in plain.items():
        if not key.startswith(new):
            torch.testing.assert_close(state[key], value, rtol=0, atol=0, msg=key)
    trainable = {n for n, p in adapters.named_parameters(task.net).items() if p.requires_grad}
    assert all(".lora_" in n or n.startswith(new) for n in trainable)
