"""Sequence classifiers on a pretrained BERT or GPT (the second stage of BERT and GPT).

* :class:`BertClassifier` (Devlin et al. 2018, section 4.1): the pooler's ``tanh(dense(h[CLS]))``,
  dropout, a linear layer to ``num_labels`` logits, as transformers'
  ``BertForSequenceClassification`` (``models/bert/modeling_bert.py``).
* :class:`GPTClassifier` (Radford et al. 2018, sections 3.2-3.3): the final hidden state of the
  last real token (the extract token of GPT-1's input transformation), dropout, a linear layer
  without bias (GPT-1 eq. 3: ``softmax(h W_y)``; transformers' ``GPT2ForSequenceClassification``
  ``score``). The trunk's tied output layer gives the auxiliary language-model logits
  (:meth:`GPTClassifier.lm_logits`).

``num_labels == 1`` is regression (one output). The trunk comes from
:func:`vitrain.models.pretrained_lm.build_trunk` (``init_from`` / ``hf_weights`` / fresh); a source
that carries a classification head of the right shape (a Hugging Face
``BertForSequenceClassification`` / ``GPT2ForSequenceClassification`` folder, a vitrain
classifier checkpoint) also gives the head, its rows matched to the data's labels by name
(:func:`vitrain.models.pretrained_lm.load_head`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from vitrain.models.pretrained_lm import HeadOnTrunk, create_head_on_trunk

__all__ = ["BertClassifier", "GPTClassifier", "create_bert_classifier", "create_gpt_classifier", "last_token"]

# the heads a classifier reuses: Hugging Face architectures and vitrain factories
BERT_CLASSIFIER_HEADS = ("BertForSequenceClassification", "create_bert_classifier")
GPT_CLASSIFIER_HEADS = ("GPT2ForSequenceClassification", "create_gpt_classifier")
LABELS_HINT = "1: regression"  # what model.net.num_labels counts


def last_token(hidden: Tensor, attention_mask: Tensor | None) -> Tensor:
    """``hidden (B, T, C)`` -> the state of each row's last real token ``(B, C)`` (right padding;
    no mask: the last position)."""
    if attention_mask is None:
        return hidden[:, -1]
    last = attention_mask.long().sum(dim=1).clamp(min=1) - 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class BertClassifier(HeadOnTrunk):
    """``input_ids (B, T)`` (+ ``attention_mask``, ``token_type_ids``) -> logits ``(B, num_labels)``."""

    family = "bert"

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None
    ) -> Tensor:
        hidden = self.trunk.encode(input_ids, token_type_ids, attention_mask)
        return self.classifier(self.dropout(self.trunk.pooled(hidden)))


class GPTClassifier(HeadOnTrunk):
    """``input_ids (B, T)`` (+ ``attention_mask``) -> logits ``(B, num_labels)`` from the last real
    token; :meth:`hidden`, :meth:`classify` and :meth:`lm_logits` give the parts the auxiliary
    language-model loss needs."""

    family = "gpt"

    bias = False  # as transformers' GPT2ForSequenceClassification (its ``score`` layer)

    def hidden(self, input_ids: Tensor) -> Tensor:
        """``(B, T)`` -> final hidden states ``(B, T, C)`` (causal: padding after a row's text
        never reaches its real tokens)."""
        return self.trunk.hidden_states(input_ids)

    def classify(self, hidden: Tensor, attention_mask: Tensor | None) -> Tensor:
        """Hidden states ``(B, T, C)`` -> logits ``(B, num_labels)`` of each row's last real token."""
        return self.classifier(self.dropout(last_token(hidden, attention_mask)))

    def lm_logits(self, hidden: Tensor) -> Tensor:
        """Hidden states ``(..., C)`` -> next-token logits ``(..., vocab_size)`` (the tied output layer)."""
        return self.trunk.lm_head(hidden)

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None
    ) -> Tensor:
        return self.classify(self.hidden(input_ids), attention_mask)


def create_bert_classifier(
    name: str = "bert_base",
    num_labels: int = 2,
    vocab_size: int | None = None,
    init_from: str | None = None,
    hf_weights: str | None = None,
    classifier_dropout: float | None = None,
    label_names: list[str] | None = None,
    **overrides,
) -> BertClassifier:
    """A BERT sequence classifier (the ``bert_*_cls`` models).

    Args:
        name: the BERT variant (``bert_base``, ``bert_large``, ``bert_tiny``); with ``init_from`` /
            ``hf_weights`` the architecture is the source's.
        num_labels: classes (1: regression); ``conf/model`` takes it from the data.
        vocab_size: the data's tokenizer size.
        init_from: a vitrain BERT checkpoint (``.ckpt``), see :mod:`vitrain.models.pretrained_lm`.
        hf_weights: Hugging Face BERT weights (hub id, folder, file); a
            ``BertForSequenceClassification`` head of the right shape is loaded too.
        classifier_dropout: dropout before the classifier (None: the trunk's ``dropout``, as
            transformers' ``classifier_dropout=None``).
        label_names: the name of each label index (``conf/model``: the data's); a source head's
            rows are matched to them by name.
        **overrides: :class:`vitrain.models.bert.BertConfig` fields (``dropout``, ``n_layer``, ...).
    """
    return create_head_on_trunk(
        BertClassifier, "bert", name, num_labels, vocab_size=vocab_size, init_from=init_from,
        hf_weights=hf_weights, classifier_dropout=classifier_dropout, label_names=label_names,
        trunk_args={"mlm_head": False, "pooler": True, "nsp": False}, overrides=overrides,
        head_keys=("classifier.",), head_kinds=BERT_CLASSIFIER_HEADS, labels_hint=LABELS_HINT,
    )  # fmt: skip


def create_gpt_classifier(
    name: str = "gpt2_124m",
    num_labels: int = 2,
    vocab_size: int | None = None,
    init_from: str | None = None,
    hf_weights: str | None = None,
    classifier_dropout: float = 0.1,
    label_names: list[str] | None = None,
    **overrides,
) -> GPTClassifier:
    """A GPT sequence classifier (the ``gpt*_cls`` models).

    Args:
        name: the GPT variant (``gpt2_124m``, ..., ``gpt_tiny``); with ``init_from`` /
            ``hf_weights`` the architecture is the source's.
        num_labels: classes (1: regression); ``conf/model`` takes it from the data.
        vocab_size: the data's tokenizer size (GPT-1's added tokens included).
        init_from: a vitrain GPT checkpoint (``.ckpt``), see :mod:`vitrain.models.pretrained_lm`.
        hf_weights: Hugging Face GPT-2 weights (hub id, folder, file); a
            ``GPT2ForSequenceClassification`` ``score`` of the right shape is loaded too.
        classifier_dropout: dropout before the classifier (GPT-1 section 4.1: 0.1; None: the trunk's
            ``dropout``).
        label_names: the name of each label index (``conf/model``: the data's); a source head's
            rows are matched to them by name.
        **overrides: :class:`vitrain.models.gpt.GPTConfig` fields (``dropout``, ``n_layer``, ...).
    """
    return create_head_on_trunk(
        GPTClassifier, "gpt", name, num_labels, vocab_size=vocab_size, init_from=init_from,
        hf_weights=hf_weights, classifier_dropout=classifier_dropout, label_names=label_names,
        trunk_args={}, overrides=overrides, head_keys=("score.", "classifier."),
        head_kinds=GPT_CLASSIFIER_HEADS, labels_hint=LABELS_HINT,
    )  # fmt: skip
