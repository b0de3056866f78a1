"""Cheap adaptation of a network: freezing parameters by name.

Plain torch (no Lightning, no Hydra). :class:`vitrain.tasks.base.Task` applies it to every task
(``model.freeze``, ``model.frozen_eval``; docs/adapters.md).

**Names.** Patterns and messages use the task's parameter names without the leading ``net.``
(``blocks.0.attn.qkv.weight``); parameters a task keeps outside its network keep their own
names.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase

from torch import nn

from vitrain.errors import UserError


# ------------------------------------------------------------------ names and patterns
def user_name(name: str) -> str:
    """A parameter name as users see it: ``net.blocks.0.attn.qkv.weight`` -> ``blocks.0.attn.qkv.weight``."""
    return name.removeprefix("net.")


def named_parameters(module: nn.Module) -> dict[str, nn.Parameter]:
    """``module``'s parameters by :func:`user_name`."""
    return {user_name(name): param for name, param in module.named_parameters()}


def matches(name: str, pattern: str) -> bool:
    """Whether ``pattern`` (fnmatch: ``*``, ``?``, ``[...]``) picks parameter ``name``; a pattern
    also picks everything under it (``blocks.0`` = ``blocks.0`` and ``blocks.0.*``)."""
    return fnmatchcase(name, pattern) or fnmatchcase(name, pattern + ".*")


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
