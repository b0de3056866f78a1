"""Released weights by name from a local Hugging Face hub cache (generated here, never downloaded).

The cache has huggingface_hub's real layout (``models--org--name/refs/main`` naming a
snapshot folder of files) and the hub is offline (``HF_HUB_OFFLINE=1``), so every model either
loads from the cache or fails with one clear message.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from vitrain.errors import UserError
from vitrain.models import create_bert, create_gpt, create_vit
from vitrain.models.detr import Backbone

TINY_VIT = dict(embed_dim=32, depth=1, num_heads=2)


def put_in_cache(cache: Path, repo_id: str, files: dict[str, Path]) -> Path:
    """Lay ``files`` out as huggingface_hub caches model ``repo_id``: ``blobs/<sha256>``, the
    snapshot ``snapshots/<revision>/<name>`` linking to its blob, ``refs/main`` naming the
    revision. Returns the snapshot folder."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    revision = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    for name, source in files.items():
        blob = repo / "blobs" / hashlib.sha256(Path(source).read_bytes()).hexdigest()
        shutil.copy(source, blob)
        (snapshot / name).symlink_to(Path("..") / ".." / "blobs" / blob.name)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty offline hub cache; ``HF_HUB_CACHE`` / ``HF_HUB_OFFLINE`` point the process at it."""
    from huggingface_hub import constants

    cache = tmp_path / "hf_cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads these at import; timm's loader goes through it
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


# ---------------------------------------------------------------- timm
def cache_timm_vit(cache: Path, tmp_path: Path, tag: str = "augreg_in21k_ft_in1k") -> dict[str, torch.Tensor]:
    """Released weights of a (shrunk) ``vit_tiny_patch16_224.<tag>`` at 224 px, 3 channels, 1000 classes."""
    import timm

    state = timm.create_model("vit_tiny_patch16_224", **TINY_VIT).state_dict()
    file = tmp_path / "model.safetensors"
    save_file(state, file)
    put_in_cache(cache, f"timm/vit_tiny_patch16_224.{tag}", {"model.safetensors": file})
    return state


def test_timm_weights_by_tag_are_adapted_to_the_network(hub_cache, tmp_path):
    released = cache_timm_vit(hub_cache, tmp_path)
    net = create_vit(
        "vit_tiny_patch16_224.augreg_in21k_ft_in1k",
        pretrained=True,
        img_size=32,
        in_chans=1,
        num_classes=3,
        **TINY_VIT,
    )
    own = net.state_dict()
    assert torch.equal(own["blocks.0.attn.qkv.weight"], released["blocks.0.attn.qkv.weight"])
    assert own["pos_embed"].shape == (1, 1 + 2 * 2, 32)  # resized from 14x14 to 2x2 patches
    assert torch.equal(own["pos_embed"][:, 0], released["pos_embed"][:, 0])  # class position kept
    # grey input: timm sums the RGB filters of the patch embedding
    assert torch.allclose(
        own["patch_embed.proj.weight"], released["patch_embed.proj.weight"].sum(1, keepdim=True)
    )
    assert own["head.weight"].shape == (3, 32)  # a new head for 3 classes


def test_timm_name_without_tag_takes_the_default_release(hub_cache, tmp_path):
    released = cache_timm_vit(hub_cache, tmp_path)  # the default tag of vit_tiny_patch16_224
    net = create_vit("vit_tiny_patch16_224", pretrained=True, **TINY_VIT)
    assert torch.equal(net.state_dict()["head.weight"], released["head.weight"])  # same 1000 classes


def test_timm_weights_missing_offline_name_the_model_and_the_fix(hub_cache):
    start = time.perf_counter()
    with pytest.raises(
        UserError, match=r"timm/vit_small_patch16_224.augreg_in21k_ft_in1k .*huggingface-cli download"
    ):
        create_vit("vit_small_patch16_224", pretrained=True)
    assert time.perf_counter() - start < 5  # nothing waits on a network
    with pytest.raises(UserError, match="no released weights under this name; tags with weights: vit_tiny"):
        create_vit("vit_tiny_patch16_224.not_a_tag", pretrained=True)
    with pytest.raises(UserError, match="give only one"):
        create_vit("vit_tiny_patch16_224", pretrained=True, pretrained_file="x.pth")


def test_detr_backbone_by_tag(hub_cache, tmp_path):
    import timm

    state = timm.create_model("resnet10t", num_classes=0).state_dict()
    file = tmp_path / "model.safetensors"
    save_file(state, file)
    put_in_cache(hub_cache, "timm/resnet10t.c3_in1k", {"model.safetensors": file})
    backbone = Backbone("resnet10t.c3_in1k", num_stages=3, frozen_bn=False, pretrained=True)
    assert torch.equal(backbone.body.state_dict()["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"])
    with pytest.raises(UserError, match="model.net.pretrained_backbone=true.*timm/resnet18"):
        Backbone("resnet18.a1_in1k", pretrained=True)


# ---------------------------------------------------------------- GPT / BERT
def hf_gpt2(folder: Path, **arch):
    """A small Hugging Face GPT-2 saved with ``save_pretrained`` (config.json + model.safetensors)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = dict(vocab_size=300, n_positions=64, n_embd=32, n_layer=2, n_head=2) | arch
    hf = GPT2LMHeadModel(GPT2Config(**config)).eval()
    hf.save_pretrained(folder)
    return hf


def test_gpt_from_hub_id_and_folder_take_the_architecture_of_config_json(hub_cache, tmp_path):
    folder = tmp_path / "my-small-gpt2"
    hf = hf_gpt2(folder)
    put_in_cache(hub_cache, "gpt2", {n: folder / n for n in ("config.json", "model.safetensors")})
    tokens = torch.randint(0, 300, (2, 12))
    with torch.no_grad():
        expected = hf(tokens).logits
    # the variant's own size (12 layers, 768 wide) gives way to the file's
    for name, spec in (("gpt2_124m", "gpt2"), ("gpt_tiny", str(folder))):
        net = create_gpt(name, hf_weights=spec).eval()
        assert (net.config.n_layer, net.config.n_embd, net.vocab_size) == (2, 32, 300)
        with torch.no_grad():
            assert torch.allclose(net(tokens), expected, atol=1e-5)


def test_gpt_mismatch_names_both_shapes_and_missing_model_the_fix(hub_cache, tmp_path):
    folder = tmp_path / "gpt"
    hf_gpt2(folder)
    with pytest.raises(
        UserError, match=r"vocab_size=8192 .*\(8192, 32\).* vs 300 .*\(300, 32\).*data.tokenizer="
    ):
        create_gpt("gpt_tiny", vocab_size=8192, hf_weights=str(folder))
    with pytest.raises(UserError, match="n_layer=4 vs 2"):
        create_gpt("gpt_tiny", hf_weights=str(folder), n_layer=4)
    with pytest.raises(
        UserError,
        match=r"hf_weights=org/absent: the model org/absent is not in the local .*HF_HUB_OFFLINE=1.*huggingface-cli download org/absent",
    ):
        create_gpt("gpt_tiny", hf_weights="org/absent")
    with pytest.raises(UserError, match="no such file or folder"):
        create_gpt("gpt_tiny", hf_weights=str(tmp_path / "nothing.safetensors"))


def test_bert_from_hub_id(hub_cache, tmp_path):
    from transformers import BertConfig, BertForPreTraining

    hf = BertForPreTraining(
        BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                   max_position_embeddings=40)
    ).eval()  # fmt: skip
    folder = tmp_path / "bert"
    hf.save_pretrained(folder)
    put_in_cache(
        hub_cache, "bert-base-uncased", {n: folder / n for n in ("config.json", "model.safetensors")}
    )
    net = create_bert("bert_base", hf_weights="bert-base-uncased", nsp=True).eval()
    ids = torch.randint(0, 120, (1, 9))
    with torch.no_grad():
        ours, theirs = net(ids), hf(input_ids=ids)
    assert (net.config.n_layer, net.config.intermediate_size) == (2, 64)
    assert torch.allclose(ours[0], theirs.prediction_logits, atol=1e-5)


def test_tokenizer_by_hub_id(hub_cache, tmp_path):
    from vitrain.data.text import TextDataModule, embedded_documents
    from vitrain.data.tokenizer import train_tokenizer

    tok = train_tokenizer(embedded_documents()[:5], "causal", 300)
    tok.save(str(tmp_path / "tokenizer.json"))
    put_in_cache(hub_cache, "gpt2", {"tokenizer.json": tmp_path / "tokenizer.json"})
    data = TextDataModule(tokenizer="gpt2", cache_dir=str(tmp_path / "cache"), max_chars=20_000, seq_len=16)
    assert Path(data.tokenizer_file).parent.name == "snapshots"  # the cached snapshot folder
    assert data.vocab_size == tok.get_vocab_size()
    with pytest.raises(
        UserError, match="data.tokenizer=bert-base-uncased: the model bert-base-uncased is not in"
    ):
        TextDataModule(tokenizer="bert-base-uncased", packing="masked")


def test_cifar100_finetune_recipe_starts_from_the_cached_augreg_weights(hub_cache, tmp_path):
    from hydra.utils import instantiate

    from tests.helpers import compose_train

    cfg = compose_train(
        "experiment=vit_b16_finetune_cifar100", *(f"+model.net.{k}={v}" for k, v in TINY_VIT.items()),
        output_dir=str(tmp_path / "run"),
    )  # fmt: skip
    assert cfg.model.net.pretrained and cfg.data.val_fraction == 0.02 and cfg.global_batch_size == 512
    # 500 warm-up steps of 10,000, as vitrain's schedule counts them (steps per epoch = total / epochs)
    assert round(cfg.scheduler.warmup_epochs * cfg.trainer.max_steps / cfg.trainer.max_epochs) == 500
    import timm

    released = timm.create_model("vit_base_patch16_224", **TINY_VIT).state_dict()
    save_file(released, tmp_path / "model.safetensors")
    put_in_cache(
        hub_cache,
        "timm/vit_base_patch16_224.augreg_in21k",
        {"model.safetensors": tmp_path / "model.safetensors"},
    )
    net = instantiate(cfg.model.net)
    assert net.pos_embed.shape == (1, 1 + 24 * 24, 32) and net.head.out_features == 100
    assert torch.equal(net.state_dict()["blocks.0.mlp.fc1.weight"], released["blocks.0.mlp.fc1.weight"])


def test_without_network_a_cached_model_loads_and_a_missing_one_fails_at_once(
    hub_cache, tmp_path, monkeypatch
):
    from huggingface_hub import constants

    from vitrain import hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # downloads on, but the hub cannot be reached
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    hub.hub_reachable.cache_clear()
    folder = tmp_path / "gpt"
    hf_gpt2(folder)
    put_in_cache(hub_cache, "gpt2", {n: folder / n for n in ("config.json", "model.safetensors")})
    released = cache_timm_vit(hub_cache, tmp_path)
    start = time.perf_counter()
    assert create_gpt("gpt_tiny", hf_weights="gpt2").config.n_layer == 2  # from the cache, no request
    net = create_vit("vit_tiny_patch16_224", pretrained=True, **TINY_VIT)
    assert torch.equal(net.state_dict()["head.weight"], released["head.weight"])
    with pytest.raises(
        UserError, match="org/absent is not in the local Hugging Face cache and the hub is unreachable"
    ):
        create_gpt("gpt_tiny", hf_weights="org/absent")
    assert time.perf_counter() - start < 10  # no retries against an unreachable hub
    hub.hub_reachable.cache_clear()
