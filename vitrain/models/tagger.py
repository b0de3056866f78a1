"""Token classification on a pretrained BERT (Devlin et al. 2018, section 5.3: named entities).

:class:`BertTagger` is transformers' ``BertForTokenClassification``
(``models/bert/modeling_bert.py``): the encoder's final hidden state of every token, dropout, a
linear layer to ``num_labels`` logits per token. No CRF: BERT section 5.3 feeds "the
representation of the first sub-token as the input to the token-level classifier over the NER
label set"; choosing the first sub-word of each word is the data's job (``data=conll``: the
other sub-words carry the label -100).

The encoder comes from :func:`vitrain.models.pretrained_lm.build_trunk` (``init_from``: a vitrain
BERT checkpoint, its masked-LM head dropped; ``hf_weights``: Hugging Face weights; or fresh). A
source that carries a token-classification head of the right shape (a Hugging Face
``BertForTokenClassification`` folder, a vitrain tagger checkpoint) also gives the head, its rows
matched to the data's tags by name (:func:`vitrain.models.pretrained_lm.load_head`).
"""

from __future__ import annotations

from torch import Tensor

from vitrain.models.pretrained_lm import HeadOnTrunk, create_head_on_trunk

__all__ = ["BertTagger", "create_bert_tagger"]

# the heads a tagger reuses: Hugging Face architectures and vitrain factories
TAGGER_HEADS = ("BertForTokenClassification", "create_bert_tagger")


class BertTagger(HeadOnTrunk):
    """``input_ids (B, T)`` (+ ``attention_mask``, ``token_type_ids``) -> logits ``(B, T, num_labels)``."""

    family = "bert"

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None
    ) -> Tensor:
        hidden = self.trunk.encode(input_ids, token_type_ids, attention_mask)  # (B, T, C)
        return self.classifier(self.dropout(hidden))


def create_bert_tagger(
    name: str = "bert_base",
    num_labels: int = 9,
    vocab_size: int | None = None,
    init_from: str | None = None,
    hf_weights: str | None = None,
    classifier_dropout: float | None = None,
    label_names: list[str] | None = None,
    **overrides,
) -> BertTagger:
    """A BERT token classifier (the ``bert_*_tagging`` models).

    Args:
        name: the BERT variant (``bert_base``, ``bert_large``, ``bert_tiny``); with ``init_from`` /
            ``hf_weights`` the architecture is the source's.
        num_labels: tags (``conf/model`` takes the count from the data: CoNLL-2003 has 9 in IOB2).
        vocab_size: the data's tokenizer size.
        init_from: a vitrain BERT checkpoint (``.ckpt``), see :mod:`vitrain.models.pretrained_lm`.
        hf_weights: Hugging Face BERT weights (hub id, folder, file); a
            ``BertForTokenClassification`` head of the right shape is loaded too.
        classifier_dropout: dropout before the classifier (None: the encoder's ``dropout``, as
            transformers' ``classifier_dropout=None``).
        label_names: the tag of each label index (``conf/model``: the data's); a source head's
            rows are matched to them by name.
        **overrides: :class:`vitrain.models.bert.BertConfig` fields (``dropout``, ``n_layer``, ...).
    """
    return create_head_on_trunk(
        BertTagger, "bert", name, num_labels, vocab_size=vocab_size, init_from=init_from,
        hf_weights=hf_weights, classifier_dropout=classifier_dropout, label_names=label_names,
        trunk_args={"mlm_head": False, "pooler": False, "nsp": False}, overrides=overrides,
        head_keys=("classifier.",), head_kinds=TAGGER_HEADS, labels_hint="the tag count",
    )  # fmt: skip
