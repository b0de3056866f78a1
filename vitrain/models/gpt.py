"""GPT (Radford et al. 2019): a decoder-only transformer for causal language modelling.

Pre-LayerNorm blocks, learned absolute positions, GELU (tanh approximation, as GPT-2), and an
output projection tied to the token embedding. Attention is ``F.scaled_dot_product_attention``
with ``is_causal=True`` (flash attention on GPUs).

Variants of :func:`create_gpt` (parameter counts with the tied head, 1024 positions and GPT-2's
vocabulary of 50257; equal to Hugging Face's ``GPT2LMHeadModel``):

===========  =====  ======  =====  =============
name         depth  width   heads  parameters
===========  =====  ======  =====  =============
gpt2_124m    12     768     12     124,439,808
gpt2_350m    24     1024    16     354,823,168
gpt2_774m    36     1280    20     774,030,080
gpt2_1558m   48     1600    25     1,557,611,200
gpt_tiny     4      128     4      (CPU runs; 256 positions)
===========  =====  ======  =====  =============

Weights of a released GPT-2 in the Hugging Face layout load by hub id (``hf_weights=gpt2``,
``gpt2-medium``, ...), from a local Hugging Face model folder (``config.json`` + weights) or from
a bare weight file (``model.safetensors`` / ``pytorch_model.bin``): see :func:`create_gpt`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from vitrain.checkpoints import load_fitting, read_weights
from vitrain.errors import UserError
from vitrain.hub import HF_MISFIT_FIX, describe_config, hf_architecture, rename_first
from vitrain.models.registry import variant_args

__all__ = ["GPT", "GPT_VARIANTS", "GPTConfig", "create_gpt", "load_hf_weights"]


@dataclass
class GPTConfig:
    vocab_size: int = 50257
    n_positions: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    layer_norm_eps: float = 1e-5
    # biases in the linear layers and LayerNorms (GPT-2: yes; nanoGPT's OpenWebText runs: no)
    bias: bool = True
    # "tanh": GPT-2's tanh approximation of GELU; "exact": erf GELU (nanoGPT's nn.GELU())
    gelu: str = "tanh"


GPT_VARIANTS: dict[str, dict] = {
    "gpt2_124m": dict(n_layer=12, n_head=12, n_embd=768),
    "gpt2_350m": dict(n_layer=24, n_head=16, n_embd=1024),
    "gpt2_774m": dict(n_layer=36, n_head=20, n_embd=1280),
    "gpt2_1558m": dict(n_layer=48, n_head=25, n_embd=1600),
    "gpt_tiny": dict(n_layer=4, n_head=4, n_embd=128, n_positions=256),
}


# GPTConfig.gelu -> the ``approximate`` argument of F.gelu
GELU_MODES = {"tanh": "tanh", "exact": "none"}


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position ``t`` sees positions ``<= t`` only."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        if cfg.n_embd % cfg.n_head:
            raise UserError(
                f"model.net.n_embd={cfg.n_embd} is not divisible by model.net.n_head={cfg.n_head}."
            )
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = cfg.dropout
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, T, C)`` -> ``(B, T, C)``."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)  # (B, nh, T, hs)
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(B, T, C)))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)
        self.approximate = GELU_MODES[cfg.gelu]

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x), approximate=self.approximate)))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_eps, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_eps, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Token ids ``(B, T)`` -> next-token logits ``(B, T, vocab_size)``, ``T <= n_positions``."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.n_positions, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_eps, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied input / output embeddings
        self.grad_checkpointing = False
        self.apply(self._init_weights)
        # GPT-2: residual projections scaled by 1/sqrt(2 * n_layer)
        for name, param in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def n_positions(self) -> int:
        return self.config.n_positions

    def no_weight_decay(self) -> set[str]:
        """Parameters without weight decay besides biases and norms (ndim 1): none. As nanoGPT
        (karpathy/nanoGPT ``model.py`` ``configure_optimizers``: every parameter of 2 or more
        dimensions is decayed), the embeddings ``wte`` (tied to the head) and ``wpe`` are decayed."""
        return set()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def forward(self, idx: Tensor) -> Tensor:
        """``idx (B, T)`` int64 -> logits ``(B, T, vocab_size)``."""
        return self.lm_head(self.hidden_states(idx))

    def hidden_states(self, idx: Tensor) -> Tensor:
        """``idx (B, T)`` int64 -> the final LayerNorm's output ``(B, T, n_embd)``."""
        T = idx.shape[1]
        if idx.shape[1] > self.config.n_positions:
            raise ValueError(f"sequence of {T} tokens is longer than n_positions={self.config.n_positions}")
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.blocks:
            if self.grad_checkpointing and self.training:
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.ln_f(x)

    @torch.no_grad()
    def generate(
        self,
        idx: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        stop_token: int | None = None,
    ) -> Tensor:
        """Append up to ``max_new_tokens`` sampled tokens to ``idx (B, T)``; returns ``(B, T + n)``.

        Each step feeds the last ``n_positions`` tokens. ``temperature`` 0 (or ``top_k=1``) is
        greedy decoding; ``top_k`` keeps the k most likely tokens. With ``stop_token`` and a
        batch of one, generation stops after that token.
        """
        for _ in range(max_new_tokens):
            logits = self(idx[:, -self.config.n_positions :])[:, -1, :].float()  # (B, V)
            if temperature <= 0 or top_k == 1:
                next_id = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = logits.softmax(dim=-1)
                next_id = torch.multinomial(probs.cpu(), 1, generator=generator).to(idx.device)
            idx = torch.cat([idx, next_id], dim=1)
            if stop_token is not None and idx.shape[0] == 1 and int(next_id) == stop_token:
                break
        return idx


_ARCH_KEYS = tuple(GPTConfig.__dataclass_fields__)


def create_gpt(name: str, vocab_size: int | None = None, hf_weights: str | None = None, **overrides) -> GPT:
    """Build the GPT variant ``name`` (see the module docstring for the table).

    Args:
        name: ``gpt2_124m``, ``gpt2_350m``, ``gpt2_774m``, ``gpt2_1558m`` or ``gpt_tiny``.
        vocab_size: the token vocabulary (vitrain sets it from the data's tokenizer); None: 50257.
        hf_weights: Hugging Face GPT-2 weights to start from: a hub id (``gpt2``,
            ``gpt2-medium``; fetched into / read from the Hugging Face cache), a local model
            folder (``config.json`` + ``model.safetensors`` / ``pytorch_model.bin``) or a weight
            file. With a hub id or a folder the architecture (layers, width, heads, positions,
            vocabulary) is its ``config.json``'s, whatever ``name`` says; an explicit override or
            a ``vocab_size`` that disagrees with it is an error naming both values.
        dropout: dropout probability on the embeddings, the attention weights and the residual
            branches (a :class:`GPTConfig` field).
        gelu: the MLP's GELU, ``tanh`` (GPT-2's approximation) or ``exact`` (erf; nanoGPT's
            ``nn.GELU()``); a :class:`GPTConfig` field.
        **overrides: any :class:`GPTConfig` field (``n_layer``, ``n_head``, ``n_embd``,
            ``n_positions``, ``dropout``, ``layer_norm_eps``, ``bias``, ``gelu``). nanoGPT's
            OpenWebText runs use ``bias=False`` and ``gelu="exact"``; released GPT-2 weights
            (``hf_weights``) need the defaults ``bias=True``, ``gelu="tanh"``.
    """
    arch = variant_args("GPT", name, GPT_VARIANTS, _ARCH_KEYS, overrides)
    if vocab_size is not None:
        arch["vocab_size"] = vocab_size
    if arch.get("gelu", "tanh") not in GELU_MODES:
        raise UserError(f"model.net.gelu={arch['gelu']!r}: must be one of {', '.join(GELU_MODES)}.")
    if hf_weights and (not arch.get("bias", True) or arch.get("gelu", "tanh") != "tanh"):
        raise UserError(
            f"model.net.hf_weights={hf_weights!r} is a GPT-2 checkpoint, whose architecture has biases "
            "and the tanh GELU: set model.net.bias=true and model.net.gelu=tanh (the defaults)."
        )
    arch, source = hf_architecture(arch, hf_weights, _HF_CONFIG_KEYS, "gpt2", overrides, vocab_size)
    net = GPT(GPTConfig(**arch))
    if source is not None:
        load_hf_weights(net, source.weights, source=source.source)
    return net


# Hugging Face GPT2Config keys -> GPTConfig fields
_HF_CONFIG_KEYS = {
    "n_layer": "n_layer",
    "n_head": "n_head",
    "n_embd": "n_embd",
    "n_positions": "n_positions",
    "vocab_size": "vocab_size",
    "layer_norm_epsilon": "layer_norm_eps",
}


# ------------------------------------------------------------------ Hugging Face weights
# Hugging Face GPT-2 names -> ours; GPT-2 stores its linear layers as Conv1D, (in, out).
_HF_GPT_RENAMES = [
    (r"^wte\.", "wte."),
    (r"^wpe\.", "wpe."),
    (r"^h\.(\d+)\.ln_1\.", r"blocks.\1.ln_1."),
    (r"^h\.(\d+)\.ln_2\.", r"blocks.\1.ln_2."),
    (r"^h\.(\d+)\.attn\.c_attn\.", r"blocks.\1.attn.qkv."),
    (r"^h\.(\d+)\.attn\.c_proj\.", r"blocks.\1.attn.proj."),
    (r"^h\.(\d+)\.mlp\.c_fc\.", r"blocks.\1.mlp.fc."),
    (r"^h\.(\d+)\.mlp\.c_proj\.", r"blocks.\1.mlp.proj."),
    (r"^ln_f\.", "ln_f."),
]


def convert_hf_state_dict(hf_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A Hugging Face ``GPT2LMHeadModel`` / ``GPT2Model`` state dict in this module's names.

    The attention-mask buffers (``attn.bias``, ``attn.masked_bias``) and the tied
    ``lm_head.weight`` are dropped; Conv1D weights are transposed to ``nn.Linear`` layout.
    """
    out = {}
    for name, tensor in hf_state.items():
        name = name.removeprefix("transformer.")
        if name == "lm_head.weight" or re.match(r"^h\.\d+\.attn\.(bias|masked_bias)$", name):
            continue
        new = rename_first(name, _HF_GPT_RENAMES)
        if new is None:
            out[name] = tensor  # unknown: reported by load_hf_weights
            continue
        if new.endswith(".weight") and re.search(r"\.(qkv|proj|fc)\.weight$", new):
            tensor = tensor.t()
        out[new] = tensor.contiguous()
    return out


def load_hf_weights(
    net: GPT, path: str | Path, key: str = "model.net.hf_weights", source: str | None = None
) -> None:
    """Load a Hugging Face GPT-2 weight file into ``net``; every weight must match in name and
    shape (``source``: what the user named, for messages; default ``path``)."""
    state = convert_hf_state_dict(read_weights(path, key))
    load_fitting(
        net,
        state,
        ignore=("lm_head.weight",),  # tied to wte
        source=f"{key}={str(source or path)!r}",
        network=f"model.net ({describe_config(net.config)})",
        fix=HF_MISFIT_FIX,
    )
