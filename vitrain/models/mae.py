"""Masked Autoencoder (MAE, He et al. 2021, arXiv 2111.06377): a ViT encoder plus a light decoder.

The encoder is a timm-style ViT that sees only the visible (unmasked) patches; a narrower decoder
gets the encoded visible tokens plus a shared learned mask token at every masked position and
predicts the pixels of every patch. The loss is the mean squared error over the masked patches
only, optionally against per-patch normalised pixels (``norm_pix_loss``).

Both position embeddings are fixed 2-D sin-cos tables, stored as ``nn.Parameter`` with
``requires_grad=False`` (as the reference implementation does, so they count in
``model.parameters()``). Encoder parameters are named as in timm's ``VisionTransformer``
(``patch_embed.*``, ``cls_token``, ``pos_embed``, ``blocks.*``, ``norm.*``); decoder ones start
with ``decoder_``, plus ``mask_token``. Dropping ``decoder_*`` and ``mask_token`` therefore leaves
a state dict that a timm ViT (without head) accepts.

Variants of :func:`create_mae` (decoder: 512 wide, 8 deep, 16 heads for the paper sizes; parameter
counts at 224 px and 3 channels, equal to the reference ``facebookresearch/mae``):

============  =====  ======  =====  =====  ===================  ===========
name          patch  width   depth  heads  decoder w / d / h    parameters
============  =====  ======  =====  =====  ===================  ===========
mae_vit_b16   16     768     12     12     512 / 8 / 16         111,907,840
mae_vit_l16   16     1024    24     16     512 / 8 / 16         329,541,888
mae_vit_h14   14     1280    32     16     512 / 8 / 16         657,074,508
mae_vit_tiny  4      192     6      3      128 / 2 / 4          (small images)
============  =====  ======  =====  =====  ===================  ===========

``mae_vit_tiny`` is not from the paper: it is sized for CPU runs on small images (32 px digits or
CIFAR give an 8x8 grid of 4-px patches, 16 visible at mask ratio 0.75). The encoder has ViT-Ti's
width and heads at half its depth; the decoder keeps the paper's shape (narrower and shallower
than the encoder, 32-wide heads).
"""

from __future__ import annotations

import math
from functools import partial

import torch
from timm.layers import PatchEmbed, to_2tuple
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from vitrain.errors import UserError
from vitrain.models.registry import variant_args
from vitrain.models.sizes import check_image_size, patch_stages

__all__ = ["MAE_VARIANTS", "MaskedAutoencoderViT", "create_mae", "sincos_pos_embed_2d"]


def sincos_pos_embed_2d(
    embed_dim: int, grid_size: int | tuple[int, int], cls_token: bool = False, device=None
) -> Tensor:
    """The fixed 2-D sin-cos position table of MAE, ``(gh * gw [+ 1], embed_dim)`` in float64.

    Patches are numbered row-major over the ``(gh, gw)`` grid. The first half of the channels
    encodes the column (x) coordinate, the second half the row (y) coordinate, as in the
    reference implementation; each half is ``[sin(pos * w_k), cos(pos * w_k)]`` with
    ``w_k = 10000 ** (-k / (embed_dim / 4))``, ``k = 0 .. embed_dim / 4 - 1``. With
    ``cls_token`` a row of zeros is prepended.
    """
    if embed_dim % 4:
        raise ValueError(f"sin-cos position embedding needs embed_dim divisible by 4, got {embed_dim}")
    gh, gw = to_2tuple(grid_size)
    rows, cols = torch.meshgrid(
        torch.arange(gh, dtype=torch.float64, device=device),
        torch.arange(gw, dtype=torch.float64, device=device),
        indexing="ij",
    )
    quarter = embed_dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64, device=device) / quarter)

    def encode(pos: Tensor) -> Tensor:  # (M,) -> (M, embed_dim / 2)
        angles = pos.reshape(-1, 1) * omega
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    table = torch.cat([encode(cols), encode(rows)], dim=1)
    if cls_token:
        table = torch.cat([table.new_zeros(1, embed_dim), table], dim=0)
    return table


class MaskedAutoencoderViT(nn.Module):
    """MAE with a ViT encoder and a lightweight ViT decoder.

    Args:
        img_size: input size (int or ``(H, W)``); must be divisible by ``patch_size``.
        patch_size: side of a square patch, in pixels.
        in_chans: input channels.
        embed_dim, depth, num_heads: encoder width, number of blocks, attention heads.
        decoder_embed_dim, decoder_depth, decoder_num_heads: the same for the decoder.
        mlp_ratio: MLP hidden width / block width (encoder and decoder).
        mask_ratio: default fraction of patches masked per sample, in ``[0, 1)``.
        norm_pix_loss: regress per-patch normalised pixels (zero mean, unit variance).

    ``forward(imgs (B, in_chans, H, W))`` -> ``(loss (), pred (B, L, p*p*in_chans), mask (B, L))``,
    where ``L = (H / p) * (W / p)`` and ``mask`` is 1 at masked patches.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        decoder_embed_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        mlp_ratio: float = 4.0,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = False,
    ) -> None:
        super().__init__()
        check_mask_ratio(mask_ratio)
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss

        # encoder
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        num_patches = self.patch_embed.num_patches
        check_visible(num_patches, mask_ratio)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList(
            [
                Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
                for _ in range(depth)
            ]
        )
        self.norm = norm_layer(embed_dim)

        # decoder
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(
            torch.zeros(1, num_patches + 1, decoder_embed_dim), requires_grad=False
        )
        self.decoder_blocks = nn.ModuleList(
            [
                Block(decoder_embed_dim, decoder_num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
                for _ in range(decoder_depth)
            ]
        )
        self.decoder_norm = norm_layer(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size**2 * in_chans, bias=True)

        self.initialize_weights()

    @property
    def num_patches(self) -> int:
        """``L``, the number of patches per image."""
        return self.patch_embed.num_patches

    def initialize_weights(self) -> None:
        """The reference initialisation: sin-cos position tables, xavier-uniform linears and
        patch projection, LayerNorm (1, 0), cls and mask tokens N(0, 0.02)."""
        grid = self.patch_embed.grid_size
        for table in (self.pos_embed, self.decoder_pos_embed):
            if table.is_meta:  # built on the meta device: there is nothing to fill
                continue
            values = sincos_pos_embed_2d(table.shape[-1], grid, cls_token=True, device=table.device)
            with torch.no_grad():
                table.copy_(values.to(table.dtype).unsqueeze(0))
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))  # as an nn.Linear on flattened patches
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        self.apply(_init_module)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameters without weight decay besides biases and norms: none. As the reference
        (facebookresearch/mae ``main_pretrain.py``: timm ``add_weight_decay`` without a skip
        list), ``cls_token`` and ``mask_token`` are decayed; the fixed position tables are frozen
        and so in no group."""
        return set()

    # ------------------------------------------------------------------ patches
    def patchify(self, imgs: Tensor) -> Tensor:
        """Images ``(B, C, H, W)`` -> patches ``(B, L, p*p*C)``, row-major over the patch grid;
        each patch is flattened as ``(p_row, p_col, channel)`` (channel last, as the reference)."""
        p = self.patch_size
        b, c, h, w = imgs.shape
        if h % p or w % p:
            raise ValueError(f"image size {h}x{w} is not divisible by the patch size {p}")
        x = imgs.reshape(b, c, h // p, p, w // p, p)
        x = torch.einsum("bchpwq->bhwpqc", x)
        return x.reshape(b, (h // p) * (w // p), p * p * c)

    def unpatchify(self, x: Tensor, grid_size: tuple[int, int] | None = None) -> Tensor:
        """Patches ``(B, L, p*p*C)`` -> images ``(B, C, H, W)``; the inverse of :meth:`patchify`.

        ``grid_size`` ``(H / p, W / p)`` defaults to the network's patch grid.
        """
        p = self.patch_size
        gh, gw = grid_size or self.patch_embed.grid_size
        b, length, dim = x.shape
        c = dim // (p * p)
        if length != gh * gw or dim != p * p * c:
            raise ValueError(
                f"patches of shape {tuple(x.shape)} do not fit a {gh}x{gw} grid of {p}-px patches"
            )
        x = x.reshape(b, gh, gw, p, p, c)
        x = torch.einsum("bhwpqc->bchpwq", x)
        return x.reshape(b, c, gh * p, gw * p)

    # ------------------------------------------------------------------ masking
    @staticmethod
    def num_visible(length: int, mask_ratio: float) -> int:
        """Visible patches per sample: ``round(L * (1 - mask_ratio))``.

        (The reference truncates with ``int()``; rounding gives the same count whenever
        ``L * (1 - mask_ratio)`` is whole and avoids float artefacts such as
        ``int(100 * (1 - 0.9)) == 9``.)
        """
        return round(length * (1 - mask_ratio))

    def random_masking(
        self, x: Tensor, mask_ratio: float, noise: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Per-sample random masking by sorting uniform noise.

        Args:
            x: tokens ``(B, L, D)``.
            mask_ratio: fraction of the ``L`` tokens to drop, in ``[0, 1)``.
            noise: optional ``(B, L)`` noise; the tokens with the smallest noise are kept.
                Default: fresh ``torch.rand`` (so masks differ per sample and per call).

        Returns:
            ``x_visible (B, K, D)`` with ``K = round(L * (1 - mask_ratio))`` in shuffled order,
            ``mask (B, L)`` float, 1 = masked, 0 = visible, in the original patch order, and
            ``ids_restore (B, L)`` such that gathering a shuffled sequence (visible tokens
            followed by masked ones) with it restores the original order.
        """
        check_mask_ratio(mask_ratio)
        b, length, dim = x.shape
        keep = check_visible(length, mask_ratio)
        if noise is None:
            noise = torch.rand(b, length, device=x.device)
        ids_shuffle = torch.argsort(noise, dim=1)  # ascending: small noise is kept
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :keep]
        x_visible = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, dim))
        mask = torch.ones(b, length, device=x.device)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        return x_visible, mask, ids_restore

    # ------------------------------------------------------------------ encoder / decoder
    def forward_encoder(
        self, imgs: Tensor, mask_ratio: float, noise: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Images ``(B, C, H, W)`` -> ``latent (B, 1 + K, D)`` (cls token first, then the ``K``
        visible patches), ``mask (B, L)`` and ``ids_restore (B, L)`` (see :meth:`random_masking`;
        ``noise (B, L)`` fixes the masks, default random)."""
        x = self.patch_embed(imgs)  # (B, L, D)
        x = x + self.pos_embed[:, 1:, :]
        x, mask, ids_restore = self.random_masking(x, mask_ratio, noise)
        cls = self.cls_token + self.pos_embed[:, :1, :]
        x = torch.cat([cls.expand(x.shape[0], -1, -1), x], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x), mask, ids_restore

    def forward_decoder(self, latent: Tensor, ids_restore: Tensor) -> Tensor:
        """``latent (B, 1 + K, D)`` and ``ids_restore (B, L)`` -> pixel predictions
        ``(B, L, p*p*C)`` for every patch, in the original patch order (cls token dropped)."""
        x = self.decoder_embed(latent)  # (B, 1 + K, Dd)
        b, length = ids_restore.shape
        dim = x.shape[-1]
        mask_tokens = self.mask_token.to(x.dtype).expand(b, length + 1 - x.shape[1], -1)
        patches = torch.cat([x[:, 1:, :], mask_tokens], dim=1)  # (B, L, Dd), shuffled order
        patches = torch.gather(patches, 1, ids_restore.unsqueeze(-1).expand(-1, -1, dim))
        x = torch.cat([x[:, :1, :], patches], dim=1) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            x = block(x)
        x = self.decoder_pred(self.decoder_norm(x))
        return x[:, 1:, :]

    def forward_loss(self, imgs: Tensor, pred: Tensor, mask: Tensor) -> Tensor:
        """Mean squared error over the masked patches only, in float32 (autocast off).

        Args:
            imgs: ``(B, C, H, W)``.
            pred: ``(B, L, p*p*C)``.
            mask: ``(B, L)``, 1 = masked (counted), 0 = visible (ignored).

        With ``norm_pix_loss`` each target patch is normalised by its own mean and (unbiased)
        variance: ``(t - mean) / sqrt(var + 1e-6)``. Returns a float32 scalar (0 if nothing is
        masked).
        """
        with torch.autocast(device_type=imgs.device.type, enabled=False):
            target = self.patchify(imgs.float())
            if self.norm_pix_loss:
                mean = target.mean(dim=-1, keepdim=True)
                var = target.var(dim=-1, keepdim=True)
                target = (target - mean) / (var + 1e-6) ** 0.5
            per_patch = (pred.float() - target).pow(2).mean(dim=-1)  # (B, L)
            mask = mask.float()
            return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)

    def forward(
        self, imgs: Tensor, mask_ratio: float | None = None, noise: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``imgs (B, C, H, W)`` -> ``(loss (), pred (B, L, p*p*C), mask (B, L))``.

        ``mask_ratio`` defaults to the one given at construction; ``noise (B, L)`` fixes the
        masks (the patches with the smallest noise stay visible), default fresh random noise.
        """
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        latent, mask, ids_restore = self.forward_encoder(imgs, ratio, noise)
        pred = self.forward_decoder(latent, ids_restore)
        loss = self.forward_loss(imgs, pred, mask)
        return loss, pred, mask


def _init_module(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def check_visible(length: int, mask_ratio: float) -> int:
    """The number of visible patches of ``length``; :class:`UserError` if there is none."""
    keep = MaskedAutoencoderViT.num_visible(length, mask_ratio)
    if keep < 1:
        raise UserError(f"model.net.mask_ratio={mask_ratio} leaves no visible patch of {length}: lower it.")
    return keep


def check_mask_ratio(mask_ratio: float) -> None:
    """Raise :class:`UserError` unless ``0 <= mask_ratio < 1``."""
    if not (isinstance(mask_ratio, int | float) and 0 <= mask_ratio < 1) or math.isnan(mask_ratio):
        raise UserError(f"model.net.mask_ratio={mask_ratio!r}: must be a number in [0, 1).")


_PAPER_DECODER = dict(decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16, mlp_ratio=4.0)

MAE_VARIANTS: dict[str, dict] = {
    "mae_vit_b16": dict(patch_size=16, embed_dim=768, depth=12, num_heads=12, **_PAPER_DECODER),
    "mae_vit_l16": dict(patch_size=16, embed_dim=1024, depth=24, num_heads=16, **_PAPER_DECODER),
    "mae_vit_h14": dict(patch_size=14, embed_dim=1280, depth=32, num_heads=16, **_PAPER_DECODER),
    "mae_vit_tiny": dict(
        patch_size=4,
        embed_dim=192,
        depth=6,
        num_heads=3,
        decoder_embed_dim=128,
        decoder_depth=2,
        decoder_num_heads=4,
        mlp_ratio=4.0,
    ),
}

_ARCH_KEYS = (
    "patch_size",
    "embed_dim",
    "depth",
    "num_heads",
    "decoder_embed_dim",
    "decoder_depth",
    "decoder_num_heads",
    "mlp_ratio",
)


def create_mae(
    name: str,
    img_size: int | tuple[int, int] = 224,
    in_chans: int = 3,
    mask_ratio: float = 0.75,
    norm_pix_loss: bool = True,
    **overrides,
) -> MaskedAutoencoderViT:
    """Build the MAE variant ``name`` (see the module docstring for the table).

    Args:
        name: ``mae_vit_b16``, ``mae_vit_l16``, ``mae_vit_h14`` or ``mae_vit_tiny``.
        img_size, in_chans, mask_ratio, norm_pix_loss: see :class:`MaskedAutoencoderViT`.
        **overrides: any architecture argument of the variant (``embed_dim``, ``depth``,
            ``num_heads``, ``patch_size``, ``decoder_embed_dim``, ``decoder_depth``,
            ``decoder_num_heads``, ``mlp_ratio``).

    Input ``(B, in_chans, img_size, img_size)`` -> ``(loss, pred, mask)``.
    """
    arch = variant_args("MAE", name, MAE_VARIANTS, _ARCH_KEYS, overrides)
    check_image_size(
        img_size, patch_stages(arch["patch_size"]), f"the patch size {arch['patch_size']} of {name}"
    )
    for key in ("embed_dim", "decoder_embed_dim"):
        if arch[key] % 4:
            raise UserError(f"model.net.{key}={arch[key]}: must be divisible by 4 (2-D sin-cos positions).")
    for width, heads in (("embed_dim", "num_heads"), ("decoder_embed_dim", "decoder_num_heads")):
        if arch[width] % arch[heads]:
            raise UserError(
                f"model.net.{width}={arch[width]} is not divisible by {heads}={arch[heads]} of {name}."
            )
    return MaskedAutoencoderViT(
        img_size=img_size, in_chans=in_chans, mask_ratio=mask_ratio, norm_pix_loss=norm_pix_loss, **arch
    )
