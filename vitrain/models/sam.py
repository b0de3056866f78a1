"""Segment Anything (SAM, Kirillov et al. 2023, arXiv 2304.02643): promptable segmentation.

Three parts, named and shaped as in the reference code (facebookresearch/segment-anything,
``modeling/image_encoder.py``, ``prompt_encoder.py``, ``mask_decoder.py``, ``transformer.py``)
so that the official checkpoints load strictly (``image_encoder.*``, ``prompt_encoder.*``,
``mask_decoder.*``):

* :class:`ImageEncoderViT`: a plain ViT (patch 16) whose blocks attend inside non-overlapping
  windows (14 x 14 tokens, the grid padded to a multiple of the window) except a few global
  blocks; every block adds decomposed relative position terms (MViTv2) to its attention
  logits; an absolute position table is added after the patch embedding. A neck maps the
  tokens to the 256-channel image embedding ``(B, 256, H/16, W/16)``.
* :class:`PromptEncoder`: points and box corners become random-Fourier position encodings
  (coordinates shifted to pixel centres, +0.5) plus a learned embedding per kind (background
  point, foreground point, top-left corner, bottom-right corner, padding point); a dense mask
  prompt (4x the embedding grid) goes through a small strided conv stack; without one a learned
  "no mask" vector is broadcast over the grid.
* :class:`MaskDecoder`: a two-way transformer (tokens attend to the image and the image to the
  tokens) over an IoU token, 4 mask tokens and the prompt tokens; the image embedding is
  upscaled 4x by two transposed convolutions and each mask token's hypernetwork MLP turns into
  a per-pixel dot product: low-resolution mask logits ``(N, M, 4h, 4w)``. Mask token 0 is the
  single-mask output, tokens 1..3 the multimask (ambiguity-aware) outputs.

Variants (``SAM_VARIANTS``; prompt width 256, decoder depth 2, 8 heads, MLP 2048; parameters at
1024 px, equal to the reference ``segment_anything.build_sam`` (tested when installed)):

==========  =====  =====  =====  ==============  ===========
name        width  depth  heads  global blocks   parameters
==========  =====  =====  =====  ==============  ===========
sam_vit_b   768    12     12     2, 5, 8, 11     93,735,472
sam_vit_l   1024   24     16     5, 11, 17, 23   312,342,832
sam_vit_h   1280   32     16     7, 15, 23, 31   641,090,608
sam_tiny    192    6      3      2, 5            (64 px images, patch 4; see below)
==========  =====  =====  =====  ==============  ===========

``sam_tiny`` is not from the paper: it is sized for CPU runs on the 64 px ``data=shapes`` images.
Its image encoder has the shape of ``mae_vit_tiny`` (patch 4, 192 wide, 6 deep, 3 heads), so an
MAE pretraining of that model initialises it (``init_from``); windows of 8 tokens on the 16 x 16
grid with two global blocks; prompt width 64, decoder MLP 256, 4 heads.

Inputs of the network are images already resized on the long side to ``image_size``,
normalised with ``pixel_mean`` / ``pixel_std`` (0-255 scale, the reference's ImageNet values)
and zero-padded bottom-right to ``image_size`` square; :meth:`SAM.preprocess` does the last two
steps for raw images. Prompt coordinates are pixels of that resized frame.

This module is the network alone. ``vitrain.models.sam_weights`` builds a variant
(:func:`~vitrain.models.sam_weights.create_sam`, the ``model.net`` factory) and reads its weights:
official and vitrain checkpoints, Hugging Face ``SamModel`` files, an MAE encoder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as grad_checkpoint

__all__ = ["SAM", "SAM_VARIANTS", "SamConfig", "PIXEL_MEAN", "PIXEL_STD"]

# the reference normalisation (ImageNet mean / std on the 0-255 scale)
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass
class SamConfig:
    """The architecture of a SAM network (defaults: SAM ViT-B at 1024 px)."""

    image_size: int = 1024
    patch_size: int = 16
    in_chans: int = 3
    encoder_embed_dim: int = 768
    encoder_depth: int = 12
    encoder_num_heads: int = 12
    encoder_global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    window_size: int = 14
    mlp_ratio: float = 4.0
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_num_heads: int = 8
    decoder_mlp_dim: int = 2048
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    drop_path: float = 0.0
    pixel_mean: tuple[float, ...] = field(default=PIXEL_MEAN)
    pixel_std: tuple[float, ...] = field(default=PIXEL_STD)

    @property
    def grid(self) -> int:
        """Side of the image-embedding grid (``image_size / patch_size``)."""
        return self.image_size // self.patch_size


# ------------------------------------------------------------------------------- common blocks
class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a ``(B, C, H, W)`` map (eps 1e-6, as the reference)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class MLPBlock(nn.Module):
    """``lin1 -> act -> lin2``, the feed-forward of both transformers."""

    def __init__(self, dim: int, hidden: int, act: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)
        self.act = act()

    def forward(self, x: Tensor) -> Tensor:
        return self.lin2(self.act(self.lin1(x)))


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them (hypernetworks, IoU head)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


# ------------------------------------------------------------------------------- image encoder
class PatchEmbed(nn.Module):
    """``(B, C, H, W)`` -> ``(B, H/p, W/p, D)`` (channels last, as the encoder's blocks want)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


def rel_pos_table(q_size: int, k_size: int, rel_pos: Tensor) -> Tensor:
    """The relative-position vectors of every (query, key) pair along one axis: ``(q, k, C)``.

    ``rel_pos (L, C)`` holds one vector per offset; a table of another length than
    ``2 * max(q, k) - 1`` is linearly resized first (the reference's behaviour).
    """
    length = 2 * max(q_size, k_size) - 1
    if rel_pos.shape[0] != length:
        rel_pos = F.interpolate(rel_pos.t()[None], size=length, mode="linear")[0].t()
    q = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    offsets = (q - k) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[offsets.long()]


class Attention(nn.Module):
    """Multi-head self-attention over a ``(B, H, W, D)`` grid with decomposed relative positions:
    ``logit(q, k) += q . Rh[qh - kh] + q . Rw[qw - kw]`` (tables zero-initialised, size
    ``2 * side - 1`` per axis, where ``side`` is the window or, for a global block, the grid)."""

    def __init__(self, dim: int, num_heads: int, input_size: tuple[int, int]) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))

    def forward(self, x: Tensor) -> Tensor:
        B, H, W, D = x.shape
        qkv = self.qkv(x).reshape(B, H * W, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, heads, HW, hd)
        rh = rel_pos_table(H, H, self.rel_pos_h).to(q.dtype)  # (H, H, hd)
        rw = rel_pos_table(W, W, self.rel_pos_w).to(q.dtype)  # (W, W, hd)
        rq = q.reshape(B, self.num_heads, H, W, -1)
        rel_h = torch.einsum("bnhwc,hkc->bnhwk", rq, rh)  # (B, heads, H, W, kH)
        rel_w = torch.einsum("bnhwc,wkc->bnhwk", rq, rw)  # (B, heads, H, W, kW)
        bias = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(B, self.num_heads, H * W, H * W)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, heads, HW, hd)
        return self.proj(out.transpose(1, 2).reshape(B, H, W, D))


def window_partition(x: Tensor, window: int) -> tuple[Tensor, tuple[int, int]]:
    """``(B, H, W, C)`` -> windows ``(B * nW, window, window, C)`` (grid zero-padded at the
    bottom/right to a multiple of ``window``) and the padded size ``(Hp, Wp)``."""
    B, H, W, C = x.shape
    pad_h, pad_w = (window - H % window) % window, (window - W % window) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    Hp, Wp = H + pad_h, W + pad_w
    x = x.view(B, Hp // window, window, Wp // window, window, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, C), (Hp, Wp)


def window_unpartition(
    windows: Tensor, window: int, padded: tuple[int, int], size: tuple[int, int]
) -> Tensor:
    """The inverse of :func:`window_partition`: ``(B * nW, w, w, C)`` -> ``(B, H, W, C)``."""
    Hp, Wp = padded
    H, W = size
    B = windows.shape[0] // (Hp * Wp // window // window)
    x = windows.view(B, Hp // window, Wp // window, window, window, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, -1)
    return x[:, :H, :W].contiguous()


class Block(nn.Module):
    """Pre-norm transformer block on a ``(B, H, W, D)`` grid, attention windowed when
    ``window_size > 0`` (global otherwise); stochastic depth on both residual branches."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float, window_size: int, grid: int, drop_path: float
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        side = window_size if window_size > 0 else grid
        self.attn = Attention(dim, num_heads, (side, side))
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio))
        self.window_size = window_size
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            size = (x.shape[1], x.shape[2])
            x, padded = window_partition(x, self.window_size)
            x = window_unpartition(self.attn(x), self.window_size, padded, size)
        else:
            x = self.attn(x)
        x = shortcut + self.drop_path(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ImageEncoderViT(nn.Module):
    """``(B, in_chans, S, S)`` normalised, padded images -> embeddings ``(B, C, S/p, S/p)``."""

    def __init__(self, cfg: SamConfig) -> None:
        super().__init__()
        self.img_size = cfg.image_size
        dim, grid = cfg.encoder_embed_dim, cfg.grid
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, dim))
        rates = [cfg.drop_path * i / max(cfg.encoder_depth - 1, 1) for i in range(cfg.encoder_depth)]
        self.blocks = nn.ModuleList(
            Block(
                dim,
                cfg.encoder_num_heads,
                cfg.mlp_ratio,
                0 if i in cfg.encoder_global_attn_indexes else cfg.window_size,
                grid,
                rates[i],
            )
            for i in range(cfg.encoder_depth)
        )
        out = cfg.prompt_embed_dim
        self.neck = nn.Sequential(
            nn.Conv2d(dim, out, kernel_size=1, bias=False),
            LayerNorm2d(out),
            nn.Conv2d(out, out, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out),
        )
        self.grad_checkpointing = False

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x) + self.pos_embed
        for block in self.blocks:
            if self.grad_checkpointing and self.training:
                x = grad_checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))


# ------------------------------------------------------------------------------ prompt encoder
class PositionEmbeddingRandom(nn.Module):
    """Random-Fourier position encoding (Tancik et al. 2020): ``[sin, cos](2 pi (2 x - 1) G)``
    for coordinates ``x`` in [0, 1]^2 and a fixed Gaussian matrix ``G (2, C/2)`` (a buffer)."""

    def __init__(self, num_pos_feats: int) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_pos_feats))

    def encode(self, coords: Tensor) -> Tensor:
        """``(..., 2)`` normalised (x, y) -> ``(..., C)``."""
        coords = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: tuple[int, int]) -> Tensor:
        """The encoding of every cell centre of an ``(h, w)`` grid: ``(C, h, w)``."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        y = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        x = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        grid = torch.stack([x[None, :].expand(h, w), y[:, None].expand(h, w)], dim=-1)
        return self.encode(grid).permute(2, 0, 1)

    def forward_with_coords(self, coords: Tensor, image_size: tuple[int, int]) -> Tensor:
        """Pixel coordinates ``(N, K, 2)`` (x, y) of an ``image_size (H, W)`` frame -> ``(N, K, C)``."""
        scale = coords.new_tensor([image_size[1], image_size[0]])
        return self.encode(coords.float() / scale)


class PromptEncoder(nn.Module):
    """Points, boxes and masks -> sparse ``(N, K, C)`` and dense ``(N, C, h, w)`` embeddings.

    ``point_embeddings``: 0 background point, 1 foreground point, 2 box top-left, 3 box
    bottom-right; ``not_a_point_embed`` for padding points (label -1).
    """

    def __init__(self, cfg: SamConfig) -> None:
        super().__init__()
        dim = cfg.prompt_embed_dim
        self.embed_dim = dim
        self.image_embedding_size = (cfg.grid, cfg.grid)
        self.input_image_size = (cfg.image_size, cfg.image_size)
        self.pe_layer = PositionEmbeddingRandom(dim // 2)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, dim)
        self.mask_input_size = (4 * cfg.grid, 4 * cfg.grid)
        c = cfg.mask_in_chans
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, c // 4, kernel_size=2, stride=2),
            LayerNorm2d(c // 4),
            nn.GELU(),
            nn.Conv2d(c // 4, c, kernel_size=2, stride=2),
            LayerNorm2d(c),
            nn.GELU(),
            nn.Conv2d(c, dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, dim)

    def get_dense_pe(self) -> Tensor:
        """The position encoding of the image-embedding grid: ``(1, C, h, w)``."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def embed_points(self, points: Tensor, labels: Tensor, pad: bool) -> Tensor:
        """``points (N, K, 2)`` pixels (x, y), ``labels (N, K)`` (1 fg, 0 bg, -1 padding) ->
        ``(N, K (+1 padding point when pad), C)``."""
        points = points.float() + 0.5  # pixel centres
        if pad:
            points = torch.cat([points, points.new_zeros(points.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, labels.new_full((labels.shape[0], 1), -1)], dim=1)
        emb = self.pe_layer.forward_with_coords(points, self.input_image_size)
        labels = labels[..., None]
        emb = torch.where(labels == -1, self.not_a_point_embed.weight.to(emb.dtype), emb)
        emb = (
            emb
            + (labels == 0) * self.point_embeddings[0].weight
            + (labels == 1) * self.point_embeddings[1].weight
        )
        return emb

    def embed_boxes(self, boxes: Tensor) -> Tensor:
        """``boxes (N, 4)`` pixels xyxy -> corner embeddings ``(N, 2, C)``."""
        corners = (boxes.float() + 0.5).reshape(-1, 2, 2)
        emb = self.pe_layer.forward_with_coords(corners, self.input_image_size)
        corner = torch.stack([self.point_embeddings[2].weight[0], self.point_embeddings[3].weight[0]])
        return emb + corner

    def forward(
        self,
        points: tuple[Tensor, Tensor] | None = None,
        boxes: Tensor | None = None,
        masks: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Prompts for ``N`` objects -> ``(sparse (N, K, C), dense (N, C, h, w))``.

        ``points``: ``(coords (N, K, 2), labels (N, K))``; ``boxes (N, 4)``; ``masks (N, 1,
        4h, 4w)`` low-resolution mask logits (a previous prediction). Without a box the points
        get one padding point, as the reference.
        """
        n = (
            points[0].shape[0]
            if points is not None
            else boxes.shape[0]
            if boxes is not None
            else (masks.shape[0] if masks is not None else 1)
        )
        weight = self.no_mask_embed.weight
        sparse = weight.new_zeros(n, 0, self.embed_dim)
        if points is not None:
            sparse = torch.cat([sparse, self.embed_points(points[0], points[1], pad=boxes is None)], dim=1)
        if boxes is not None:
            sparse = torch.cat([sparse, self.embed_boxes(boxes)], dim=1)
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            dense = weight.reshape(1, -1, 1, 1).expand(n, -1, *self.image_embedding_size)
        return sparse, dense


# -------------------------------------------------------------------------------- mask decoder
class DecoderAttention(nn.Module):
    """Attention with q/k/v projected to ``dim / downsample_rate`` channels (the two-way
    transformer's cross-attentions use 2)."""

    def __init__(self, dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        inner = dim // downsample_rate
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, inner)
        self.k_proj = nn.Linear(dim, inner)
        self.v_proj = nn.Linear(dim, inner)
        self.out_proj = nn.Linear(inner, dim)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """``q (N, Lq, D)``, ``k, v (N, Lk, D)`` -> ``(N, Lq, D)``."""
        n = q.shape[0]

        def heads(x: Tensor) -> Tensor:
            return x.reshape(n, x.shape[1], self.num_heads, -1).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            heads(self.q_proj(q)), heads(self.k_proj(k)), heads(self.v_proj(v))
        )
        return self.out_proj(out.transpose(1, 2).reshape(n, q.shape[1], -1))


class TwoWayAttentionBlock(nn.Module):
    """Token self-attention, tokens -> image cross-attention, token MLP, image -> tokens
    cross-attention; post-norm after each (the first block's self-attention without the
    tokens' position encoding and without a residual, as the reference)."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, skip_first_layer_pe: bool) -> None:
        super().__init__()
        self.self_attn = DecoderAttention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = DecoderAttention(dim, num_heads, 2)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, mlp_dim, nn.ReLU)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = DecoderAttention(dim, num_heads, 2)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self, queries: Tensor, keys: Tensor, query_pe: Tensor, key_pe: Tensor
    ) -> tuple[Tensor, Tensor]:
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)
        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))
        queries = self.norm3(queries + self.mlp(queries))
        q, k = queries + query_pe, keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """``depth`` two-way blocks and a final token -> image attention."""

    def __init__(self, depth: int, dim: int, num_heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(dim, num_heads, mlp_dim, skip_first_layer_pe=i == 0) for i in range(depth)
        )
        self.final_attn_token_to_image = DecoderAttention(dim, num_heads, 2)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(self, image: Tensor, image_pe: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """``image, image_pe (N, C, h, w)``, ``tokens (N, T, C)`` -> ``(tokens (N, T, C),
        image (N, h*w, C))``."""
        keys = image.flatten(2).transpose(1, 2)
        key_pe = image_pe.flatten(2).transpose(1, 2)
        queries = tokens
        for layer in self.layers:
            queries, keys = layer(queries, keys, tokens, key_pe)
        q, k = queries + tokens, keys + key_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q, k, keys))
        return queries, keys


class MaskDecoder(nn.Module):
    """Image embedding + prompt embeddings -> mask logits ``(N, M, 4h, 4w)`` and IoU ``(N, M)``."""

    def __init__(self, cfg: SamConfig) -> None:
        super().__init__()
        dim = cfg.prompt_embed_dim
        self.transformer = TwoWayTransformer(
            cfg.decoder_depth, dim, cfg.decoder_num_heads, cfg.decoder_mlp_dim
        )
        self.num_mask_tokens = cfg.num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(dim, cfg.iou_head_hidden_dim, self.num_mask_tokens, cfg.iou_head_depth)

    def forward(
        self,
        image_embeddings: Tensor,
        image_pe: Tensor,
        sparse_prompt_embeddings: Tensor,
        dense_prompt_embeddings: Tensor,
        multimask_output: bool,
    ) -> tuple[Tensor, Tensor]:
        """``image_embeddings (N or 1, C, h, w)`` (one per object, or one shared by all),
        ``image_pe (1, C, h, w)``, ``sparse (N, K, C)``, ``dense (N, C, h, w)`` -> mask logits
        ``(N, 3 or 1, 4h, 4w)`` and IoU predictions ``(N, 3 or 1)`` (multimask: tokens 1..3;
        single: token 0)."""
        masks, iou = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
        keep = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, keep], iou[:, keep]

    def predict_masks(
        self, image: Tensor, image_pe: Tensor, sparse: Tensor, dense: Tensor
    ) -> tuple[Tensor, Tensor]:
        """All ``M = 4`` outputs: ``(masks (N, 4, 4h, 4w), iou (N, 4))``."""
        n = sparse.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(n, -1, -1).to(sparse.dtype), sparse], dim=1)
        src = image.expand(n, -1, -1, -1) if image.shape[0] == 1 else image
        src = src + dense
        pos = image_pe.expand(n, -1, -1, -1)
        b, c, h, w = src.shape
        hs, src = self.transformer(src, pos, tokens)
        iou_out, mask_out = hs[:, 0], hs[:, 1 : 1 + self.num_mask_tokens]
        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        hyper = torch.stack(
            [mlp(mask_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        b, c, h, w = upscaled.shape
        masks = (hyper @ upscaled.reshape(b, c, h * w)).reshape(b, -1, h, w)
        return masks, self.iou_prediction_head(iou_out)


# ------------------------------------------------------------------------------------ network
class SAM(nn.Module):
    """Segment Anything: image encoder, prompt encoder and mask decoder.

    The expensive part, :meth:`encode`, runs once per image; :meth:`decode` runs per set of
    prompts (one object each) on those embeddings.
    """

    def __init__(self, cfg: SamConfig) -> None:
        super().__init__()
        self.config = cfg
        self.image_encoder = ImageEncoderViT(cfg)
        self.prompt_encoder = PromptEncoder(cfg)
        self.mask_decoder = MaskDecoder(cfg)
        self.register_buffer("pixel_mean", torch.tensor(cfg.pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.pixel_std).view(-1, 1, 1), persistent=False)
        # initialisation: PyTorch's defaults, as the reference (which has no init function): the
        # position tables start at zero, the Fourier matrix standard normal. (A truncated-normal
        # 0.02 init of the linears left sam_tiny at an all-background plateau for longer.)

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def low_res_size(self) -> int:
        """Side of the low-resolution mask logits (4x the embedding grid; 256 at 1024 px)."""
        return 4 * self.config.grid

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameters without weight decay besides biases and norms: the position tables."""
        return {"pos_embed", "rel_pos_h", "rel_pos_w"}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.image_encoder.grad_checkpointing = enable

    def preprocess(self, images: Tensor) -> Tensor:
        """Raw ``(B, 3, h, w)`` images (0-255, long side already ``image_size``) -> normalised and
        zero-padded bottom-right to ``(B, 3, image_size, image_size)``."""
        x = (images - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        return F.pad(x, (0, self.image_size - w, 0, self.image_size - h))

    def encode(self, images: Tensor) -> Tensor:
        """Preprocessed ``(B, 3, S, S)`` -> image embeddings ``(B, C, S/p, S/p)``."""
        return self.image_encoder(images)

    def decode(
        self,
        embeddings: Tensor,
        points: tuple[Tensor, Tensor] | None = None,
        boxes: Tensor | None = None,
        mask_inputs: Tensor | None = None,
        multimask_output: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """Masks for ``N`` objects: ``embeddings (N or 1, C, h, w)`` and each object's prompts
        (see :meth:`PromptEncoder.forward`) -> ``(low-res logits (N, M, 4h, 4w), iou (N, M))``,
        ``M`` 3 with ``multimask_output``, else 1."""
        sparse, dense = self.prompt_encoder(points, boxes, mask_inputs)
        return self.mask_decoder(
            embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output
        )

    def forward(
        self,
        images: Tensor,
        points: tuple[Tensor, Tensor] | None = None,
        boxes: Tensor | None = None,
        mask_inputs: Tensor | None = None,
        image_index: Tensor | None = None,
        multimask_output: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """``images (B, 3, S, S)`` preprocessed; prompts for ``N`` objects, object ``i`` on image
        ``image_index[i]`` (default: ``N == B``, one object per image) -> as :meth:`decode`."""
        embeddings = self.encode(images)
        if image_index is not None:
            embeddings = embeddings[image_index]
        return self.decode(embeddings, points, boxes, mask_inputs, multimask_output)

    def postprocess_masks(
        self, masks: Tensor, input_size: tuple[int, int], original_size: tuple[int, int]
    ) -> Tensor:
        """Low-res logits ``(N, M, 4h, 4w)`` -> logits at ``original_size (H, W)``: upsampled to
        the padded input, the padding cropped (``input_size``: the resized image), then resized."""
        masks = F.interpolate(masks, (self.image_size, self.image_size), mode="bilinear", align_corners=False)
        masks = masks[..., : input_size[0], : input_size[1]]
        return F.interpolate(masks, original_size, mode="bilinear", align_corners=False)


# ----------------------------------------------------------------------------------- variants
_PAPER = dict(image_size=1024, patch_size=16, window_size=14, prompt_embed_dim=256)
SAM_VARIANTS: dict[str, dict] = {
    "sam_vit_b": dict(
        **_PAPER, encoder_embed_dim=768, encoder_depth=12, encoder_num_heads=12,
        encoder_global_attn_indexes=(2, 5, 8, 11),
    ),
    "sam_vit_l": dict(
        **_PAPER, encoder_embed_dim=1024, encoder_depth=24, encoder_num_heads=16,
        encoder_global_attn_indexes=(5, 11, 17, 23),
    ),
    "sam_vit_h": dict(
        **_PAPER, encoder_embed_dim=1280, encoder_depth=32, encoder_num_heads=16,
        encoder_global_attn_indexes=(7, 15, 23, 31),
    ),
    "sam_tiny": dict(
        image_size=64, patch_size=4, window_size=8, encoder_embed_dim=192, encoder_depth=6,
        encoder_num_heads=3, encoder_global_attn_indexes=(2, 5), prompt_embed_dim=64,
        decoder_num_heads=4, decoder_mlp_dim=256, iou_head_hidden_dim=64,
    ),
}  # fmt: skip
