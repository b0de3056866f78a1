"""The MAE network: reference parameter counts, masking, encoder input, loss, fixed positions, learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from vitrain.errors import UserError
from vitrain.models import MaskedAutoencoderViT, create_mae
from vitrain.models.vit import count_parameters

# facebookresearch/mae (models_mae.py) at 224 px, 3 channels: every parameter, the frozen sin-cos
# position tables included. Huge: encoder 630,764,800 + decoder 26,309,708.
MAE_PARAMS = {
    "mae_vit_b16": 111_907_840,
    "mae_vit_l16": 329_541_888,
    "mae_vit_h14": 657_074_508,
}


def tiny(img_size: int = 32, **kwargs) -> MaskedAutoencoderViT:
    return create_mae("mae_vit_tiny", img_size=img_size, **kwargs)


@pytest.mark.parametrize("name", sorted(MAE_PARAMS))
def test_parameter_count_equals_reference(name):
    with torch.device("meta"):
        net = create_mae(name)
    total, trainable = count_parameters(net)
    assert total == MAE_PARAMS[name]
    assert total - trainable == net.pos_embed.numel() + net.decoder_pos_embed.numel()


def reference_sincos(embed_dim: int, grid: int) -> np.ndarray:
    """The reference MAE table: meshgrid(w, h) puts the column coordinate first; cls row zero."""
    coords = np.stack(np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32)))

    def one_d(dim, pos):
        omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
        out = np.outer(pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    table = np.concatenate([one_d(embed_dim // 2, coords[0]), one_d(embed_dim // 2, coords[1])], axis=1)
    return np.concatenate([np.zeros((1, embed_dim)), table], axis=0)


def test_pos_embeds_are_fixed_sincos_tables():
    net = tiny(img_size=32)  # 8x8 grid
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    for name, table in (("pos_embed", net.pos_embed), ("decoder_pos_embed", net.decoder_pos_embed)):
        assert isinstance(table, torch.nn.Parameter) and not table.requires_grad
        assert name not in trainable
        expected = torch.from_numpy(reference_sincos(table.shape[-1], 8)).float().unsqueeze(0)
        torch.testing.assert_close(table.detach(), expected, rtol=0, atol=1e-6)
    # a training step leaves them untouched
    before = net.pos_embed.detach().clone()
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=1.0)
    net(torch.randn(2, 3, 32, 32))[0].backward()
    opt.step()
    assert net.pos_embed.grad is None
    torch.testing.assert_close(net.pos_embed.detach(), before, rtol=0, atol=0)


def test_init_follows_reference():
    torch.manual_seed(0)
    net = tiny(img_size=32)
    for module in net.modules():
        if isinstance(module, torch.nn.LayerNorm):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0)
        elif isinstance(module, torch.nn.Linear):
            assert torch.all(module.bias == 0)
            bound = (6 / (module.in_features + module.out_features)) ** 0.5  # xavier uniform
            assert module.weight.abs().max() <= bound
            assert module.weight.abs().max() > 0.9 * bound
    w = net.patch_embed.proj.weight.flatten(1)
    assert w.abs().max() <= (6 / sum(w.shape)) ** 0.5
    for token in (net.cls_token, net.mask_token):
        assert 0.01 < token.std().item() < 0.03


def test_encoder_keys_load_into_timm_vit():
    net = tiny(img_size=32)
    encoder = {k: v for k, v in net.state_dict().items() if not k.startswith(("decoder_", "mask_token"))}
    vit = VisionTransformer(img_size=32, patch_size=4, embed_dim=192, depth=6, num_heads=3, num_classes=0)
    vit.load_state_dict(encoder, strict=True)


@pytest.mark.parametrize("ratio", [0.75, 0.5, 0.9, 0.0])
def test_random_masking(ratio):
    net = tiny(img_size=16)
    b, length, dim = 5, 64, 6
    keep = round(length * (1 - ratio))
    x = torch.randn(b, length, dim)
    noise = torch.rand(b, length)
    visible, mask, ids_restore = net.random_masking(x, ratio, noise=noise)
    assert visible.shape == (b, keep, dim)
    assert mask.shape == (b, length)
    assert torch.all(mask.sum(1) == length - keep)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    ids_shuffle = noise.argsort(1)
    shuffled = torch.gather(x, 1, ids_shuffle[..., None].expand(-1, -1, dim))
    # ids_restore undoes the shuffle; the visible tokens are the first of the shuffled ones
    torch.testing.assert_close(torch.gather(shuffled, 1, ids_restore[..., None].expand(-1, -1, dim)), x)
    torch.testing.assert_close(visible, shuffled[:, :keep])
    # the mask is 0 exactly where a token was kept
    kept = torch.zeros(b, length).scatter_(1, ids_shuffle[:, :keep], 1.0)
    torch.testing.assert_close(mask, 1 - kept)


def test_masks_differ_across_samples_and_calls():
    net = tiny(img_size=32)
    x = torch.randn(8, 64, 4)
    _, first, _ = net.random_masking(x, 0.75)
    _, second, _ = net.random_masking(x, 0.75)
    assert len({tuple(row.tolist()) for row in first}) == 8
    assert not torch.equal(first, second)


@pytest.mark.parametrize("ratio", [1.0, -0.1, 0.999])
def test_bad_mask_ratio_is_a_user_error(ratio):
    net = tiny(img_size=16)
    with pytest.raises(UserError, match="mask_ratio"):
        net(torch.zeros(1, 3, 16, 16), mask_ratio=ratio)
    with pytest.raises(UserError, match="model.net.mask_ratio"):
        tiny(img_size=16, mask_ratio=ratio)


def test_encoder_sees_only_visible_patches():
    net = tiny(img_size=32).eval()  # 64 patches, 16 visible
    seen = []
    net.blocks[0].register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    imgs = torch.randn(3, 3, 32, 32)
    noise = torch.rand(3, 64)
    latent, mask, ids_restore = net.forward_encoder(imgs, 0.75, noise)
    assert latent.shape == (3, 1 + 16, 192)
    assert seen == [torch.Size((3, 17, 192))]
    # changing the pixels of masked patches does not change the encoding
    pixel_mask = net.unpatchify(mask[..., None].expand(-1, -1, 4 * 4 * 3))
    latent2, mask2, _ = net.forward_encoder(imgs + 5 * pixel_mask * torch.randn_like(imgs), 0.75, noise)
    torch.testing.assert_close(mask2, mask)
    torch.testing.assert_close(latent2, latent)
    pred = net.forward_decoder(latent, ids_restore)
    assert pred.shape == (3, 64, 4 * 4 * 3)


@pytest.mark.parametrize("in_chans", [1, 3])
def test_patchify_round_trip(in_chans):
    net = tiny(img_size=32, in_chans=in_chans)
    imgs = torch.randn(2, in_chans, 32, 32)
    patches = net.patchify(imgs)
    assert patches.shape == (2, 64, 4 * 4 * in_chans)
    # patch (row 2, col 5): its pixels, channel last
    expected = imgs[:, :, 8:12, 20:24].permute(0, 2, 3, 1).reshape(2, -1)
    torch.testing.assert_close(patches[:, 2 * 8 + 5], expected, rtol=0, atol=0)
    assert torch.equal(net.unpatchify(patches), imgs)


def test_loss_counts_only_masked_patches():
    net = tiny(img_size=16, norm_pix_loss=False)
    imgs = torch.randn(4, 3, 16, 16)
    pred = torch.randn(4, 16, 48)
    _, mask, _ = net.random_masking(torch.zeros(4, 16, 1), 0.75)
    loss = net.forward_loss(imgs, pred, mask)
    target = net.patchify(imgs)
    manual = ((pred - target) ** 2).mean(-1)[mask.bool()].mean()
    torch.testing.assert_close(loss, manual)
    visible = ~mask.bool()
    changed = pred.clone()
    changed[visible] += 10 * torch.randn_like(changed[visible])
    torch.testing.assert_close(net.forward_loss(imgs, changed, mask), loss, rtol=0, atol=0)
    changed[mask.bool()] += 1.0
    assert net.forward_loss(imgs, changed, mask) != loss


def test_norm_pix_loss_normalises_each_target_patch():
    imgs = 3 + 2 * torch.randn(2, 3, 16, 16)
    pred = torch.randn(2, 16, 48)
    mask = torch.ones(2, 16)
    plain = tiny(img_size=16, norm_pix_loss=False)
    normed = tiny(img_size=16, norm_pix_loss=True)
    target = plain.patchify(imgs)
    target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    torch.testing.assert_close(normed.forward_loss(imgs, pred, mask), ((pred - target) ** 2).mean())
    assert not torch.isclose(plain.forward_loss(imgs, pred, mask), normed.forward_loss(imgs, pred, mask))


def test_loss_is_fp32_under_bf16_autocast():
    net = tiny(img_size=16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, pred, mask = net(torch.randn(2, 3, 16, 16))
    assert pred.dtype == torch.bfloat16  # the network itself ran in bf16
    assert loss.dtype == torch.float32 and loss.ndim == 0 and torch.isfinite(loss)
    assert mask.shape == (2, 16)
    loss.backward()
    assert torch.isfinite(net.decoder_pred.weight.grad).all()


def test_a_few_steps_lower_the_loss():
    torch.manual_seed(0)
    net = tiny(img_size=16, in_chans=1)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    imgs = torch.stack([torch.sin(3 * k * xx + yy * k) for k in torch.linspace(0.5, 2, 8)])[:, None]
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.0)

    def evaluate():
        torch.manual_seed(123)  # the same masks every time
        with torch.no_grad():
            return net(imgs)[0].item()

    before = evaluate()
    for _ in range(20):
        loss, _, _ = net(imgs)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = evaluate()
    assert after < 0.7 * before


def test_factory_names_and_overrides():
    with pytest.raises(UserError, match=r"model.net.name='mae_vit_x'.*mae_vit_b16, .*mae_vit_tiny"):
        create_mae("mae_vit_x")
    with pytest.raises(UserError, match="unknown MAE argument"):
        create_mae("mae_vit_tiny", img_size=32, wdith=3)
    with pytest.raises(UserError, match="embed_dim=256 is not divisible by num_heads=3"):
        create_mae("mae_vit_tiny", img_size=32, embed_dim=256)
    with pytest.raises(UserError, match="does not fit the patch size"):
        create_mae("mae_vit_b16", img_size=100)
    net = create_mae(
        "mae_vit_tiny",
        img_size=24,
        in_chans=2,
        mask_ratio=0.5,
        norm_pix_loss=False,
        patch_size=8,
        embed_dim=64,
        depth=2,
        num_heads=4,
        decoder_embed_dim=32,
        decoder_depth=1,
        decoder_num_heads=2,
    )
    assert (len(net.blocks), len(net.decoder_blocks)) == (2, 1)
    assert net.pos_embed.shape == (1, 1 + 9, 64) and net.decoder_pos_embed.shape == (1, 10, 32)
    assert net.blocks[0].attn.num_heads == 4 and net.decoder_blocks[0].attn.num_heads == 2
    assert net.decoder_pred.out_features == 8 * 8 * 2
    assert net.mask_ratio == 0.5 and not net.norm_pix_loss
    loss, pred, mask = net(torch.randn(2, 2, 24, 24))
    assert pred.shape == (2, 9, 128) and mask.sum(1).tolist() == [5.0, 5.0]  # round(4.5) = 4 visible
