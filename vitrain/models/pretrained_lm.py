"""The pretrained trunk of a fine-tuning network: a BERT or GPT built and loaded from its source.

Fine-tuning networks (sequence classifiers, taggers, instruction-tuned GPTs) are a pretrained
BERT or GPT (the *trunk*) plus a new head. :func:`build_trunk` builds the trunk from one of

* ``model.net.init_from``: a vitrain checkpoint (``.ckpt``) of the same family: a pretraining run
  (``model=bert_* data=text`` / ``model=gpt* data=text``) or a fine-tuning run (its ``trunk.*``
  weights). The architecture (layers, width, heads, positions, ...) is the checkpoint's; the
  language-model heads (BERT's masked-LM transform and bias, the NSP head) are dropped; the new
  head starts fresh. A checkpoint of another network (a ViT, a GPT for a BERT model, ...) is one
  :class:`UserError` naming both.
* ``model.net.hf_weights``: Hugging Face weights (a hub id, a model folder, a weight file) as
  ``create_bert`` / ``create_gpt`` read them; a ``BertForSequenceClassification`` /
  ``GPT2ForSequenceClassification`` (or ``...ForTokenClassification``) file keeps its head's
  tensors in :attr:`Trunk.head` (``classifier.*`` / ``score.*``) for the caller to load.
* nothing: a freshly initialised trunk (training from scratch).

A source's head (:func:`load_head`) is loaded only into a head of the same kind (a
``...ForSequenceClassification`` / sequence classifier run into a sequence classifier, a
``...ForTokenClassification`` / tagger run into a tagger) with the same number of rows, and its
rows are matched to the data's labels **by name** (a head's label order is its own, as an MNLI
head's): the names are the ``id2label`` of the Hugging Face ``config.json`` or the ``class_names``
of the vitrain checkpoint. The same names in another order are reordered; other names are one
:class:`UserError` naming both lists; unnamed rows (transformers' generic ``LABEL_0``,
``LABEL_1``, ...) keep their order, and the log says that it was assumed.

The token embedding has ``vocab_size`` rows (the data's tokenizer). A GPT tokenizer gets GPT-1's
start / delimiter / extract tokens appended when it lacks them (``vitrain.data.finetune``), so
a GPT source's embedding (and the tied output layer) grows by up to that many rows: the
pretrained rows are copied and the new ones keep the network's initialisation, N(0, 0.02) (as
openai/finetune-transformer-lm ``train.py`` initialises the special tokens' embeddings with the
rest). Any other difference between the tokenizer and the source's embedding is a
:class:`UserError` naming both sizes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from vitrain.checkpoints import (
    checkpoint_network,
    load_checkpoint,
    load_fitting,
    net_state_dict,
    read_weights,
    shorten_keys,
)
from vitrain.errors import UserError, require_int
from vitrain.hub import HF_MISFIT_FIX, arch_from_hf_config, describe_config, resolve_hf_model
from vitrain.models import bert, gpt
from vitrain.models.registry import variant_args

log = logging.getLogger(__name__)

# GPT-1 section 3.3's start, delimiter and extract tokens (vitrain.data.finetune.GPT1_TOKENS)
GPT1_NEW_TOKENS = 3


@dataclass(frozen=True)
class Family:
    """What :func:`build_trunk` needs to know of a network family."""

    title: str  # for messages
    variants: dict
    config: type
    network: type
    convert_hf: Callable[[dict], dict]  # Hugging Face names -> ours
    hf_keys: dict  # Hugging Face config.json keys -> ours
    hf_model_type: str
    embedding: str  # the token embedding's state-dict name
    shape_keys: tuple[str, ...]  # config fields a checkpoint decides
    dropped: tuple[str, ...]  # state-dict prefixes of language-model heads a trunk leaves out
    new_tokens: int = 0  # embedding rows the tokenizer may add to a pretrained source
    fresh_ok: tuple[str, ...] = field(default=())  # trunk tensors a source may lack (check_fit patterns)


FAMILIES = {
    "bert": Family(
        "BERT", bert.BERT_VARIANTS, bert.BertConfig, bert.BERT, bert.convert_hf_state_dict, bert._HF_CONFIG_KEYS,
        "bert", "word_embeddings.weight",
        ("n_layer", "n_head", "n_embd", "n_positions", "type_vocab_size", "intermediate_size", "layer_norm_eps"),
        ("mlm_dense.", "mlm_norm.", "mlm_bias", "nsp_head.", "pooler."), fresh_ok=("pooler",),
    ),
    "gpt": Family(
        "GPT", gpt.GPT_VARIANTS, gpt.GPTConfig, gpt.GPT, gpt.convert_hf_state_dict, gpt._HF_CONFIG_KEYS,
        "gpt2", "wte.weight", ("n_layer", "n_head", "n_embd", "n_positions", "layer_norm_eps", "bias", "gelu"),
        (), new_tokens=GPT1_NEW_TOKENS, fresh_ok=(),
    ),
}  # fmt: skip


@dataclass
class Trunk:
    """A built (and loaded) trunk and what its source held besides it."""

    net: nn.Module
    head: dict[str, Tensor]  # the source's head tensors (HF: classifier.* / score.*; vitrain: non-trunk)
    hf_config: dict | None = None  # the Hugging Face config.json, when there was one
    source: str | None = None  # what the user named
    key: str | None = None  # the config key that named it (model.net.init_from / hf_weights)
    head_labels: list[str] | None = None  # the label name of each head row (None: unnamed)
    head_kind: str | None = None  # what head it is: HF architecture / vitrain factory (None: unknown)


class HeadOnTrunk(nn.Module):
    """A linear head on a BERT or GPT trunk (the classifiers and the tagger): ``trunk`` (a
    :class:`vitrain.models.bert.BERT` or :class:`vitrain.models.gpt.GPT`), ``dropout`` before
    ``classifier``, a ``Linear(n_embd, num_labels)`` initialised N(0, 0.02) as BERT's
    ``initializer_range`` and GPT-1/2 do (bias zero; a subclass with ``bias = False`` has none).
    Subclasses give ``forward``."""

    bias = True

    def __init__(self, trunk: nn.Module, num_labels: int, dropout: float) -> None:
        super().__init__()
        self.trunk = trunk
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(trunk.config.n_embd, num_labels, bias=self.bias)
        nn.init.normal_(self.classifier.weight, std=0.02)
        if self.bias:
            nn.init.zeros_(self.classifier.bias)
        self.num_labels = num_labels

    @property
    def vocab_size(self) -> int:
        return self.trunk.vocab_size

    @property
    def n_positions(self) -> int:
        return self.trunk.n_positions

    def no_weight_decay(self) -> set[str]:
        return set()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.trunk.set_grad_checkpointing(enable)


def create_head_on_trunk(
    head: type[HeadOnTrunk],
    family: str,
    name: str,
    num_labels: int,
    *,
    vocab_size: int | None,
    init_from: str | None,
    hf_weights: str | None,
    classifier_dropout: float | None,
    label_names: Sequence[str] | None,
    trunk_args: dict,
    overrides: dict,
    head_keys: tuple[str, ...],
    head_kinds: tuple[str, ...],
    labels_hint: str,
) -> HeadOnTrunk:
    """What every head-on-trunk factory does (``create_bert_classifier``, ``create_gpt_classifier``,
    ``create_bert_tagger``): check ``num_labels`` (``labels_hint`` says what it counts) and
    ``label_names``, build the trunk (:func:`build_trunk`), put ``head`` on it with
    ``classifier_dropout`` (None: the trunk's ``dropout``) and load a source's head stored under
    ``head_keys`` by one of ``head_kinds`` (:func:`load_head`)."""
    require_int("model.net.num_labels", num_labels, hint=labels_hint)
    label_names = check_label_names(label_names, num_labels)
    trunk = build_trunk(family, name, vocab_size, init_from, hf_weights, trunk_args, overrides)
    dropout = trunk.net.config.dropout if classifier_dropout is None else classifier_dropout
    net = head(trunk.net, num_labels, dropout)
    load_head(net.classifier, trunk, head_keys, head_kinds, label_names)
    return net


def build_trunk(
    family: str,
    name: str,
    vocab_size: int | None,
    init_from: str | None = None,
    hf_weights: str | None = None,
    trunk_args: dict | None = None,
    overrides: dict | None = None,
) -> Trunk:
    """Build the ``family`` (``bert`` / ``gpt``) variant ``name`` and load its source.

    Args:
        vocab_size: the data's tokenizer size (None: the source's, else the variant's).
        init_from, hf_weights: the source (at most one; see the module docstring).
        trunk_args: config fields the caller fixes (``mlm_head=False``, ``pooler=True``).
        overrides: the user's ``model.net`` architecture overrides (``n_layer``, ``dropout``, ...);
            one that contradicts the source is a :class:`UserError` naming both values.
    """
    fam, overrides = FAMILIES[family], dict(overrides or {})
    if init_from and hf_weights:
        raise UserError(
            f"model.net.init_from={init_from} and model.net.hf_weights={hf_weights} are both set: give one."
        )
    allowed = [k for k in fam.config.__dataclass_fields__ if k not in (trunk_args or {})]
    arch = variant_args(fam.title, name, fam.variants, allowed, overrides)
    state, head, hf_config, key, head_labels, head_kind = None, {}, None, None, None, None
    if init_from:
        key = "model.net.init_from"
        found, state, head, (head_labels, head_kind) = _checkpoint_source(fam, init_from)
        arch = _merge(arch, found, overrides, key, init_from)
    elif hf_weights:
        key = "model.net.hf_weights"
        source = resolve_hf_model(str(hf_weights))
        hf_config = source.config
        head_labels, head_kind = hf_head_labels(hf_config), _hf_architecture(hf_config)
        if hf_config is not None:
            found = arch_from_hf_config(
                hf_config, fam.hf_keys, fam.hf_model_type, overrides, None, str(hf_weights)
            )
            arch = {**arch, **found}
        state = fam.convert_hf(read_weights(source.weights, key))
    rows = state[fam.embedding].shape[0] if state is not None and fam.embedding in state else None
    arch["vocab_size"] = vocab_size or rows or arch.get("vocab_size", fam.config.vocab_size)
    net = fam.network(fam.config(**{**arch, **(trunk_args or {})}))
    if state is not None:
        source_name = init_from or hf_weights
        state = _grow_embedding(fam, net, state, key, source_name)
        head.update(_load(fam, net, state, key, source_name))
    return Trunk(net, head, hf_config, init_from or hf_weights, key, head_labels, head_kind)


def hf_head_labels(config: dict | None) -> list[str] | None:
    """The label name of each row of a Hugging Face head (``config.json`` ``id2label``); None when
    it has none or transformers' generic ``LABEL_0``, ``LABEL_1``, ... (names that say nothing)."""
    id2label = (config or {}).get("id2label") or {}
    try:
        names = [str(id2label[k]) for k in sorted(id2label, key=int)]
    except (TypeError, ValueError):
        return None
    if not names or names == [f"LABEL_{i}" for i in range(len(names))]:
        return None
    return names


def _hf_architecture(config: dict | None) -> str | None:
    architectures = (config or {}).get("architectures") or []
    return str(architectures[0]) if architectures else None


def _checkpoint_source(
    fam: Family, path: str
) -> tuple[dict, dict[str, Tensor], dict[str, Tensor], tuple[list[str] | None, str | None]]:
    """A vitrain checkpoint's architecture fields, trunk weights, other (head) weights, and its
    head's label names (``class_names``) and kind (the network factory's name)."""
    key = "model.net.init_from"
    checkpoint = load_checkpoint(path, key=key)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UserError(f"{key}={path}: not a Lightning checkpoint (it has no state_dict).")
    meta = checkpoint.get("vitrain", {})
    net_cfg = dict(meta.get("net", {}))
    state = net_state_dict(checkpoint)
    if f"trunk.{fam.embedding}" in state:  # a fine-tuning network: its trunk
        trunk = {k[len("trunk.") :]: v for k, v in state.items() if k.startswith("trunk.")}
        head = {k: v for k, v in state.items() if not k.startswith("trunk.")}
        state = trunk
    elif fam.embedding in state:
        head = {}
    else:
        raise UserError(
            f"{key}={path} holds {checkpoint_network(checkpoint)}, not a {fam.title}: this model (a {fam.title} fine-tuning network) starts "
            f"from a {fam.title} checkpoint: a pretraining run (model={'bert_tiny' if fam.title == 'BERT' else 'gpt_tiny'}"
            " / ... with data=text) or a fine-tuning run of the same family."
        )
    found = {k: net_cfg[k] for k in fam.shape_keys if net_cfg.get(k) is not None}
    variant = net_cfg.get("name")
    if variant in fam.variants:
        found = {**{k: v for k, v in fam.variants[variant].items() if k in fam.shape_keys}, **found}
    labels = [str(name) for name in meta.get("class_names") or []] or None
    kind = str(net_cfg.get("_target_", "")).rsplit(".", 1)[-1] or None
    return found, state, head, (labels, kind)


def _merge(arch: dict, found: dict, overrides: dict, key: str, source: str) -> dict:
    """``arch`` with the source's architecture ``found``; an override that differs is an error."""
    clashes = [f"{k}={overrides[k]} vs {v}" for k, v in found.items() if k in overrides and overrides[k] != v]
    if clashes:
        raise UserError(
            f"{key}={source} does not fit model.net (configured vs the checkpoint's): {'; '.join(clashes)}. "
            "Drop the override: the architecture is the checkpoint's."
        )
    return {**arch, **found}


def _grow_embedding(fam: Family, net: nn.Module, state: dict, key: str, source: str) -> dict:
    """``state`` with its token embedding resized to ``net``'s: rows the tokenizer added (GPT-1's
    tokens) keep ``net``'s initialisation; any other difference is a :class:`UserError`."""
    own = net.state_dict()[fam.embedding]
    theirs = state.get(fam.embedding)
    if theirs is None or theirs.shape[0] == own.shape[0]:
        return state
    added = own.shape[0] - theirs.shape[0]
    if not 0 < added <= fam.new_tokens or theirs.shape[1] != own.shape[1]:
        raise UserError(
            f"the tokenizer has {own.shape[0]} tokens but the token embedding of {key}={source} has "
            f"{theirs.shape[0]} rows {tuple(theirs.shape)}: use the tokenizer that network was trained with "
            "(data.tokenizer=null takes it from model.net.init_from or the hf_weights folder, or name it)."
        )
    grown = own.clone()
    grown[: theirs.shape[0]] = theirs.to(own.dtype)
    log.info("%s=%s: %d token embedding rows added for the new tokens (N(0, 0.02))", key, source, added)
    return {**state, fam.embedding: grown}


def _load(fam: Family, net: nn.Module, state: dict, key: str, source: str) -> dict[str, Tensor]:
    """Load the trunk tensors of ``state`` into ``net`` (every one present with its shape, except
    ``fam.fresh_ok``); returns the tensors that are neither trunk nor a dropped LM head."""
    tied = ("lm_head.weight",) if isinstance(net, gpt.GPT) else ()  # GPT's output layer is wte
    state = {k: v for k, v in state.items() if k not in tied}
    own = net.state_dict()
    fit = load_fitting(
        net,
        {k: v for k, v in state.items() if k in own},
        ignore=tied,
        source=f"{key}={str(source)!r}",
        network=f"the {fam.title} trunk of model.net ({describe_config(net.config)})",
        fix=HF_MISFIT_FIX,
        may_miss=fam.fresh_ok,
    )
    rest = {k: v for k, v in state.items() if k not in own}
    dropped = sorted(k for k in rest if k.startswith(fam.dropped))
    head = {k: v for k, v in rest.items() if not k.startswith(fam.dropped)}
    fresh = fit.missing
    log.info(
        "%s=%s loaded into the %s trunk%s%s", key, source, fam.title,
        f"; language-model head dropped: {shorten_keys(dropped)}" if dropped else "",
        f"; fresh: {shorten_keys(fresh)}" if fresh else "",
    )  # fmt: skip
    return head


@torch.no_grad()
def load_head(
    head: nn.Linear,
    trunk: Trunk,
    prefixes: tuple[str, ...],
    kinds: tuple[str, ...],
    label_names: Sequence[str] | None,
) -> bool:
    """Load the source's head (``<prefix>weight`` / ``<prefix>bias`` of the first prefix present)
    into ``head`` when it is a head of one of ``kinds`` (Hugging Face architectures, vitrain
    factories; an unknown kind is accepted) and its shape fits, its rows matched to
    ``label_names`` (the data's labels in label-index order) by :func:`head_rows`. Returns whether
    it did (else the head stays fresh, logged)."""
    where = f"{trunk.key}={trunk.source}"
    for prefix in prefixes:
        weight = trunk.head.get(f"{prefix}weight")
        if weight is None:
            continue
        if trunk.head_kind is not None and trunk.head_kind not in kinds:
            log.info(
                "%s holds a %s head, not a %s one: the head starts fresh",
                where,
                trunk.head_kind,
                " / ".join(kinds),
            )
            return False
        bias = trunk.head.get(f"{prefix}bias")
        if weight.shape != head.weight.shape or (head.bias is not None) != (bias is not None):
            log.warning(
                "%s: its head %s%s has shape %s, this network's %s: the head starts fresh",
                where, prefix, "weight", tuple(weight.shape), tuple(head.weight.shape),
            )  # fmt: skip
            return False
        rows = head_rows(trunk.head_labels, label_names, weight.shape[0], where)
        head.weight.copy_(weight[rows])
        if bias is not None:
            head.bias.copy_(bias[rows])
        log.info("%s: head loaded from %s*", where, prefix)
        return True
    return False


def head_rows(names: list[str] | None, wanted: Sequence[str] | None, rows: int, where: str) -> list[int]:
    """The row of a source head (whose rows are labelled ``names``; None: unnamed) for each of the
    data's labels ``wanted`` (label-index order; None: unknown): the same names in any order (exact,
    else ignoring case, as transformers' ``run_glue.py`` compares them); other names are a
    :class:`UserError` naming both lists; unnamed rows, or a single output (regression), keep
    their order."""
    order = list(range(rows))
    if rows == 1:
        return order
    if names is None or len(names) != rows:
        log.info(
            "%s: the head's rows have no label names (id2label LABEL_0, LABEL_1, ...): assumed to be the data's "
            "labels in order (%s)", where, ", ".join(wanted) if wanted else "names unknown",
        )  # fmt: skip
        return order
    if wanted is None:
        log.info("%s: the head's labels are %s; the data's are unknown: order kept", where, ", ".join(names))
        return order
    wanted = [str(name) for name in wanted]
    index = {name: row for row, name in enumerate(names)}
    if set(wanted) != set(index):
        index = {name.casefold(): row for row, name in enumerate(names)}
        wanted_folded = [name.casefold() for name in wanted]
        if len(index) != rows or set(wanted_folded) != set(index):
            raise UserError(
                f"{where}: its head predicts the labels {', '.join(names)} (in row order) but the data's "
                f"labels are {', '.join(wanted)}: a head is reused only for the same labels, matched by name. "
                "Start from weights without this head, or name the head's label for each of the data's "
                f"labels, in the data's order: model.net.label_names=[{','.join(names)}] if the head's rows are "
                "already in the data's order."
            )
        wanted = wanted_folded
    matched = [index[name] for name in wanted]
    if matched != order:
        log.info(
            "%s: the head's rows reordered by label name to the data's order (%s)", where, ", ".join(wanted)
        )
    return matched


def check_label_names(label_names: Sequence[str] | None, num_labels: int) -> list[str] | None:
    """``model.net.label_names`` as a list; one name per label (regression: ignored)."""
    if label_names is None or num_labels == 1:
        return None
    names = [str(name) for name in label_names]
    if len(names) != num_labels:
        raise UserError(
            f"model.net.num_labels={num_labels} but model.net.label_names (null: the data's labels) has {len(names)}: "
            f"{', '.join(names[:12])}{' ...' if len(names) > 12 else ''}. Leave model.net.num_labels at its default "
            "(the data's label count), or give one name per label."
        )
    return names
