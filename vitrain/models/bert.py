"""BERT (Devlin et al. 2018): a bidirectional encoder pretrained by masked language modelling.

Post-LayerNorm blocks (``x = norm(x + sublayer(x))``), learned absolute positions, token-type
(segment) embeddings, exact GELU. The masked-LM head is a transform (dense -> GELU -> LayerNorm)
followed by a decoder tied to the token embedding, with its own bias; the optional pooler
(dense -> tanh on the [CLS] token) feeds the next-sentence-prediction head. Attention is
``F.scaled_dot_product_attention`` with a key-padding mask.

Variants of :func:`create_bert` (parameter counts of the masked-LM network without pooler,
512 positions, 2 token types, vocabulary 30522; equal to Hugging Face's ``BertForMaskedLM``):

===========  =====  ======  =====  ===========
name         depth  width   heads  parameters
===========  =====  ======  =====  ===========
bert_base    12     768     12     109,514,298
bert_large   24     1024    16     335,174,458
bert_tiny    4      128     4      (CPU runs; 256 positions)
===========  =====  ======  =====  ===========

With ``nsp=True`` the pooler and the NSP head add ``width * width + width + 2 * width + 2``.
Weights in the Hugging Face layout (``BertForPreTraining`` / ``BertForMaskedLM`` /
``BertModel``) load by hub id (``hf_weights=bert-base-uncased``), from a local Hugging Face model
folder (``config.json`` + weights) or from a bare weight file: see :func:`create_bert`.
"""

from __future__ import annotations

import logging
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

log = logging.getLogger(__name__)

__all__ = ["BERT", "BERT_VARIANTS", "BertConfig", "create_bert", "load_hf_weights"]


@dataclass
class BertConfig:
    vocab_size: int = 30522
    n_positions: int = 512
    type_vocab_size: int = 2
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    intermediate_size: int | None = None  # None: 4 * n_embd
    dropout: float = 0.1
    layer_norm_eps: float = 1e-12
    nsp: bool = False  # pooler + next-sentence-prediction head
    pooler: bool = False  # the pooler alone (sequence classification reads it)
    mlm_head: bool = True  # the masked-LM head (fine-tuning networks leave it out)


BERT_VARIANTS: dict[str, dict] = {
    "bert_base": dict(n_layer=12, n_head=12, n_embd=768),
    "bert_large": dict(n_layer=24, n_head=16, n_embd=1024),
    "bert_tiny": dict(n_layer=4, n_head=4, n_embd=128, n_positions=256),
}


class SelfAttention(nn.Module):
    """Bidirectional multi-head self-attention; padded keys are ignored."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        if cfg.n_embd % cfg.n_head:
            raise UserError(
                f"model.net.n_embd={cfg.n_embd} is not divisible by model.net.n_head={cfg.n_head}."
            )
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.dropout = cfg.dropout

    def forward(self, x: Tensor, key_mask: Tensor | None) -> Tensor:
        """``x (B, T, C)``, ``key_mask (B, 1, 1, T)`` bool (True: attend) or None -> ``(B, T, C)``."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=dropout)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class Layer(nn.Module):
    """Post-LayerNorm encoder layer: ``x = norm1(x + attn(x))``, ``x = norm2(x + mlp(x))``."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        hidden = cfg.intermediate_size or 4 * cfg.n_embd
        self.attn = SelfAttention(cfg)
        self.norm1 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_eps)
        self.fc = nn.Linear(cfg.n_embd, hidden)
        self.proj = nn.Linear(hidden, cfg.n_embd)
        self.norm2 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_eps)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, key_mask: Tensor | None) -> Tensor:
        x = self.norm1(x + self.drop(self.attn(x, key_mask)))
        return self.norm2(x + self.drop(self.proj(F.gelu(self.fc(x)))))


class BERT(nn.Module):
    """Token ids ``(B, T)`` -> masked-LM logits ``(B, T, vocab_size)`` (+ NSP logits ``(B, 2)``).

    Use :meth:`encode` and :meth:`mlm_logits` to compute the vocabulary logits of selected
    positions only (the masked-LM loss needs ~15% of them).
    """

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.config = cfg
        C = cfg.n_embd
        self.word_embeddings = nn.Embedding(cfg.vocab_size, C)
        self.position_embeddings = nn.Embedding(cfg.n_positions, C)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, C)
        self.embed_norm = nn.LayerNorm(C, eps=cfg.layer_norm_eps)
        self.embed_drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.n_layer))
        # masked-LM head: transform, then the decoder tied to word_embeddings plus its own bias
        if cfg.mlm_head:
            self.mlm_dense = nn.Linear(C, C)
            self.mlm_norm = nn.LayerNorm(C, eps=cfg.layer_norm_eps)
            self.mlm_bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        self.pooler = nn.Linear(C, C) if cfg.nsp or cfg.pooler else None
        self.nsp_head = nn.Linear(C, 2) if cfg.nsp else None
        self.grad_checkpointing = False
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def n_positions(self) -> int:
        return self.config.n_positions

    def no_weight_decay(self) -> set[str]:
        """Parameters without weight decay besides biases and LayerNorms (ndim 1): none. As
        google-research/bert ``optimization.py`` (``exclude_from_weight_decay=["LayerNorm",
        "layer_norm", "bias"]``), the embedding tables are decayed."""
        return set()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def encode(
        self, input_ids: Tensor, token_type_ids: Tensor | None = None, attention_mask: Tensor | None = None
    ) -> Tensor:
        """``input_ids (B, T)``, ``token_type_ids (B, T)``, ``attention_mask (B, T)`` (1/True: a real
        token, 0/False: padding) -> hidden states ``(B, T, C)``.

        A row of ``attention_mask`` without any real token attends to every key (a fully
        masked row would give NaN in ``scaled_dot_product_attention``).
        """
        B, T = input_ids.shape
        if input_ids.shape[1] > self.config.n_positions:
            raise ValueError(f"sequence of {T} tokens is longer than n_positions={self.config.n_positions}")
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        pos = torch.arange(T, device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(pos)
        x = self.embed_drop(self.embed_norm(x + self.token_type_embeddings(token_type_ids)))
        key_mask = None
        if attention_mask is not None:
            valid = attention_mask.bool()
            valid = valid | ~valid.any(dim=1, keepdim=True)  # never a fully masked row
            key_mask = valid[:, None, None, :]  # (B, 1, 1, T)
        for layer in self.layers:
            if self.grad_checkpointing and self.training:
                x = checkpoint(layer, x, key_mask, use_reentrant=False)
            else:
                x = layer(x, key_mask)
        return x

    def mlm_logits(self, hidden: Tensor) -> Tensor:
        """Hidden states ``(..., C)`` -> vocabulary logits ``(..., vocab_size)``."""
        h = self.mlm_norm(F.gelu(self.mlm_dense(hidden)))
        return F.linear(h, self.word_embeddings.weight, self.mlm_bias)

    def nsp_logits(self, hidden: Tensor) -> Tensor:
        """Hidden states ``(B, T, C)`` -> is-next / not-next logits ``(B, 2)`` from the [CLS] token."""
        if self.nsp_head is None:
            raise RuntimeError("this BERT has no NSP head: build it with nsp=True")
        return self.nsp_head(self.pooled(hidden))

    def pooled(self, hidden: Tensor) -> Tensor:
        """Hidden states ``(B, T, C)`` -> the pooler's ``tanh(dense(h[CLS]))`` ``(B, C)``."""
        if self.pooler is None:
            raise RuntimeError("this BERT has no pooler: build it with pooler=True or nsp=True")
        return torch.tanh(self.pooler(hidden[:, 0]))

    def forward(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        mlm_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """-> ``(mlm logits, NSP logits (B, 2) or None)``; the MLM logits are ``(B, T, vocab_size)``,
        or with ``mlm_mask (B, T)`` bool only those of the ``N`` selected positions, ``(N, vocab_size)``
        (the vocabulary projection is the costly part; MLM training needs only the selected tokens)."""
        hidden = self.encode(input_ids, token_type_ids, attention_mask)
        nsp = self.nsp_logits(hidden) if self.config.nsp else None
        return self.mlm_logits(hidden if mlm_mask is None else hidden[mlm_mask]), nsp


_ARCH_KEYS = tuple(BertConfig.__dataclass_fields__)


def create_bert(name: str, vocab_size: int | None = None, hf_weights: str | None = None, **overrides) -> BERT:
    """Build the BERT variant ``name`` (see the module docstring for the table).

    Args:
        name: ``bert_base``, ``bert_large`` or ``bert_tiny``.
        vocab_size: the token vocabulary (vitrain sets it from the data's tokenizer); None: 30522.
        hf_weights: Hugging Face BERT weights to start from: a hub id (``bert-base-uncased``;
            fetched into / read from the Hugging Face cache), a local model folder
            (``config.json`` + ``model.safetensors`` / ``pytorch_model.bin``) or a weight file.
            With a hub id or a folder the architecture is its ``config.json``'s, whatever
            ``name`` says; an explicit override or a ``vocab_size`` that disagrees with it is an
            error naming both values.
        dropout: dropout probability on the embeddings, the attention weights and the residual
            branches (a :class:`BertConfig` field).
        **overrides: any :class:`BertConfig` field (``n_layer``, ``n_head``, ``n_embd``,
            ``n_positions``, ``type_vocab_size``, ``intermediate_size``, ``dropout``, ``nsp``, ...).
    """
    arch = variant_args("BERT", name, BERT_VARIANTS, _ARCH_KEYS, overrides)
    if vocab_size is not None:
        arch["vocab_size"] = vocab_size
    arch, source = hf_architecture(arch, hf_weights, _HF_CONFIG_KEYS, "bert", overrides, vocab_size)
    net = BERT(BertConfig(**arch))
    if source is not None:
        load_hf_weights(net, source.weights, source=source.source)
    return net


# Hugging Face BertConfig keys -> BertConfig fields
_HF_CONFIG_KEYS = {
    "num_hidden_layers": "n_layer",
    "num_attention_heads": "n_head",
    "hidden_size": "n_embd",
    "intermediate_size": "intermediate_size",
    "max_position_embeddings": "n_positions",
    "type_vocab_size": "type_vocab_size",
    "vocab_size": "vocab_size",
    "layer_norm_eps": "layer_norm_eps",
}


# ------------------------------------------------------------------ Hugging Face weights
_HF_BERT_RENAMES = [
    (r"^embeddings\.word_embeddings\.", "word_embeddings."),
    (r"^embeddings\.position_embeddings\.", "position_embeddings."),
    (r"^embeddings\.token_type_embeddings\.", "token_type_embeddings."),
    (r"^embeddings\.LayerNorm\.", "embed_norm."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"layers.\1.attn.proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", r"layers.\1.norm1."),
    (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"layers.\1.fc."),
    (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"layers.\1.proj."),
    (r"^encoder\.layer\.(\d+)\.output\.LayerNorm\.", r"layers.\1.norm2."),
    (r"^pooler\.dense\.", "pooler."),
    (r"^cls\.predictions\.transform\.dense\.", "mlm_dense."),
    (r"^cls\.predictions\.transform\.LayerNorm\.", "mlm_norm."),
    (r"^cls\.predictions\.bias$", "mlm_bias"),
    (r"^cls\.seq_relationship\.", "nsp_head."),
]
_QKV = re.compile(r"^encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.(weight|bias)$")


def convert_hf_state_dict(hf_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A Hugging Face BERT state dict in this module's names.

    Query, key and value are concatenated into ``qkv``; TensorFlow-era ``gamma`` / ``beta``
    names become ``weight`` / ``bias``; the tied decoder weight and ``position_ids`` buffers
    are dropped (the decoder bias is ``mlm_bias``).
    """
    out: dict[str, Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, Tensor]] = {}
    for name, tensor in hf_state.items():
        name = name.removeprefix("bert.").replace(".gamma", ".weight").replace(".beta", ".bias")
        if name.endswith("position_ids") or name == "cls.predictions.decoder.weight":
            continue
        if name == "cls.predictions.decoder.bias":
            name = "cls.predictions.bias"
        if match := _QKV.match(name):
            layer, part, kind = match.groups()
            qkv.setdefault((layer, kind), {})[part] = tensor
            continue
        out[rename_first(name, _HF_BERT_RENAMES) or name] = tensor  # unknown: reported by load_hf_weights
    for (layer, kind), parts in qkv.items():
        if len(parts) == 3:
            out[f"layers.{layer}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]])
    return out


def load_hf_weights(
    net: BERT, path: str | Path, key: str = "model.net.hf_weights", source: str | None = None
) -> None:
    """Load a Hugging Face BERT weight file into ``net``.

    Every weight of ``net`` must be in the file with the same shape, except that a network
    with an NSP head may start it fresh from a masked-LM-only file (logged by name). Extra
    entries of the file (a pooler or NSP head ``net`` does not have) are ignored.
    """
    state = convert_hf_state_dict(read_weights(path, key))
    path = source or path  # what the user named, for messages
    fit = load_fitting(
        net,
        state,
        source=f"{key}={str(path)!r}",
        network=f"model.net ({describe_config(net.config)})",
        fix=HF_MISFIT_FIX,
        may_miss=("pooler", "nsp_head"),
        may_add=("*",),
    )
    if fit.missing:
        log.info("%s (%s) has no %s: they start fresh", path, key, ", ".join(fit.missing))
