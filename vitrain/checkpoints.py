"""Reading checkpoints and weight files safely, checking weights against a network, loading a
checkpoint into a task, exporting the bare network. (Finding a run's newest checkpoint is the run
layer's: ``vitrain.run.lifecycle``.)"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from timm.models import load_state_dict as timm_load_state_dict

from vitrain.errors import UserError


def load_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict:
    """``torch.load(path, weights_only=True)`` with a clear error for a missing or bad file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{key}={path}: no such checkpoint file.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # truncated, not a torch file, or holds unsafe pickled objects
        raise UserError(
            f"{key}={path}: not a readable checkpoint ({type(err).__name__}: {str(err).splitlines()[0]}). "
            "Point it at a .ckpt written by vitrain, e.g. <run_dir>/checkpoints/last.ckpt."
        ) from err


def load_task_weights(
    task: torch.nn.Module, checkpoint: dict, path: str | Path, model_choice: str | None
) -> None:
    """Load ``checkpoint``'s weights into ``task``; a checkpoint of another network is one clear error
    naming both networks instead of a list of size mismatches."""
    trained = checkpoint.get("vitrain", {}).get("net", {})
    load_fitting(
        task,
        task_state_dict(checkpoint),
        source=f"ckpt_path={path}",
        holds=trained.get("name") or trained.get("_target_") or "another network",
        network=f"model={model_choice}",
        fix="Pass the model= choice and size overrides the checkpoint was trained with (see "
        "resolved_config.yaml next to its run).",
    )


# ------------------------------------------------------------------ weights against a network
def matches(name: str, pattern: str) -> bool:
    """Whether ``pattern`` (fnmatch: ``*``, ``?``, ``[...]``) picks tensor or parameter ``name``; a
    pattern also picks everything under it (``blocks.0`` = ``blocks.0`` and ``blocks.0.*``)."""
    return fnmatchcase(name, pattern) or fnmatchcase(name, pattern + ".*")


def _picked(name: str, patterns: Sequence[str]) -> bool:
    return any(matches(name, pattern) for pattern in patterns)


@dataclass
class StateFit:
    """How a state dict fits a network (see :func:`check_fit`); names sorted."""

    missing: list[str]  # in the network, not in the state dict
    unexpected: list[str]  # in the state dict, not in the network
    resized: list[str]  # in both, with other shapes

    @property
    def fresh(self) -> list[str]:
        """The network's tensors the state dict does not set (they keep their initialisation)."""
        return sorted(self.missing + self.resized)

    @property
    def dropped(self) -> list[str]:
        """The state dict's tensors that are not loaded."""
        return sorted(self.unexpected + self.resized)


def check_fit(
    own: Mapping[str, torch.Tensor],
    state: Mapping[str, torch.Tensor],
    *,
    source: str,
    network: str,
    fix: str,
    holds: str | None = None,
    may_miss: Sequence[str] = (),
    may_add: Sequence[str] = (),
    may_resize: Sequence[str] = (),
) -> StateFit:
    """Compare the weights ``state`` with a network's ``own`` state dict: the one check of every
    weight loader (task checkpoints, released and converted weights, encoders that initialise
    another network).

    Tensors of ``own`` missing from ``state``, tensors of ``state`` that ``own`` lacks and tensors
    of both with another shape are each allowed only where ``may_miss`` / ``may_add`` /
    ``may_resize`` pick them (patterns as :func:`matches`: ``"head"`` picks ``head.weight``,
    ``"*"`` everything). Anything else is one :class:`UserError`: ``source`` (the config key and
    file, ``model.net.checkpoint='sam.pth'``) ``holds`` (what the file's network is, when known)
    and does not fit ``network`` (the configured one), how, and ``fix``.
    """
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    resized = sorted(k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape))
    fit = StateFit(missing, unexpected, resized)
    bad_missing = [k for k in missing if not _picked(k, may_miss)]
    bad_unexpected = [k for k in unexpected if not _picked(k, may_add)]
    bad_resized = [k for k in resized if not _picked(k, may_resize)]
    if not (bad_missing or bad_unexpected or bad_resized):
        return fit
    details = []
    if bad_resized:
        shapes = [
            f"{k}: {tuple(state[k].shape)} in the checkpoint, {tuple(own[k].shape)} here" for k in bad_resized
        ]
        more = f"; and {len(shapes) - 3} more" if len(shapes) > 3 else ""
        details.append(f"{len(shapes)} of another shape ({'; '.join(shapes[:3])}{more})")
    if bad_missing:
        details.append(f"{len(bad_missing)} missing: {shorten_keys(bad_missing, 4)}")
    if bad_unexpected:
        details.append(f"{len(bad_unexpected)} unexpected: {shorten_keys(bad_unexpected, 4)}")
    what = f" holds {holds}, which" if holds else ""
    raise UserError(f"{source}{what} does not fit {network}: {'; '.join(details)}. {fix}")


def load_fitting(
    module: torch.nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    ignore: Sequence[str] = (),
    **check: Any,
) -> StateFit:
    """Load ``state`` into ``module`` after :func:`check_fit` (``check``: its keyword arguments):
    every tensor the check accepts, none of another shape. Tensors ``ignore`` picks (a tied
    output layer, a position table the network computes) are neither checked nor loaded."""
    own = {k: v for k, v in module.state_dict().items() if not _picked(k, ignore)}
    state = {k: v for k, v in state.items() if not _picked(k, ignore)}
    fit = check_fit(own, state, **check)
    resized = set(fit.resized)
    module.load_state_dict({k: v for k, v in state.items() if k in own and k not in resized}, strict=False)
    return fit


def checkpoint_network(checkpoint: dict) -> str:
    """What network a vitrain checkpoint holds, for messages: ``<factory> (name=..., model=...)``."""
    meta = checkpoint.get("vitrain", {}) if isinstance(checkpoint, dict) else {}
    net = meta.get("net", {})
    model = (meta.get("config") or {}).get("choices", {}).get("model")
    return f"{net.get('_target_', 'a network')} (name={net.get('name')}, model={model})"


def task_state_dict(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The task's ``state_dict`` of ``checkpoint`` (``torch.compile`` runs in place: no key prefixes)."""
    return dict(checkpoint["state_dict"])


def net_state_dict(checkpoint: dict, source: str = "the checkpoint") -> dict[str, torch.Tensor]:
    """The bare network's weights (the task's ``net.*`` entries, prefix removed). A checkpoint
    whose network holds LoRA adapters (``model.lora``) is a :class:`UserError` naming
    ``source``: its weights mean nothing without the adapters, ``mode=export`` merges them."""
    state = task_state_dict(checkpoint)
    if any(".lora_A." in k for k in state):
        raise UserError(
            f"{source} holds LoRA adapters (trained with model.lora): merge them into the network first "
            "with python train.py mode=export ckpt_path=<that checkpoint>, and use its export/model.safetensors."
        )
    return {k[len("net.") :]: v.contiguous() for k, v in state.items() if k.startswith("net.")}


def export_network(checkpoint: dict, out_dir: str | Path) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (constructor config, class names).

    A linear probe's ``BatchNorm1d -> Linear`` head is folded into one ``Linear`` (same outputs
    in eval mode), so a probed network has the plain timm layout too.

    For a timm network the pair loads without vitrain::

        cfg = json.load(open("config.json"))
        net = timm.create_model(cfg["name"], **cfg["kwargs"])
        net.load_state_dict(safetensors.torch.load_file("model.safetensors"))
    """
    meta = checkpoint.get("vitrain", {})
    net_cfg = dict(meta.get("net", {}))
    target = net_cfg.pop("_target_", None)
    # weight sources, not constructor arguments (the exported weights already hold them)
    for key in (
        "pretrained",
        "pretrained_file",
        "init_from",
        "require_init_from",
        "checkpoint",
        "hf_weights",
    ):
        net_cfg.pop(key, None)
    name = net_cfg.pop("name", None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / "model.safetensors"
    save_file(fold_probe_head(net_state_dict(checkpoint)), weights)
    weights.chmod(0o666 & ~_umask())  # safetensors creates the file 0600; match every other file
    config = {"target": target, "name": name, "kwargs": net_cfg, "class_names": meta.get("class_names", [])}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# eps of the linear probe's BatchNorm1d (vitrain.models.vit.prepare_linear_probe)
PROBE_BN_EPS = 1e-6


def fold_probe_head(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fold a linear probe's head (``head.0`` BatchNorm without affine, ``head.1`` Linear) into
    one ``head`` Linear: ``W' = W / sqrt(var + eps)`` (scaling input column j by its running
    std), ``b' = b - W' @ mean``. Other state dicts are returned unchanged."""
    if "head.0.running_var" not in state or "head.1.weight" not in state:
        return state
    out = {k: v for k, v in state.items() if not k.startswith(("head.0.", "head.1."))}
    inv_std = (state["head.0.running_var"].double() + PROBE_BN_EPS).rsqrt()  # (D,)
    weight = state["head.1.weight"].double() * inv_std  # (num_classes, D)
    bias = state["head.1.bias"].double() - weight @ state["head.0.running_mean"].double()
    dtype = state["head.1.weight"].dtype
    out["head.weight"], out["head.bias"] = weight.to(dtype).contiguous(), bias.to(dtype).contiguous()
    return out


def read_weights(path: str | Path, key: str = "model.net.pretrained_file") -> dict[str, torch.Tensor]:
    """The state dict stored in ``path``: a timm weight file (``.pth`` / ``.bin`` /
    ``.safetensors``) or a vitrain Lightning checkpoint (``.ckpt``: its ``net.*`` weights without
    the prefix). Read with ``weights_only``; a missing or unreadable file is a
    :class:`UserError` naming ``key``."""
    path = Path(path)
    if path.suffix == ".ckpt":
        checkpoint = load_checkpoint(path, key=key)
        if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
            raise UserError(f"{key}={str(path)!r}: not a Lightning checkpoint (it has no state_dict).")
        return net_state_dict(checkpoint, f"{key}={str(path)!r}")
    if not path.is_file():
        raise UserError(
            f"{key}={str(path)!r}: no such file. Give the path of a weight file (.pth, .bin or "
            ".safetensors) or of a vitrain checkpoint (.ckpt)."
        )
    # timm logs "Loaded {key} from checkpoint" with an empty key for a plain state dict: the
    # callers say what they loaded
    timm_log = logging.getLogger("timm.models._helpers")
    level = timm_log.level
    timm_log.setLevel(logging.WARNING)
    try:
        return timm_load_state_dict(str(path), weights_only=True)
    except Exception as err:  # corrupt or not a state dict: name the file
        raise UserError(f"{key}={str(path)!r}: cannot be read ({err}).") from err
    finally:
        timm_log.setLevel(level)


def shorten_keys(keys: list[str], limit: int = 6) -> str:
    """``keys`` joined, the first ``limit`` of them and a count of the rest."""
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more
