"""The network of instruction tuning: a pretrained GPT whose language-model head is kept.

Supervised fine-tuning (Alpaca, tatsu-lab/stanford_alpaca ``train.py``; litgpt
``finetune/full.py``) trains the language model itself on prompt + response texts: the network is
the GPT with its tied output layer, loaded from

* ``init_from``: a vitrain GPT checkpoint (``.ckpt``: a pretraining run, or an earlier
  instruction-tuning run), its output layer kept;
* ``hf_weights``: Hugging Face GPT-2 weights (hub id, model folder or weight file);
* nothing: a fresh GPT (instruction tuning from scratch, the baseline of a comparison).

The architecture is the source's (:func:`vitrain.models.pretrained_lm.build_trunk`).
"""

from __future__ import annotations

from vitrain.models.gpt import GPT
from vitrain.models.pretrained_lm import build_trunk

__all__ = ["create_gpt_sft"]


def create_gpt_sft(
    name: str = "gpt2_124m",
    vocab_size: int | None = None,
    init_from: str | None = None,
    hf_weights: str | None = None,
    **overrides,
) -> GPT:
    """A GPT for instruction tuning (the ``gpt*_sft`` models): ``(B, T)`` ids -> ``(B, T, V)`` logits.

    Args:
        name: the GPT variant (``gpt2_124m``, ..., ``gpt_tiny``); with ``init_from`` /
            ``hf_weights`` the architecture is the source's.
        vocab_size: the data's tokenizer size (None: the source's).
        init_from: a vitrain GPT checkpoint (``.ckpt``).
        hf_weights: Hugging Face GPT-2 weights (hub id, folder, file).
        dropout: dropout probability on the embeddings, the attention weights and the residual
            branches (a :class:`vitrain.models.gpt.GPTConfig` field).
        **overrides: :class:`vitrain.models.gpt.GPTConfig` fields (``dropout``, ...).
    """
    return build_trunk("gpt", name, vocab_size, init_from, hf_weights, {}, overrides).net
