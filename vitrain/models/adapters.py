"""Cheap adaptation of a network: freezing parameters by name, and LoRA adapters through ``peft``.

Plain torch and peft (no Lightning, no Hydra). :class:`vitrain.tasks.base.Task` applies them to
every task (``model.freeze``, ``model.frozen_eval``, ``model.lora``; docs/adapters.md).

**Names.** Patterns, messages and checkpoints use one layout: the task's parameter names without
the leading ``net.`` (``blocks.0.attn.qkv.weight``; parameters a task keeps outside its network
keep their own names) and without peft's ``base_layer.``. An adapted layer's weight keeps its
name; its adapters are ``<layer>.lora_A.default.weight`` and ``<layer>.lora_B.default.weight``.
:func:`keep_base_names` makes ``state_dict`` / ``load_state_dict`` use that layout, so peft's
wrappers (``base_layer.``, ``base_model.model.``) never show in a checkpoint or an export.

**LoRA** (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"): each targeted
layer ``W`` gets ``W x + (alpha / r) B A x`` with ``A`` (r x in) random and ``B`` (out x r) zero,
so the adapted network starts as the base one. peft's ``LoraModel`` (what
``peft.inject_adapter_in_model`` builds) injects them in place; the tuner is kept to merge them
back (``merge_and_unload``) on export.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors.torch import save_file
from torch import nn

from vitrain.checkpoints import matches, shorten_keys

if TYPE_CHECKING:
    from peft import LoraModel
from vitrain.errors import UserError

log = logging.getLogger(__name__)

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
# the key prefix of peft's own adapter files (PeftModel.save_pretrained)
PEFT_PREFIX = "base_model.model."


# ------------------------------------------------------------------ names and patterns
def user_name(name: str) -> str:
    """A parameter name as users see it: ``net.blocks.0.attn.qkv.base_layer.weight`` ->
    ``blocks.0.attn.qkv.weight`` (the network's prefix and peft's wrappers dropped)."""
    return name.removeprefix("net.").replace(".base_layer.", ".")


def named_parameters(module: nn.Module) -> dict[str, nn.Parameter]:
    """``module``'s parameters by :func:`user_name`."""
    return {user_name(name): param for name, param in module.named_parameters()}


def select(names: Iterable[str], patterns: Sequence[str], key: str, strict: bool = True) -> set[str]:
    """The names ``patterns`` pick, in order: a pattern adds its matches, ``!pattern`` takes its
    matches out again. With ``strict``, a pattern that matches no name is a :class:`UserError`
    naming ``key`` and the top-level names."""
    names = list(names)
    picked: set[str] = set()
    for pattern in patterns:
        pattern = str(pattern)
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        hits = {name for name in names if matches(name, body)}
        if not hits and strict:
            raise UserError(
                f"{key}: {pattern!r} matches no parameter. Names are relative to the network, e.g. "
                f"'blocks.0.*'; its top-level names: {', '.join(top_level(names))}."
            )
        picked = picked - hits if negate else picked | hits
    return picked


def top_level(names: Iterable[str]) -> list[str]:
    """The first components of ``names``, in order, once each."""
    return list(dict.fromkeys(name.split(".", 1)[0] for name in names))


def parameter_table(module: nn.Module) -> list[tuple[str, int, int]]:
    """``(top-level name, parameters, trainable)`` for each top-level name of ``module``'s
    parameters (``dry_run`` prints it when something is frozen)."""
    rows: dict[str, list[int]] = {}
    for name, param in named_parameters(module).items():
        row = rows.setdefault(name.split(".", 1)[0], [0, 0])
        row[0] += param.numel()
        row[1] += param.numel() if param.requires_grad else 0
    return [(name, total, trainable) for name, (total, trainable) in rows.items()]


# ------------------------------------------------------------------ freezing
def freeze(module: nn.Module, patterns: Sequence[str], key: str = "model.freeze") -> int:
    """Freeze (``requires_grad=False``) the parameters of ``module`` that ``patterns`` pick
    (:func:`select`); returns how many tensors. Never makes a parameter trainable: ``!pattern``
    only spares what an earlier pattern picked."""
    params = named_parameters(module)
    picked = select(params, patterns, key)
    for name in picked:
        params[name].requires_grad_(False)
    return len(picked)


def check_trainable(module: nn.Module, settings: str) -> None:
    """A :class:`UserError` naming ``settings`` when no parameter of ``module`` trains."""
    params = named_parameters(module)
    if params and not any(p.requires_grad for p in params.values()):
        raise UserError(
            f"{settings} leaves nothing to train: all {len(params)} parameter tensors are frozen. Spare "
            f"some, e.g. model.freeze=['*','!head'] trains the head only; top-level names: "
            f"{', '.join(top_level(params))}."
        )


def frozen_modules(module: nn.Module) -> list[str]:
    """Names of the largest submodules of ``module`` that hold parameters, all of them frozen:
    they run in eval mode while training (``model.frozen_eval``)."""
    found: list[str] = []

    def visit(parent: nn.Module, prefix: str) -> None:
        for name, child in parent.named_children():
            flags = [p.requires_grad for p in child.parameters()]
            if flags and not any(flags):
                found.append(prefix + name)
            elif flags:
                visit(child, f"{prefix}{name}.")

    visit(module, "")
    return found


# ------------------------------------------------------------------ LoRA
@dataclass(frozen=True)
class LoraSettings:
    """``model.lora``: rank ``r`` (0: no adapters), scale ``alpha / r``, ``dropout`` on the
    adapters' input, peft ``target_modules`` (None: the family's, :data:`LORA_DEFAULTS`) and
    ``train``: parameter-name patterns that train in full beside the adapters (None: the
    family's new head)."""

    r: int = 0
    alpha: float = 16
    dropout: float = 0.0
    target_modules: list[str] | str | None = None
    train: list[str] | None = None


def lora_settings(values: dict) -> LoraSettings:
    """``model.lora`` as :class:`LoraSettings`; an unknown key is a :class:`UserError`."""
    known = set(LoraSettings.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(
            f"model.lora.{unknown[0]}: no such setting; model.lora has {', '.join(sorted(known))}."
        )
    return LoraSettings(**values)


@dataclass(frozen=True)
class LoraDefaults:
    """A family's default LoRA targets (peft ``target_modules``: module-name suffixes, or one
    regular expression matched against the whole name) and the parameters that train in full
    (patterns; the head a task puts on a released network)."""

    target_modules: list[str] | str
    train: list[str] = field(default_factory=list)


# Keyed by network class name (the first match along the class's MRO). Attention as the LoRA
# paper (W_q, W_v; vitrain's ViTs, GPT and BERT fuse q, k and v in one `qkv` layer, so the
# adapter covers all three).
LORA_DEFAULTS: dict[str, LoraDefaults] = {
    # timm ViT (model=vit_*; an MAE encoder fine-tuned from model.net.init_from): blocks.N.attn.{qkv,proj}
    "VisionTransformer": LoraDefaults(["attn.qkv", "attn.proj"], ["head", "fc_norm"]),
    # T2T-ViT's ViT blocks (the tokens-to-token module's attention1/attention2 stay frozen)
    "T2TViT": LoraDefaults(["attn.qkv", "attn.proj"], ["head"]),
    # MAE pretraining: the encoder's attention only (decoder_blocks are left out)
    "MaskedAutoencoderViT": LoraDefaults(r"blocks\.\d+\.attn\.(qkv|proj)"),
    # GPT attention (GPT-2's c_attn and c_proj)
    "GPT": LoraDefaults(["attn.qkv", "attn.proj"]),
    # BERT's query/key/value (fused in layers.N.attn.qkv)
    "BERT": LoraDefaults(["attn.qkv"]),
    # SAM: image_encoder.blocks.N.attn.qkv and every attention projection (q/k/v/out_proj) of the
    # mask decoder's two-way transformer
    "SAM": LoraDefaults(["attn.qkv", "q_proj", "k_proj", "v_proj", "out_proj"]),
    # DETR's transformer attention (nn.MultiheadAttention: in_proj and out_proj) and the new heads
    "DETR": LoraDefaults(["self_attn", "cross_attn"], ["class_embed", "bbox_embed"]),
}

# module types peft's LoRA adapts (candidates listed when target_modules match nothing)
LORA_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding, nn.MultiheadAttention)


def lora_defaults(net: nn.Module) -> LoraDefaults | None:
    """The :data:`LORA_DEFAULTS` entry of ``net``'s class (or of a base class), or None."""
    for cls in type(net).__mro__:
        if cls.__name__ in LORA_DEFAULTS:
            return LORA_DEFAULTS[cls.__name__]
    return None


def lora_candidates(net: nn.Module) -> list[str]:
    """Names of ``net``'s layers LoRA can adapt, block indices as ``*``, once each."""
    names = (
        re.sub(r"\.\d+(?=\.)", ".*", name) for name, m in net.named_modules() if isinstance(m, LORA_LAYERS)
    )
    return list(dict.fromkeys(names))


def add_lora(net: nn.Module, settings: LoraSettings, key: str = "model.lora") -> LoraModel:
    """Inject LoRA adapters into ``net`` in place (peft ``LoraModel``), freeze everything else in
    ``net`` but the parameters ``settings.train`` picks, keep vitrain's key layout
    (:func:`keep_base_names`). Returns peft's tuner (``merge_and_unload``)."""
    from peft import LoraConfig, LoraModel

    if (
        not isinstance(settings.r, int)
        or settings.r < 1
        or settings.alpha <= 0
        or not 0 <= settings.dropout < 1
    ):
        raise UserError(
            f"{key}: r={settings.r}, alpha={settings.alpha}, dropout={settings.dropout}: r must be a positive "
            "integer (e.g. 8), alpha positive (e.g. 16) and dropout in [0, 1)."
        )
    defaults = lora_defaults(net)
    targets = settings.target_modules or (defaults.target_modules if defaults else None)
    candidates = shorten_keys(lora_candidates(net), 12)
    if not targets:
        raise UserError(
            f"{key}.target_modules: {type(net).__name__} has no default LoRA targets: name its layers "
            f"(module-name suffixes, or one regular expression); its layers: {candidates}."
        )
    trainable = {name for name, p in named_parameters(net).items() if p.requires_grad}
    config = LoraConfig(
        r=int(settings.r),
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
    )
    try:
        tuner = LoraModel(net, config, adapter_name="default")
    except ValueError as err:  # peft: "Target modules ... not found", or a layer type it cannot adapt
        raise UserError(
            f"{key}.target_modules={targets}: {str(err).splitlines()[0]} Name layers of "
            f"{type(net).__name__} (module-name suffixes, or one regular expression); its layers: {candidates}."
        ) from err
    keep_base_names(net)
    explicit = settings.train is not None
    patterns = settings.train if explicit else (defaults.train if defaults else [])
    params = named_parameters(net)
    # the defaults name heads a network may lack (fc_norm of a cls-token ViT): only explicit ones must match
    for name in select(params, patterns, f"{key}.train", strict=explicit):
        params[name].requires_grad_(name in trainable)
    return tuner


def is_tuner_layer(module: nn.Module) -> bool:
    """Whether ``module`` is a layer peft injected (it wraps ``base_layer``)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return isinstance(module, BaseTunerLayer)


def keep_base_names(net: nn.Module) -> None:
    """Give each adapted layer of ``net`` state-dict hooks that keep vitrain's layout: the
    wrapped layer's entries lose peft's ``base_layer.`` when saved and get it back when loaded
    (nested wrappers, as peft's MultiheadAttention, unwrap level by level)."""
    for module in net.modules():
        if is_tuner_layer(module):
            module.register_state_dict_post_hook(_drop_base_layer)
            module.register_load_state_dict_pre_hook(_add_base_layer)


def _drop_base_layer(module: nn.Module, state: dict, prefix: str, local_metadata: dict) -> None:
    wrapped = prefix + "base_layer."
    keys = [k for k in state if k.startswith(prefix)]  # this layer's entries: the last ones written
    for k in keys:
        value = state.pop(k)
        state[prefix + k[len(wrapped) :] if k.startswith(wrapped) else k] = value


def _add_base_layer(module: nn.Module, state: dict, prefix: str, *args) -> None:
    own = {n for n, _ in module.named_parameters() if not n.startswith("base_layer.")}
    own |= {n for n, _ in module.named_buffers() if not n.startswith("base_layer.")}
    for k in [k for k in state if k.startswith(prefix)]:
        rest = k[len(prefix) :]
        if rest not in own and not rest.startswith("base_layer."):
            state[prefix + "base_layer." + rest] = state.pop(k)


def merge_lora(tuner: LoraModel) -> nn.Module:
    """Merge the adapters into the base weights in fp32 (``merge_and_unload``): the network of
    ``tuner`` (same object) with plain layers again, the same function as before."""
    tuner.model.float()  # merging in bf16 rounds the merged weights (peft merges in the weights' dtype)
    merged = tuner.merge_and_unload()
    if hasattr(merged, "peft_config"):
        del merged.peft_config
    return merged


def save_adapter(net: nn.Module, out_dir: str | Path, trainable_outside: Sequence[str] = ()) -> Path:
    """Write ``net``'s adapters alone as peft writes them (``PeftModel.save_pretrained``):
    ``adapter_model.safetensors`` (keys ``base_model.model.<layer>.lora_A.weight``) and
    ``adapter_config.json``. Layers that trained in full beside the adapters (a new head) go in
    as peft's ``modules_to_save``, so ``PeftModel.from_pretrained(base_network, out_dir)``
    rebuilds the trained network from the base one."""
    from peft import get_peft_model_state_dict

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {PEFT_PREFIX + k: v.detach().contiguous() for k, v in get_peft_model_state_dict(net).items()}
    modules = trained_modules(net)
    net_state = net.state_dict()
    for module in modules:
        for k, v in net_state.items():
            if k.startswith(module + "."):
                state[PEFT_PREFIX + k] = v.detach().contiguous()
    save_file(state, out / ADAPTER_WEIGHTS)
    config = copy.deepcopy(net.peft_config["default"])
    config.modules_to_save = modules or None
    config.inference_mode = True
    config.save_pretrained(str(out))
    return out


def trained_modules(net: nn.Module) -> list[str]:
    """The largest submodules of ``net`` that trained in full beside the adapters: every
    parameter trainable and no adapted layer inside (peft's ``modules_to_save``). A trainable
    parameter that no such module holds (one set on a module with frozen ones) is logged: the
    adapter file cannot carry it."""
    found: list[str] = []

    def visit(parent: nn.Module, prefix: str) -> None:
        for name, child in parent.named_children():
            flags = [p.requires_grad for p in child.parameters()]
            if not any(flags) or is_tuner_layer(child):
                continue
            if all(flags) and not any(is_tuner_layer(m) for m in child.modules()):
                found.append(prefix + name)
            else:
                visit(child, f"{prefix}{name}.")

    visit(net, "")
    covered = tuple(name + "." for name in found)
    loose = [
        name
        for name, p in named_parameters(net).items()
        if p.requires_grad and ".lora_" not in name and not name.startswith(covered)
    ]
    if loose:
        log.warning(
            "The adapter file leaves out %s: they trained but sit beside frozen weights in their module; "
            "the merged model.safetensors holds them.",
            shorten_keys(loose),
        )
    return found
