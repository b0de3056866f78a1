"""MAE training: the task, reconstruction grids, and fine-tuning / linear probing from its checkpoints."""

from __future__ import annotations

import csv
import json
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file
from torch.utils.data import DataLoader, TensorDataset

from tests.helpers import run_train
from vitrain.callbacks import Reconstructions
from vitrain.callbacks.reconstructions import image_grid
from vitrain.checkpoints import export_network, load_checkpoint
from vitrain.errors import UserError
from vitrain.models import create_mae, create_vit, load_encoder
from vitrain.models.vit import count_parameters
from vitrain.tasks import ClassificationTask, MAETask
from vitrain.tasks.optim import lr_factor, param_groups, warmup_cosine

# MAE small enough for two CPU cores, and the timm ViT its encoder fits into (4-px patches).
MAE_ARCH = dict(
    embed_dim=32, depth=2, num_heads=2, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2
)
VIT_ARCH = dict(patch_size=4, embed_dim=32, depth=2, num_heads=2)
CLI_MAE = [
    "model=mae_vit_tiny", "+model.net.embed_dim=64", "+model.net.depth=2", "+model.net.num_heads=2",
    "+model.net.decoder_embed_dim=32", "+model.net.decoder_depth=1", "+model.net.decoder_num_heads=2",
    "data.batch_size=32",
]  # fmt: skip
CLI_VIT = [
    "model=vit_ti16", "+model.net.patch_size=4", "+model.net.embed_dim=64", "+model.net.depth=2",
    "+model.net.num_heads=2",
]  # fmt: skip


pytestmark = pytest.mark.xdist_group("mae")  # one worker builds the module-scoped mae_run


def tiny_mae(img_size: int = 32, in_chans: int = 1, **kwargs):
    return create_mae("mae_vit_tiny", img_size=img_size, in_chans=in_chans, **{**MAE_ARCH, **kwargs})


def tiny_vit(img_size: int = 32, **kwargs):
    args = dict(img_size=img_size, in_chans=1, num_classes=10, **VIT_ARCH)
    return create_vit("vit_tiny_patch16_224", **{**args, **kwargs})


def save_task_checkpoint(net: torch.nn.Module, path: Path) -> Path:
    """A Lightning-style checkpoint of a task holding ``net`` (what ``last.ckpt`` holds)."""
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 0, "global_step": 0}, path)
    return path


def metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- end to end (CLI)
@pytest.fixture(scope="module")
def mae_run(tmp_path_factory) -> Path:
    """3 epochs x 6 steps of MAE pretraining on digits with reconstruction grids."""
    run_dir = tmp_path_factory.mktemp("mae") / "run"
    proc = run_train(
        run_dir, *CLI_MAE, "callbacks=mae", "trainer.max_epochs=3", "trainer.limit_train_batches=6",
        "trainer.limit_val_batches=2", "scheduler.warmup_epochs=1", "optimizer.lr=2e-3",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return run_dir


@pytest.mark.slow
def test_pretraining_lowers_the_loss_and_writes_reconstructions(mae_run):
    val = [float(r["val/loss"]) for r in metrics(mae_run) if r.get("val/loss")]
    assert len(val) == 3 and val[-1] < 0.95 * val[0], val
    summary = json.loads((mae_run / "summary.json").read_text())
    assert summary["monitor"] == {"metric": "val/loss", "mode": "min"}
    assert summary["best"]["val/loss"] == pytest.approx(min(val), rel=1e-5)
    pngs = sorted(p.name for p in (mae_run / "reconstructions").glob("*.png"))
    assert pngs == ["epoch000.png", "epoch001.png", "epoch002.png"]
    image = Image.open(mae_run / "reconstructions" / "epoch002.png")
    # 3 rows (original / masked / reconstruction) x 8 columns of 32-px grey digits, 2-px padding
    assert image.mode == "L" and image.size == (8 * (32 + 2) + 2, 3 * (32 + 2) + 2)
    pixels = torch.tensor(list(image.getdata()), dtype=torch.float32).view(104, 274)
    original, reconstruction = pixels[2:34], pixels[70:102]
    assert (original - reconstruction).abs().mean() < 40  # the reconstruction resembles the image


@pytest.mark.slow
def test_finetune_from_mae_checkpoint(mae_run, tmp_path):
    ckpt = mae_run / "checkpoints" / "last.ckpt"
    run_dir = tmp_path / "finetune"
    proc = run_train(
        run_dir, *CLI_VIT, f"model.net.init_from={ckpt}", "model.net.global_pool=avg", "model.layer_decay=0.65",
        "data.image_size=48", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    log = (run_dir / "train.log").read_text()
    assert "model.net.init_from); new: ['fc_norm.bias', 'fc_norm.weight', 'head.bias', 'head.weight']" in log
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    # the fine-tuned network exports without the init_from arguments and loads into plain timm
    out = export_network(load_checkpoint(run_dir / "checkpoints" / "last.ckpt"), tmp_path / "export")
    config = json.loads((out / "config.json").read_text())
    assert "init_from" not in config["kwargs"] and config["kwargs"]["global_pool"] == "avg"
    net = timm.create_model(config["name"], **config["kwargs"])
    net.load_state_dict(load_file(out / "model.safetensors"))
    assert net.pos_embed.shape == (1, 1 + 12 * 12, 64)


# ---------------------------------------------------------------- the task
def test_reconstruct_pastes_visible_patches_and_denormalises_predictions():
    torch.manual_seed(0)
    for norm_pix_loss in (True, False):
        net = tiny_mae(img_size=16, in_chans=3, norm_pix_loss=norm_pix_loss).eval()
        task = MAETask(net, optimizer=partial(torch.optim.AdamW, lr=1e-3))
        images = torch.randn(2, 3, 16, 16)
        target = net.patchify(images)
        if norm_pix_loss:  # a perfect prediction of the loss's normalised target
            perfect = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
        else:
            perfect = target
        net.forward_decoder = lambda latent, ids_restore, perfect=perfect: perfect
        masked, reconstruction = task.reconstruct(images, seed=3)
        torch.testing.assert_close(reconstruction, images, atol=1e-4, rtol=1e-4)
        patches = net.patchify(masked)
        hidden = patches.abs().sum(-1) == 0  # (B, L): masked patches are zero (the data mean)
        assert hidden.sum(1).tolist() == [12, 12]  # 16 patches, mask ratio 0.75
        torch.testing.assert_close(patches[~hidden], target[~hidden])
        masked_again, _ = task.reconstruct(images, seed=3)
        torch.testing.assert_close(masked_again, masked)  # the seed fixes the masks
        assert not torch.equal(task.reconstruct(images, seed=4)[0], masked)


def test_validation_masks_are_fixed_and_tokens_decayed_as_the_reference():
    net = tiny_mae(img_size=16)
    task = MAETask(net, optimizer=partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.05), mask_ratio=0.5)
    images = torch.randn(4, 1, 16, 16)
    loss_a, _, mask = task(images, task.mask_noise(4, seed=0))
    loss_b, _, _ = task(images, task.mask_noise(4, seed=0))
    assert loss_a == loss_b and mask.sum().item() == 4 * 8  # task.mask_ratio overrides the net's 0.75
    decay, no_decay = param_groups(net)
    ids = {id(p) for p in no_decay["params"]}
    names = {n for n, p in net.named_parameters() if id(p) in ids}
    assert {"norm.weight", "decoder_pred.bias"} <= names
    # facebookresearch/mae main_pretrain.py decays every parameter of 2+ dims, the tokens included
    decayed = {n for n, p in net.named_parameters() if id(p) in {id(q) for q in decay["params"]}}
    assert {"cls_token", "mask_token"} <= decayed
    grouped = {id(p) for g in (decay, no_decay) for p in g["params"]}
    assert id(net.pos_embed) not in grouped and id(net.decoder_pos_embed) not in grouped  # frozen
    opt = task.build_optimizer()
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    with pytest.raises(UserError, match="model.mask_ratio=1.0"):
        MAETask(net, optimizer=partial(torch.optim.AdamW), mask_ratio=1.0)


def test_image_grid_size_and_channels():
    grey = [torch.rand(5, 1, 8, 8) for _ in range(3)]
    assert image_grid(grey, padding=2).shape == (3 * 10 + 2, 5 * 10 + 2)
    rgb = [torch.rand(4, 3, 8, 6) for _ in range(3)]
    grid = image_grid(rgb, padding=1)
    assert grid.shape == (3 * 9 + 1, 4 * 7 + 1, 3) and grid.dtype.name == "uint8"
    assert (grid[0] == 255).all()  # white padding


def test_reconstruction_callback_needs_an_mae_model():
    task = ClassificationTask(tiny_vit(), optimizer=partial(torch.optim.AdamW))
    with pytest.raises(UserError, match="callbacks.reconstructions needs an MAE model"):
        Reconstructions().setup(L.Trainer(logger=False), task, "fit")


# ---------------------------------------------------------------- loading the encoder into a ViT
@pytest.mark.parametrize(
    ("img_size", "global_pool", "source"),
    [(32, "token", "ckpt"), (48, "token", "ckpt"), (32, "avg", "ckpt"), (48, "avg", "safetensors")],
)
def test_mae_encoder_loads_into_vit(tmp_path, img_size, global_pool, source):
    mae = tiny_mae(img_size=32)
    path = save_task_checkpoint(mae, tmp_path / "mae.ckpt")
    if source == "safetensors":  # mode=export of the pretraining checkpoint
        path = export_network(load_checkpoint(path), tmp_path / "export") / "model.safetensors"
    vit = tiny_vit(img_size=img_size, global_pool=global_pool)
    report = load_encoder(vit, path)
    head = ["head.bias", "head.weight"]
    assert report.new_keys == (["fc_norm.bias", "fc_norm.weight", *head] if global_pool == "avg" else head)
    decoder = {k for k in mae.state_dict() if k.startswith(("decoder_", "mask_token"))}
    expected_dropped = decoder | ({"norm.bias", "norm.weight"} if global_pool == "avg" else set())
    assert set(report.dropped_keys) == expected_dropped
    for name in ("patch_embed.proj.weight", "cls_token", "blocks.1.mlp.fc2.weight", "blocks.0.attn.qkv.bias"):
        torch.testing.assert_close(vit.state_dict()[name], mae.state_dict()[name], msg=name)
    assert vit.pos_embed.requires_grad  # the fixed sin-cos table becomes a learnable start
    grid = img_size // 4
    assert vit.pos_embed.shape == (1, 1 + grid * grid, 32)
    torch.testing.assert_close(vit.pos_embed[:, 0], mae.pos_embed[:, 0])  # cls position kept apart
    if img_size == 32:
        torch.testing.assert_close(vit.pos_embed, mae.pos_embed)
    else:  # interpolated from the 8x8 table: smooth, not the 12x12 sin-cos table
        assert not torch.allclose(vit.pos_embed[0, 1:], tiny_mae(img_size=48).pos_embed[0, 1:], atol=1e-3)
    assert vit(torch.randn(2, 1, img_size, img_size)).shape == (2, 10)


def test_init_from_through_the_factory_and_misfits(tmp_path):
    path = save_task_checkpoint(tiny_mae(), tmp_path / "mae.ckpt")
    vit = tiny_vit(init_from=str(path))
    assert vit.blocks[0].attn.qkv.weight.abs().sum() > 0
    misfits = {
        "wider": dict(embed_dim=64),  # every shape differs
        "shallower": dict(depth=1),  # blocks.1.* left over
        "deeper": dict(depth=3),  # blocks.2.* missing
    }
    for arch in misfits.values():
        with pytest.raises(UserError, match=r"model\.net\.init_from=.*mae\.ckpt"):
            tiny_vit(init_from=str(path), **arch)
    with pytest.raises(UserError, match="model.net.init_from=.*no such checkpoint file"):
        tiny_vit(init_from=str(tmp_path / "missing.ckpt"))
    with pytest.raises(UserError, match="model.net.init_from is required for this recipe"):
        tiny_vit(init_from=None, require_init_from=True)
    with pytest.raises(UserError, match="give only one"):
        tiny_vit(init_from=str(path), pretrained_file=str(path))


# ---------------------------------------------------------------- layer decay, linear probe
def test_layer_decay_groups():
    net = tiny_vit(global_pool="avg")  # 2 blocks: layers 0 (embeddings) .. 3 (fc_norm, head)
    groups = param_groups(net, layer_decay=0.5)
    by_param = {id(p): g for g in groups for p in g["params"]}
    assert len(by_param) == len(list(net.parameters()))  # each parameter exactly once
    expected = {
        "patch_embed.proj.weight": (0.125, True), "cls_token": (0.125, False), "pos_embed": (0.125, False),
        "blocks.0.attn.qkv.weight": (0.25, True), "blocks.0.norm1.weight": (0.25, False),
        "blocks.1.mlp.fc1.weight": (0.5, True), "blocks.1.mlp.fc1.bias": (0.5, False),
        "fc_norm.weight": (1.0, False), "head.weight": (1.0, True), "head.bias": (1.0, False),
    }  # fmt: skip
    params = dict(net.named_parameters())
    for name, (scale, decays) in expected.items():
        group = by_param[id(params[name])]
        assert group["lr_scale"] == scale and ("weight_decay" not in group) == decays, name
    assert [g["name"] for g in groups][:2] == ["layer0", "layer0_no_decay"]
    with pytest.raises(UserError, match="model.layer_decay=1.5"):
        param_groups(net, layer_decay=1.5)


class RecordLRs(L.Callback):
    def __init__(self) -> None:
        self.lrs: list[list[float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.append([g["lr"] for g in trainer.optimizers[0].param_groups])


def test_per_group_learning_rates_follow_schedule_times_layer_scale():
    task = ClassificationTask(
        tiny_vit(img_size=16),
        optimizer=partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.05),
        scheduler=partial(warmup_cosine, warmup_epochs=0.5, min_lr_ratio=0.1),
        layer_decay=0.65,
    )
    data = TensorDataset(torch.randn(32, 1, 16, 16), torch.randint(0, 10, (32,)))
    record = RecordLRs()
    trainer = L.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[record],
    )  # fmt: skip
    trainer.fit(task, train_dataloaders=DataLoader(data, batch_size=4))  # 8 steps, 4 warm-up
    scales = [g["lr_scale"] for g in trainer.optimizers[0].param_groups]
    assert min(scales) == pytest.approx(0.65**3) and max(scales) == 1.0
    factor = lr_factor(total_steps=8, warmup_steps=4, min_lr_ratio=0.1, decay="cosine")
    assert len(record.lrs) == 8
    for step, lrs in enumerate(record.lrs):
        assert lrs == pytest.approx([factor(step) * 1e-3 * s for s in scales], rel=1e-6), step


def test_linear_probe_trains_only_the_head():
    task = ClassificationTask(
        tiny_vit(drop_path_rate=0.1), optimizer=partial(torch.optim.SGD, lr=0.1), linear_probe=True
    )
    head = task.net.head
    assert isinstance(head[0], torch.nn.BatchNorm1d) and not head[0].affine and head[0].eps == 1e-6
    trainable = {n for n, p in task.named_parameters() if p.requires_grad}
    assert trainable == {"net.head.1.weight", "net.head.1.bias"}
    total, count = count_parameters(task)  # what dry_run prints
    assert count == 32 * 10 + 10 and total > 10 * count
    opt = task.build_optimizer()
    assert sum(len(g["params"]) for g in opt.param_groups) == 2
    task.train()
    assert not task.net.blocks.training and not task.net.patch_embed.training  # no drop path
    assert task.net.head.training and head[0].training  # the BN collects statistics
    before = {n: p.detach().clone() for n, p in task.net.named_parameters()}
    images, labels = torch.randn(8, 1, 32, 32), torch.randint(0, 10, (8,))
    task.train_criterion(task(images), labels).backward()
    opt.step()
    changed = {n for n, p in task.net.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {"head.1.weight", "head.1.bias"}
    assert head[0].running_mean.abs().sum() > 0


def test_linear_probe_export_folds_the_head_into_plain_timm(tmp_path):
    """mode=export of a linear probe: BN -> Linear becomes one Linear; same logits in plain timm."""
    task = ClassificationTask(tiny_vit(), optimizer=partial(torch.optim.SGD, lr=0.1), linear_probe=True)
    task.train()
    with torch.no_grad():
        for _ in range(3):  # running statistics of the BN that are far from (0, 1)
            task(torch.randn(8, 1, 32, 32) * 3 + 1)
        task.net.head[1].weight.normal_()
    task.eval()
    images = torch.randn(4, 1, 32, 32)
    expected = task(images)
    state = {f"net.{k}": v for k, v in task.net.state_dict().items()}
    net_cfg = {"_target_": "vitrain.models.create_vit", "name": "vit_tiny_patch16_224",
               "img_size": 32, "in_chans": 1, "num_classes": 10, **VIT_ARCH}  # fmt: skip
    out = export_network({"state_dict": state, "vitrain": {"net": net_cfg}}, tmp_path / "export")
    config = json.loads((out / "config.json").read_text())
    plain = timm.create_model(config["name"], **config["kwargs"])
    plain.load_state_dict(load_file(out / "model.safetensors"))  # strict: the timm layout
    torch.testing.assert_close(plain.eval()(images), expected, rtol=1e-4, atol=1e-4)
