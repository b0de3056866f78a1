"""Reading checkpoints safely, finding the newest one, exporting the bare network."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from vitrain.errors import UserError

COMPILE_PREFIX = "_orig_mod."


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


def find_latest(checkpoint_dir: str | Path) -> Path | None:
    """The most recently written ``*.ckpt`` in ``checkpoint_dir`` (None when there is none)."""
    folder = Path(checkpoint_dir)
    files = [p for p in folder.glob("*.ckpt") if p.is_file()] if folder.is_dir() else []
    return max(files, key=lambda p: p.stat().st_mtime_ns, default=None)


def task_state_dict(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The task's ``state_dict`` with ``torch.compile`` prefixes (``_orig_mod.``) removed."""
    return {k.replace(COMPILE_PREFIX, ""): v for k, v in checkpoint["state_dict"].items()}


def net_state_dict(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The bare network's weights (the task's ``net.*`` entries, prefix removed)."""
    state = task_state_dict(checkpoint)
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
    for key in ("pretrained_file", "init_from", "require_init_from", "checkpoint", "hf_weights"):
        net_cfg.pop(key, None)
    name = net_cfg.pop("name", None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(fold_probe_head(net_state_dict(checkpoint)), out / "model.safetensors")
    config = {"target": target, "name": name, "kwargs": net_cfg, "class_names": meta.get("class_names", [])}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


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
