"""Released weights and tokenizers by name, through the Hugging Face hub and its local cache.

Three kinds of reference, in this order:

* a local file (a weight file, a ``tokenizer.json``, ...): used as it is;
* a local Hugging Face model directory (``config.json`` beside ``model.safetensors`` or
  ``pytorch_model.bin``, tokenizer files): read from there;
* a hub id (``gpt2``, ``bert-base-uncased``, ``org/name``): fetched with ``huggingface_hub``
  into its cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``);
  a cached copy is used without network. With ``HF_HUB_OFFLINE=1`` nothing is downloaded.

A model that is neither cached nor reachable is one :class:`UserError` naming the model, the
cache and the command that fetches it. timm networks (``model.net.pretrained=true``) go
through :func:`create_timm_model`, which wraps timm's own hub loading the same way.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import socket
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from vitrain.errors import UserError

log = logging.getLogger(__name__)

HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "vocab.txt")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
_FILE_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".json", ".txt", ".ckpt")


def is_offline() -> bool:
    """Whether hub downloads are off (``HF_HUB_OFFLINE``, read now, not at import)."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE")
    if value is not None:
        return value.strip().upper() in ("1", "ON", "YES", "TRUE")
    return bool(constants.HF_HUB_OFFLINE)


def cache_dir() -> str:
    """The hub cache folder: ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else huggingface_hub's default
    (read now, so a test or a job script can point it elsewhere after import)."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return constants.HF_HUB_CACHE


def looks_like_hub_id(spec: str) -> bool:
    """``gpt2``, ``bert-base-uncased``, ``org/name``: not a path, no file suffix."""
    return bool(_HUB_ID.fullmatch(spec)) and not spec.lower().endswith(_FILE_SUFFIXES)


def not_cached(
    where: str, what: str, repo_id: str, files: tuple[str, ...] = (), why: str | None = None
) -> UserError:
    """The one error for a hub file that is neither in the cache nor to be fetched: ``where`` (the
    config entry), ``what`` is missing, ``why`` it cannot be fetched now (None: found out here),
    and the command that fetches ``files`` of ``repo_id`` (all of it when none are named)."""
    if why is None and is_offline():
        why = "HF_HUB_OFFLINE=1"
    elif why is None:
        why = "the hub does not hold it" if hub_reachable() else "the hub is unreachable"
    command = f"huggingface-cli download {repo_id} {' '.join(files)}".rstrip()
    return UserError(
        f"{where}: {what} is not in the local Hugging Face cache and {why}: fetch it once where there is "
        f"network ({command}), into the cache {cache_dir()} (HF_HUB_CACHE / HF_HOME pick another); or give "
        "a local model folder or weight file."
    )


def hub_file(repo_id: str, filename: str, where: str) -> Path | None:
    """The local path of ``filename`` of hub model ``repo_id``, or None when the model exists (or
    is cached) without that file.

    The cache is tried first, without any request; only a file that is not cached is downloaded,
    and only when downloads are on and the hub answers a quick connection check (so a machine
    without network fails at once instead of retrying). Offline and not cached, or a model that
    does not exist, is a :class:`UserError` starting with ``where`` (the config entry)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(hf_hub_download(repo_id, filename, cache_dir=cache_dir(), local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    offline = is_offline()
    reachable = not offline and hub_reachable()
    try:
        if not reachable:
            raise LocalEntryNotFoundError(f"{repo_id}/{filename} is not cached")
        return Path(hf_hub_download(repo_id, filename, cache_dir=cache_dir()))
    except LocalEntryNotFoundError:  # not cached, and offline or the hub unreachable
        if _cached_repo(repo_id):  # the model is cached, without this file
            return None
        why = "HF_HUB_OFFLINE=1" if offline else "the hub is unreachable"
        raise not_cached(where, f"the model {repo_id}", repo_id, why=why) from None
    except (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError) as err:
        raise UserError(
            f"{where}: no model {repo_id} on the Hugging Face hub, or it needs a login "
            f"({type(err).__name__}). Check the id, or give a local model folder or weight file."
        ) from None
    except EntryNotFoundError:
        return None


@functools.cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub endpoint opens within ``timeout`` seconds (checked once
    per process). Behind an HTTPS proxy the check is left to the download itself."""
    from huggingface_hub import constants

    if os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy"):
        return True
    url = urllib.parse.urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        log.warning(
            "The Hugging Face hub (%s) is unreachable: using the local cache only.", constants.ENDPOINT
        )
        return False


def _cached_repo(repo_id: str) -> bool:
    """Whether the cache holds a snapshot of ``repo_id`` (some of its files)."""
    folder = Path(cache_dir()) / ("models--" + repo_id.replace("/", "--")) / "snapshots"
    return folder.is_dir() and any(folder.iterdir())


@dataclass
class HFModel:
    """A Hugging Face model resolved to local files."""

    source: str  # what the user gave
    weights: Path
    config: dict | None  # config.json (None for a bare weight file)


def resolve_hf_model(spec: str, key: str = "model.net.hf_weights") -> HFModel:
    """``spec`` (a weight file, a local HF model directory or a hub id) -> local files."""
    path = Path(spec).expanduser()
    if path.is_file():
        return HFModel(spec, path, None)
    if path.is_dir():
        weights = next((path / f for f in HF_WEIGHT_FILES if (path / f).is_file()), None)
        if weights is None:
            raise UserError(f"{key}={spec}: the folder holds no {' or '.join(HF_WEIGHT_FILES)}.")
        return HFModel(spec, weights, _read_config(path / "config.json", key, spec))
    if not looks_like_hub_id(spec):
        raise UserError(
            f"{key}={spec}: no such file or folder. Give a weight file (.safetensors / .bin), a Hugging "
            "Face model folder (config.json + weights) or a hub id (gpt2, bert-base-uncased)."
        )
    where = f"{key}={spec}"
    config = hub_file(spec, "config.json", where)
    weights = next((w for f in HF_WEIGHT_FILES if (w := hub_file(spec, f, where)) is not None), None)
    if config is None or weights is None:
        missing = "config.json" if config is None else " or ".join(HF_WEIGHT_FILES)
        raise not_cached(where, f"its {missing}", spec, ("config.json", HF_WEIGHT_FILES[0]))
    log.info("%s=%s: %s", key, spec, weights)
    return HFModel(spec, weights, _read_config(config, key, spec))


def _read_config(path: Path, key: str, spec: str) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{key}={spec}: cannot read {path} ({err}).") from err


def resolve_tokenizer(spec: str, key: str = "data.tokenizer") -> str:
    """A tokenizer reference -> a local file or folder: local paths as they are, a hub id to
    the cached snapshot folder holding its ``tokenizer.json`` (or ``vocab.json`` + ``merges.txt``,
    or ``vocab.txt``)."""
    if Path(spec).expanduser().exists() or not looks_like_hub_id(spec):
        return spec
    where = f"{key}={spec}"
    for name in TOKENIZER_FILES:
        found = hub_file(spec, name, where)
        if found is not None:
            if name == "vocab.json" and hub_file(spec, "merges.txt", where) is None:
                continue
            return str(found.parent)
    raise not_cached(where, f"its tokenizer ({', '.join(TOKENIZER_FILES)})", spec, ("tokenizer.json",))


def hf_architecture(
    arch: dict, hf_weights, keys: dict[str, str], model_type: str, overrides: dict, vocab_size: int | None
) -> tuple[dict, HFModel | None]:
    """``arch`` completed from the ``config.json`` of ``hf_weights`` (a hub id or a model folder;
    a bare weight file has none) and the resolved weights (None without ``hf_weights``)."""
    source = resolve_hf_model(str(hf_weights)) if hf_weights else None
    if source is not None and source.config is not None:
        found = arch_from_hf_config(source.config, keys, model_type, overrides, vocab_size, source.source)
        arch = {**arch, **found}
    return arch, source


# the fix of Hugging Face weights that do not fit a GPT / BERT (vitrain.checkpoints.check_fit)
HF_MISFIT_FIX = "Pick the variant (and vocab_size, n_positions) of the file."


def describe_config(
    config, keys: tuple[str, ...] = ("n_layer", "n_head", "n_embd", "vocab_size", "n_positions")
) -> str:
    """The architecture of a GPT / BERT config (``GPTConfig``, ``BertConfig``) for messages:
    ``n_layer=12, n_head=12, n_embd=768, vocab_size=50257, n_positions=1024``."""
    return ", ".join(f"{k}={getattr(config, k)}" for k in keys if hasattr(config, k))


def rename_first(name: str, renames: list[tuple[str, str]]) -> str | None:
    """``name`` renamed by the first ``(pattern, replacement)`` of ``renames`` whose regular
    expression matches it (Hugging Face names -> vitrain's), or None when none does."""
    for pattern, replacement in renames:
        new, hits = re.subn(pattern, replacement, name)
        if hits:
            return new
    return None


def arch_from_hf_config(
    config: dict, keys: dict[str, str], model_type: str, overrides: dict, vocab_size: int | None, source: str
) -> dict:
    """The architecture fields (``keys``: Hugging Face name -> ours) of a ``config.json``.

    The file must be a ``model_type`` model. An explicit override (``model.net.n_layer=...``) or
    a ``vocab_size`` (the data's tokenizer) that differs from the file is a :class:`UserError`
    naming both values (and, for the vocabulary, both embedding shapes)."""
    found_type = config.get("model_type", model_type)
    if found_type != model_type:
        raise UserError(
            f"model.net.hf_weights={source} is a {found_type!r} model, not {model_type!r}: pick weights of "
            "this model family or another model config."
        )
    arch = {ours: config[theirs] for theirs, ours in keys.items() if theirs in config}
    clashes = [f"{k}={overrides[k]} vs {arch[k]}" for k in arch if k in overrides and overrides[k] != arch[k]]
    if vocab_size is not None and vocab_size != arch.get("vocab_size", vocab_size):
        width = arch.get("n_embd")
        clashes.append(
            f"vocab_size={vocab_size} (the data's tokenizer: token embedding {(vocab_size, width)}) vs "
            f"{arch['vocab_size']} (token embedding {(arch['vocab_size'], width)}); use the model's tokenizer, "
            f"data.tokenizer={source}"
        )
    if clashes:
        raise UserError(
            f"model.net.hf_weights={source} does not fit model.net (configured vs its config.json): "
            + "; ".join(clashes)
        )
    return arch


# ------------------------------------------------------------------ timm
def create_timm_model(
    name: str,
    pretrained: bool,
    name_key: str = "model.net.name",
    pretrained_key: str = "model.net.pretrained",
    pretrained_file: str | Path | None = None,
    file_key: str = "model.net.pretrained_file",
    **kwargs,
):
    """``timm.create_model(name, pretrained=...)`` with released weights by name or tag, or with
    the local weights of ``pretrained_file``: either way timm's own loader adapts them.

    timm fetches released weights from the hub (``timm/<name>.<tag>``) into the same cache. Its
    loader runs the model's ``checkpoint_filter_fn`` (position tables resized to ``img_size``),
    adapts the first convolution to ``in_chans`` and starts a new classifier when ``num_classes``
    differs from the weights'. A name without released weights, weights that are neither cached
    nor reachable, and a file that does not fit the network are each a :class:`UserError`.
    """
    import timm
    from timm.models import get_pretrained_cfg

    if not timm.is_model(name.split(".")[0]):
        raise UserError(f"{name_key}={name!r}: timm has no such model. Pick a name from timm.list_models().")
    if pretrained_file:
        kwargs["pretrained_cfg_overlay"] = local_weights_overlay(name, pretrained_file, file_key)
        try:
            net = timm.create_model(name, pretrained=True, **kwargs)
        except RuntimeError as err:  # timm's load_state_dict: a tensor the network does not have
            raise UserError(
                f"{file_key}={str(pretrained_file)!r} does not fit {name} with its overrides (check "
                f"model.net.name and its size overrides): {mismatch_lines(err)}"
            ) from err
        state = net.pretrained_cfg.pop("state_dict")  # do not keep a second copy of the weights alive
        check_new_keys(net, state, pretrained_file, file_key)
        log.info("Loaded %s (%s) with timm's loader", pretrained_file, file_key)
        return net
    if pretrained and "pretrained_cfg_overlay" not in kwargs:
        try:
            cfg = get_pretrained_cfg(name, allow_unregistered=False)
        except RuntimeError:  # an unknown tag
            cfg = None
        if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
            base = name.split(".")[0]
            tags = timm.list_pretrained(f"{base}.*")
            raise UserError(
                f"{name_key}={name}: timm has no released weights under this name"
                + (
                    f"; tags with weights: {', '.join(tags[:8])}" + (" ..." if len(tags) > 8 else "")
                    if tags
                    else ""
                )
                + f". Pick one, or set {pretrained_key}=false."
            )
        if cfg.hf_hub_id:  # timm prefers the hub over a url
            # the file from the cache (fetched once when missing), handed to timm's own loader,
            # which then adapts it to the network without touching the network itself
            file = _hub_weights(cfg.hf_hub_id, pretrained_key, cfg.hf_hub_filename)
            kwargs["pretrained_cfg_overlay"] = {"file": str(file)}
    return timm.create_model(name, pretrained=pretrained, **kwargs)


def mismatch_lines(err: RuntimeError, limit: int = 2) -> str:
    """The first ``limit`` reasons of a ``load_state_dict`` error (its first line is a header)."""
    lines = [line.strip() for line in str(err).splitlines()]
    return "; ".join(line for line in lines[1 : 1 + limit] if line) or lines[0]


def check_new_keys(net, state: dict, path: str | Path, key: str) -> None:
    """Refuse a load that left tensors other than the classifier at their initialisation.

    timm loads strictly unless the class count differs; then the head is dropped and the rest
    loads non-strictly, so a file of a shallower network would leave whole blocks random."""
    cfg = net.pretrained_cfg
    if cfg.get("num_classes") == getattr(net, "num_classes", None) or not cfg.get("classifier"):
        return  # timm's strict load already checked every key
    heads = (cfg["classifier"],) if isinstance(cfg["classifier"], str) else tuple(cfg["classifier"])
    new = [k for k in net.state_dict() if k not in state and not k.startswith(tuple(f"{h}." for h in heads))]
    if new:
        from vitrain.checkpoints import shorten_keys

        raise UserError(
            f"{key}={str(path)!r} lacks weights for {shorten_keys(new)}: is it a file of a different architecture? "
            "Check model.net.name and its size overrides (depth, embed_dim, patch_size)."
        )


def local_weights_overlay(name: str, path: str | Path, key: str) -> dict:
    """The ``pretrained_cfg_overlay`` that hands the weights of ``path`` (``.pth`` / ``.bin`` /
    ``.safetensors``, or a vitrain ``.ckpt``) to timm's loader, stating the file's own class count
    and input channels.

    timm keeps a classifier only when ``num_classes`` equals the pretrained config's, which is
    the released tag's (1000 for ImageNet-1k) unless the overlay says otherwise: without it, the
    head of a file fine-tuned on 10 classes would be dropped when loaded into a 10-class network.
    """
    from timm.models import get_pretrained_cfg

    from vitrain.checkpoints import read_weights

    state = read_weights(path, key)
    cfg = get_pretrained_cfg(name)
    overlay = {"state_dict": state}
    if cfg is not None and cfg.classifier:
        head = cfg.classifier if isinstance(cfg.classifier, str) else cfg.classifier[0]
        weight = state.get(f"{head}.weight")
        overlay["num_classes"] = weight.shape[0] if weight is not None else 0
    if cfg is not None and cfg.first_conv and cfg.input_size:
        conv = cfg.first_conv if isinstance(cfg.first_conv, str) else cfg.first_conv[0]
        weight = state.get(f"{conv}.weight")
        if weight is not None and weight.ndim == 4:
            overlay["input_size"] = (weight.shape[1], *cfg.input_size[1:])
    return overlay


def _hub_weights(repo_id: str, key: str, filename: str | None = None) -> Path:
    """The cached weight file of timm model ``repo_id`` (safetensors first), fetched when missing."""
    names = dict.fromkeys([*HF_WEIGHT_FILES, *([filename] if filename else [])])
    for name in names:
        path = hub_file(repo_id, name, f"{key}=true (timm weights)")
        if path is not None:
            return path
    raise not_cached(f"{key}=true", f"the timm weight file of {repo_id}", repo_id, (HF_WEIGHT_FILES[0],))
