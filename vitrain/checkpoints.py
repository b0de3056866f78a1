"""Reading checkpoints and weight files safely, loading a checkpoint into a task, exporting the
bare network. (Finding a run's newest checkpoint is the run layer's: ``vitrain.run.lifecycle``.)"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

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
    state = task_state_dict(checkpoint)
    own = task.state_dict()
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    resized = [k for k in own.keys() & state.keys() if own[k].shape != state[k].shape]
    if missing or unexpected or resized:
        trained = checkpoint.get("vitrain", {}).get("net", {})
        trained_name = trained.get("name") or trained.get("_target_") or "another network"
        details = []
        if resized:
            k = sorted(resized)[0]
            details.append(f"{len(resized)} tensors differ in shape, e.g. {k}: {tuple(state[k].shape)} in the "
                           f"checkpoint, {tuple(own[k].shape)} here")  # fmt: skip
        if missing:
            details.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise UserError(
            f"ckpt_path={path} holds {trained_name}, which does not fit model={model_choice} "
            f"({'; '.join(details)}). Pass the model= choice and size overrides the checkpoint was "
            "trained with (see resolved_config.yaml next to its run)."
        )
    task.load_state_dict(state)


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
