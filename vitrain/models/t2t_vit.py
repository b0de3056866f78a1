"""T2T-ViT: Tokens-to-Token Vision Transformer (Yuan et al. 2021, arXiv 2101.11986).

Instead of cutting the image into fixed 16x16 patches, a Tokens-to-Token (T2T) module builds the
tokens progressively: three *soft splits* (overlapping ``nn.Unfold`` windows of 7/3/3 pixels,
strides 4/2/2, paddings 2/1/1) with a small T2T layer between them. After each T2T layer the
token sequence is re-structurised into an image and unfolded again, so neighbouring tokens are
merged. The resulting ``(H/16) * (W/16)`` tokens of width ``token_dim`` (64) are projected to
``embed_dim`` and fed, after a class token and a fixed sinusoidal position embedding, to a plain
ViT backbone of timm ``Block``s.

The T2T layers are either Performer layers (``t2t_vit_<depth>``: linear attention with positive
orthogonal random features) or single-head Transformer layers (``t2t_vit_t_<depth>``); in both
the value width is reduced to ``token_dim`` and the value is the skip connection around the
attention, because the input width (``in_chans * 49`` or ``token_dim * 9``) differs.

Variants, parameter counts at 224 px and 1000 classes (the paper's table; every parameter
counted, including the fixed position embedding and the Performer's random features):

=============  =========  =====  ======  =====  =========  ======
vitrain        T2T layer  width  depth   heads  mlp ratio  params
=============  =========  =====  ======  =====  =========  ======
t2t_vit_7      Performer  256    7       4      2          4.3M
t2t_vit_10     Performer  256    10      4      2          5.9M
t2t_vit_12     Performer  256    12      4      2          6.9M
t2t_vit_14     Performer  384    14      6      3          21.5M
t2t_vit_19     Performer  448    19      7      3          39.2M
t2t_vit_24     Performer  512    24      8      3          64.1M
t2t_vit_t_14   attention  384    14      6      3          21.5M
t2t_vit_t_19   attention  448    19      7      3          39.2M
t2t_vit_t_24   attention  512    24      8      3          64.1M
=============  =========  =====  ======  =====  =========  ======

State-dict keys follow the authors' release (``tokens_to_token.attention1.kqv.weight``,
``blocks.0.attn.qkv.weight``, ...). The authors' released weights expect the backbone's attention
logits scaled by ``embed_dim ** -0.5`` instead of ``head_dim ** -0.5``: their factories set
``qk_scale = embed_dim ** -0.5`` whenever ``pretrained=True`` (yitu-opensource/T2T-ViT
``models/t2t_vit.py``), and :func:`create_t2t_vit` does the same for a ``pretrained_file``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.layers import Mlp, trunc_normal_
from timm.layers.attention import Attention
from timm.models.vision_transformer import Block
from torch import nn

from vitrain.checkpoints import load_fitting, read_weights
from vitrain.errors import UserError
from vitrain.models.registry import variant_args
from vitrain.models.sizes import check_image_size

log = logging.getLogger(__name__)

# kernel, stride, padding of the three soft splits
SOFT_SPLITS = ((7, 4, 2), (3, 2, 1), (3, 2, 1))
TOKEN_TYPES = ("performer", "transformer")

T2T_VIT_VARIANTS: dict[str, dict] = {
    "t2t_vit_7": dict(tokens_type="performer", embed_dim=256, depth=7, num_heads=4, mlp_ratio=2.0),
    "t2t_vit_10": dict(tokens_type="performer", embed_dim=256, depth=10, num_heads=4, mlp_ratio=2.0),
    "t2t_vit_12": dict(tokens_type="performer", embed_dim=256, depth=12, num_heads=4, mlp_ratio=2.0),
    "t2t_vit_14": dict(tokens_type="performer", embed_dim=384, depth=14, num_heads=6, mlp_ratio=3.0),
    "t2t_vit_19": dict(tokens_type="performer", embed_dim=448, depth=19, num_heads=7, mlp_ratio=3.0),
    "t2t_vit_24": dict(tokens_type="performer", embed_dim=512, depth=24, num_heads=8, mlp_ratio=3.0),
    "t2t_vit_t_14": dict(tokens_type="transformer", embed_dim=384, depth=14, num_heads=6, mlp_ratio=3.0),
    "t2t_vit_t_19": dict(tokens_type="transformer", embed_dim=448, depth=19, num_heads=7, mlp_ratio=3.0),
    "t2t_vit_t_24": dict(tokens_type="transformer", embed_dim=512, depth=24, num_heads=8, mlp_ratio=3.0),
}

# architecture arguments a config may override (``+model.net.<key>=...``)
OVERRIDABLE = (
    "tokens_type",
    "embed_dim",
    "depth",
    "num_heads",
    "mlp_ratio",
    "qkv_bias",
    "token_dim",
    "drop_rate",
    "attn_drop_rate",
    "token_drop_rate",
)
# qk_scale by name: timm's (and the authors' training code's) default, or the released weights'
QK_SCALES = ("head_dim", "embed_dim")
# weight files vitrain writes (Lightning checkpoints, mode=export): trained here with head_dim
VITRAIN_WEIGHT_SUFFIXES = (".ckpt", ".safetensors")


class ScaledAttention(Attention):
    """timm's ``Attention`` with the logit scale ``self.scale`` used by the fused kernel too.

    timm's fused path calls ``scaled_dot_product_attention`` with its default scale
    ``head_dim ** -0.5`` whatever ``self.scale`` holds; this one passes ``self.scale``, so a
    ``qk_scale`` set after construction (T2T-ViT's released weights: ``embed_dim ** -0.5``)
    applies. Same parameters and state-dict keys as ``Attention``.
    """

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        """``(B, N, C)`` -> ``(B, N, C)``: softmax(q k^T * scale) v per head, then the projection."""
        B, N, _ = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, heads, N, head_dim) each
        q, k = self.q_norm(q), self.k_norm(k)
        dropout = self.attn_drop.p if self.training else 0.0
        x = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=dropout, is_causal=is_causal, scale=self.scale
        )
        x = self.norm(x.transpose(1, 2).reshape(B, N, self.attn_dim))
        return self.proj_drop(self.proj(x))


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def unfold_size(n: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of one ``nn.Unfold`` dimension of input length ``n``."""
    return (n + 2 * padding - kernel) // stride + 1


def t2t_grid(img_size: int | tuple[int, int]) -> tuple[int, int]:
    """Token grid ``(h, w)`` after the three soft splits (224 -> 14x14, 64 -> 4x4, 32 -> 2x2)."""
    h, w = _pair(img_size)
    for kernel, stride, padding in SOFT_SPLITS:
        h, w = unfold_size(h, kernel, stride, padding), unfold_size(w, kernel, stride, padding)
    return h, w


def sinusoid_position_embedding(num_positions: int, dim: int) -> torch.Tensor:
    """The fixed Transformer position code ``(1, num_positions, dim)``.

    Position ``p``, channel pair ``(2i, 2i+1)``: ``sin(p / 10000^(2i/dim))``,
    ``cos(p / 10000^(2i/dim))`` (channels interleaved, as in Vaswani et al. and the T2T-ViT code).
    """
    position = torch.arange(num_positions, dtype=torch.float64).unsqueeze(1)
    channel = torch.arange(dim, dtype=torch.float64)
    angle = position / torch.pow(10000.0, 2 * torch.div(channel, 2, rounding_mode="floor") / dim)
    table = torch.where(channel.remainder(2) == 0, torch.sin(angle), torch.cos(angle))
    return table.float().unsqueeze(0)


class TokenPerformer(nn.Module):
    """Performer T2T layer: ``(B, N, dim)`` -> ``(B, N, token_dim)``.

    Single-head linear attention (FAVOR+, positive orthogonal random features ``w`` of shape
    ``(m, token_dim)``, ``m = kernel_ratio * token_dim``, fixed after initialisation) with the
    value as skip connection, followed by a residual MLP of ratio 1.

    Args:
        dim: input token width (``in_chans * 7 * 7`` or ``token_dim * 3 * 3``).
        token_dim: width of q, k, v and of the output.
        kernel_ratio: random features per value channel.
        drop: dropout after the attention projection and the MLP (0.1 in the paper's code).
    """

    eps = 1e-8  # keeps the normaliser away from 0

    def __init__(self, dim: int, token_dim: int = 64, kernel_ratio: float = 0.5, drop: float = 0.1) -> None:
        super().__init__()
        self.token_dim = token_dim
        self.num_features = int(token_dim * kernel_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.kqv = nn.Linear(dim, 3 * token_dim)
        self.proj = nn.Linear(token_dim, token_dim)
        self.dp = nn.Dropout(drop)
        self.norm2 = nn.LayerNorm(token_dim)
        self.mlp = nn.Sequential(
            nn.Linear(token_dim, token_dim), nn.GELU(), nn.Linear(token_dim, token_dim), nn.Dropout(drop)
        )
        # Orthogonal rows scaled by sqrt(m), as in the paper's code. A non-trainable parameter
        # (not a buffer) so that parameter counts equal the paper's, which include it.
        w = nn.init.orthogonal_(torch.empty(self.num_features, token_dim)) * math.sqrt(self.num_features)
        self.w = nn.Parameter(w, requires_grad=False)

    def random_features(self, x: torch.Tensor) -> torch.Tensor:
        """Positive random features ``exp(w x - |x|^2 / 2) / sqrt(m)``: ``(B, N, d)`` -> ``(B, N, m)``."""
        wx = x @ self.w.t()
        return torch.exp(wx - 0.5 * x.pow(2).sum(-1, keepdim=True)) / math.sqrt(self.num_features)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Linear attention ``(B, N, dim)`` -> ``(B, N, token_dim)``, value as the skip path."""
        k, q, v = self.kqv(x).split(self.token_dim, dim=-1)
        # exp() of the random features needs float32: keep mixed precision out of this part
        with torch.autocast(device_type=x.device.type, enabled=False):
            qf, kf, vf = self.random_features(q.float()), self.random_features(k.float()), v.float()
            kv = kf.transpose(1, 2) @ vf  # (B, m, token_dim)
            normaliser = qf @ kf.sum(dim=1).unsqueeze(-1)  # (B, N, 1)
            y = (qf @ kv) / (normaliser + self.eps)  # (B, N, token_dim)
        return v + self.dp(self.proj(y.to(v.dtype)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TokenAttention(nn.Module):
    """Single-head softmax attention whose q, k, v have width ``token_dim``: ``(B, N, dim)`` ->
    ``(B, N, token_dim)``, with the value as skip connection (input and output widths differ).

    The logits are scaled by ``dim ** -0.5`` (the input width), as in the paper's code.
    """

    def __init__(
        self,
        dim: int,
        token_dim: int = 64,
        qkv_bias: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.token_dim = token_dim
        self.scale = dim**-0.5
        self.qkv = nn.Linear(dim, 3 * token_dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(token_dim, token_dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).split(self.token_dim, dim=-1)  # each (B, N, token_dim)
        dropout = self.attn_drop if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=self.scale)
        return v + self.proj_drop(self.proj(y))


class TokenTransformer(nn.Module):
    """Transformer T2T layer: ``(B, N, dim)`` -> ``(B, N, token_dim)``.

    ``TokenAttention`` on the normed input (no residual around it: the value is the skip path),
    then a residual MLP of ``mlp_ratio`` (1 in the paper).
    """

    def __init__(
        self,
        dim: int,
        token_dim: int = 64,
        mlp_ratio: float = 1.0,
        qkv_bias: bool = False,
        drop: float = 0.0,
        attn_drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = TokenAttention(dim, token_dim, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop)
        self.norm2 = nn.LayerNorm(token_dim)
        self.mlp = Mlp(
            token_dim, hidden_features=int(token_dim * mlp_ratio), out_features=token_dim, drop=drop
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TokensToToken(nn.Module):
    """The T2T module: image ``(B, C, H, W)`` -> tokens ``(B, h * w, embed_dim)``.

    Soft split (unfold 7/4/2) -> T2T layer -> re-structurise to ``(B, token_dim, H1, W1)`` ->
    soft split (3/2/1) -> T2T layer -> re-structurise -> soft split (3/2/1) -> linear projection.
    ``grid_size`` ``(h, w)`` follows from ``img_size`` through the three unfolds (224 -> 14x14).
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        in_chans: int = 3,
        embed_dim: int = 384,
        token_dim: int = 64,
        tokens_type: str = "performer",
        token_drop_rate: float = 0.1,
    ) -> None:
        super().__init__()
        if tokens_type not in TOKEN_TYPES:
            raise UserError(f"model.net.tokens_type={tokens_type!r}: use one of {', '.join(TOKEN_TYPES)}.")
        self.token_dim = token_dim
        self.grid_size = t2t_grid(img_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        (k0, s0, p0), (k1, s1, p1), (k2, s2, p2) = SOFT_SPLITS
        self.soft_split0 = nn.Unfold(kernel_size=k0, stride=s0, padding=p0)
        self.soft_split1 = nn.Unfold(kernel_size=k1, stride=s1, padding=p1)
        self.soft_split2 = nn.Unfold(kernel_size=k2, stride=s2, padding=p2)
        dim0, dim1 = in_chans * k0 * k0, token_dim * k1 * k1
        if tokens_type == "performer":
            self.attention1: nn.Module = TokenPerformer(dim0, token_dim, drop=token_drop_rate)
            self.attention2: nn.Module = TokenPerformer(dim1, token_dim, drop=token_drop_rate)
        else:
            self.attention1 = TokenTransformer(dim0, token_dim)
            self.attention2 = TokenTransformer(dim1, token_dim)
        self.project = nn.Linear(token_dim * k2 * k2, embed_dim)

    def restructure(self, tokens: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Tokens ``(B, h * w, C)`` back to an image ``(B, C, h, w)``."""
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        (k0, s0, p0), (k1, s1, p1), _ = SOFT_SPLITS
        size0 = (unfold_size(size[0], k0, s0, p0), unfold_size(size[1], k0, s0, p0))
        size1 = (unfold_size(size0[0], k1, s1, p1), unfold_size(size0[1], k1, s1, p1))
        x = self.attention1(self.soft_split0(x).transpose(1, 2))  # (B, H1 * W1, token_dim)
        x = self.soft_split1(self.restructure(x, size0)).transpose(1, 2)  # (B, H2 * W2, token_dim * 9)
        x = self.attention2(x)  # (B, H2 * W2, token_dim)
        x = self.soft_split2(self.restructure(x, size1)).transpose(1, 2)  # (B, h * w, token_dim * 9)
        return self.project(x)  # (B, h * w, embed_dim)


class T2TViT(nn.Module):
    """T2T-ViT classifier: images ``(B, in_chans, H, W)`` -> logits ``(B, num_classes)``.

    ``H, W`` must equal ``img_size`` (the fixed position embedding has ``1 + h * w`` rows).

    Args:
        img_size: input size (int or ``(H, W)``); the token grid follows from the soft splits.
        in_chans, num_classes: input channels and classes (``num_classes=0``: no head, the
            class-token features ``(B, embed_dim)`` are returned).
        embed_dim, depth, num_heads, mlp_ratio, qkv_bias: the ViT backbone of timm ``Block``s.
        tokens_type: ``"performer"`` or ``"transformer"`` T2T layers.
        token_dim: width of the tokens inside the T2T module (64).
        drop_rate: dropout after the position embedding and in the backbone's MLPs/projections.
        attn_drop_rate: attention dropout of the backbone.
        drop_path_rate: stochastic depth, rising linearly to this value over the blocks.
        token_drop_rate: dropout inside the Performer T2T layers (0.1 in the paper's code).
        qk_scale: the backbone's attention logit scale; None: ``head_dim ** -0.5`` (timm, and the
            authors' training code); the authors' released weights need ``embed_dim ** -0.5``.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 384,
        depth: int = 14,
        num_heads: int = 6,
        mlp_ratio: float = 3.0,
        qkv_bias: bool = False,
        tokens_type: str = "performer",
        token_dim: int = 64,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        token_drop_rate: float = 0.1,
        qk_scale: float | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.embed_dim = self.num_features = embed_dim
        self.tokens_to_token = TokensToToken(
            img_size, in_chans, embed_dim, token_dim, tokens_type, token_drop_rate=token_drop_rate
        )
        self.num_patches = self.tokens_to_token.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        # fixed, not trained; a parameter (requires_grad=False) so counts include it like the paper's
        self.pos_embed = nn.Parameter(
            sinusoid_position_embedding(self.num_patches + 1, embed_dim), requires_grad=False
        )
        self.pos_drop = nn.Dropout(drop_rate)
        rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
        self.blocks = nn.Sequential(
            *(
                Block(
                    embed_dim,
                    num_heads,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    proj_drop=drop_rate,
                    attn_drop=attn_drop_rate,
                    drop_path=rate,
                    attn_layer=ScaledAttention,
                )
                for rate in rates
            )
        )
        if qk_scale is not None:
            for block in self.blocks:
                block.attn.scale = qk_scale
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        trunc_normal_(self.cls_token, std=0.02)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"cls_token", "pos_embed"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> normed tokens ``(B, 1 + h * w, embed_dim)`` (class token first)."""
        x = self.tokens_to_token(x)
        if x.shape[1] != self.num_patches:
            raise ValueError(
                f"input {tuple(x.shape[-2:])} px gives {x.shape[1]} tokens, but this T2T-ViT was built for "
                f"{self.num_patches} (img_size {self.tokens_to_token.grid_size} token grid)"
            )
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.pos_drop(x + self.pos_embed)
        return self.norm(self.blocks(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, in_chans, H, W)`` -> logits ``(B, num_classes)``."""
        return self.head(self.forward_features(x)[:, 0])


def create_t2t_vit(
    name: str,
    img_size: int | tuple[int, int] = 224,
    in_chans: int = 3,
    num_classes: int = 1000,
    drop_path_rate: float = 0.1,
    pretrained_file: str | None = None,
    qk_scale: float | str | None = None,
    **overrides,
) -> T2TViT:
    """Build the T2T-ViT variant ``name`` (see the module docstring); optionally load weights.

    Args:
        name: one of ``T2T_VIT_VARIANTS`` (``t2t_vit_14``, ``t2t_vit_t_14``, ...).
        img_size, in_chans, num_classes, drop_path_rate: as in ``T2TViT``.
        pretrained_file: a ``.pth`` / ``.bin`` / ``.safetensors`` state dict of this exact network
            (checked strictly; the fixed position embedding is regenerated, so a file saved at
            another image size loads too).
        qk_scale: the attention logit scale of the backbone: ``"head_dim"`` (``head_dim ** -0.5``,
            timm's and the authors' training code), ``"embed_dim"`` (``embed_dim ** -0.5``, what
            the authors' released weights need: their factories set it when ``pretrained``) or a
            number. None: ``"embed_dim"`` when ``pretrained_file`` is a file of the authors'
            release (``.pth`` / ``.pth.tar`` / ``.bin``), ``"head_dim"`` otherwise (no file, or a
            ``.ckpt`` / ``.safetensors`` that vitrain wrote).
        **overrides: architecture arguments replacing the variant's (``embed_dim``, ``depth``,
            ``num_heads``, ``mlp_ratio``, ``qkv_bias``, ``token_dim``, ``tokens_type``,
            ``drop_rate``, ``attn_drop_rate``, ``token_drop_rate``).

    Input ``(B, in_chans, img_size, img_size)`` -> logits ``(B, num_classes)``.
    """
    args = variant_args("T2T-ViT", name, T2T_VIT_VARIANTS, OVERRIDABLE, overrides)
    if args["embed_dim"] % args["num_heads"]:
        raise UserError(
            f"model.net.embed_dim={args['embed_dim']} must be divisible by model.net.num_heads="
            f"{args['num_heads']}."
        )
    check_image_size(img_size, SOFT_SPLITS, f"the soft splits of {name} (kernels 7/3/3, strides 4/2/2)")
    scale = resolve_qk_scale(qk_scale, args["embed_dim"], args["num_heads"], pretrained_file)
    net = T2TViT(
        img_size=img_size,
        in_chans=in_chans,
        num_classes=num_classes,
        drop_path_rate=drop_path_rate,
        qk_scale=scale,
        **args,
    )
    if pretrained_file:
        load_t2t_state_file(net, pretrained_file)
    return net


def resolve_qk_scale(
    qk_scale: float | str | None, embed_dim: int, num_heads: int, pretrained_file: str | None
) -> float:
    """The number ``model.net.qk_scale`` stands for (see :func:`create_t2t_vit`)."""
    if qk_scale is None:
        authors = bool(pretrained_file) and not str(pretrained_file).endswith(VITRAIN_WEIGHT_SUFFIXES)
        qk_scale = "embed_dim" if authors else "head_dim"
        if authors:
            log.info(
                "model.net.qk_scale=embed_dim (%g) for the authors' weights %s",
                embed_dim**-0.5,
                pretrained_file,
            )
    if qk_scale == "head_dim":
        return (embed_dim // num_heads) ** -0.5
    if qk_scale == "embed_dim":
        return embed_dim**-0.5
    if isinstance(qk_scale, int | float) and not isinstance(qk_scale, bool) and qk_scale > 0:
        return float(qk_scale)
    raise UserError(
        f"model.net.qk_scale={qk_scale!r}: use {' or '.join(QK_SCALES)} (the authors' released "
        "weights), a positive number, or null."
    )


def load_t2t_state_file(net: T2TViT, path: str | Path) -> None:
    """Load a state dict file into ``net``: every key and shape must match.

    ``pos_embed`` is a fixed function of the token count and is never taken from the file.
    The file is read by ``checkpoints.read_weights``: a timm-style state dict (wrappers and a
    ``module.`` prefix unwrapped) or a vitrain ``.ckpt``.
    """
    load_fitting(
        net,
        read_weights(path),
        ignore=("pos_embed",),  # everything but the regenerated pos_embed
        source=f"model.net.pretrained_file={str(path)!r}",
        network=f"the configured {type(net).__name__} ({net.embed_dim} wide, {len(net.blocks)} blocks)",
        fix="Check model.net.name, its size overrides, num_classes and in_chans.",
    )
    log.info("Loaded %s", path)
