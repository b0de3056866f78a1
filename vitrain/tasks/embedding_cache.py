"""SAM's image-embedding cache: a frozen image encoder's embedding of each image, computed once.

When SAM's image encoder does not train (``model.freeze: [image_encoder, ...]``) and the images
it sees are the same every epoch, its output for an image never changes: fine-tuning the mask
decoder on one's own masks then needs each embedding once (the early MedSAM recipe precomputed
them: bowang-lab/MedSAM ``pre_CT.py`` and ``finetune_and_inference_tutorial.py``).
:class:`EmbeddingCache` keeps them on disk (and, up to a budget, in memory) and hands them back
instead of running the encoder.

**Keys.** An embedding is stored under the key of its image and of its encoder, and read back
only under both:

* :func:`vitrain.data.segmentation.image_key`: a digest of the preprocessed image tensor (its
  pixels after resizing and normalisation, dtype and shape), so a changed file, another resize
  or an augmented copy is another image;
* :func:`encoder_key`: a digest of the encoder's class and every tensor of its state (names,
  dtypes, shapes, values) and of the numeric precision the embeddings are computed in.

Layout: ``<dir>/<encoder key>/<first 2 of image key>/<image key>.safetensors``, the two keys
also in each file's metadata and checked on reading: a file from another encoder (copied or
moved by hand) is recomputed, never used. Writes go to a temporary file then ``os.replace``:
ranks of a DDP run (or concurrent runs) sharing a directory never read a partial file, and two
writers of one key write the same values.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

log = logging.getLogger(__name__)

__all__ = ["EmbeddingCache", "encoder_key", "stochastic_modules"]


def encoder_key(encoder: nn.Module, precision: str) -> str:
    """A digest of ``encoder`` (class, every state tensor) and the ``precision`` its embeddings
    are computed in (``trainer.precision``): 40 hex digits."""
    digest = hashlib.sha1(usedforsecurity=False)
    digest.update(f"{type(encoder).__module__}.{type(encoder).__qualname__}|{precision}".encode())
    for name, tensor in encoder.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"|{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def stochastic_modules(module: nn.Module) -> list[str]:
    """Names of the submodules of ``module`` that make its output random right now: dropout or
    drop path with a non-zero rate, in training mode."""
    names = []
    for name, sub in module.named_modules():
        rate = getattr(sub, "p", None) if isinstance(sub, nn.modules.dropout._DropoutNd) else None
        rate = getattr(sub, "drop_prob", rate)
        if sub.training and rate:
            names.append(name or type(module).__name__)
    return names


class EmbeddingCache:
    """Embeddings of one encoder state, by image key: memory first, then ``root``.

    Args:
        root: the cache directory (every encoder gets its own folder under it).
        encoder: the key of the encoder state (:func:`encoder_key`).
        memory_bytes: embeddings kept in memory (CPU) up to this size; the rest are read from disk.
    """

    def __init__(self, root: str | Path, encoder: str, memory_bytes: int = 1 << 30) -> None:
        self.encoder = encoder
        self.dir = Path(root) / encoder
        self.memory: dict[str, Tensor] = {}
        self.memory_bytes, self.held_bytes = memory_bytes, 0
        self.hits = self.misses = 0
        self.foreign_seen = False

    def path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.safetensors"

    def get(self, key: str) -> Tensor | None:
        """The embedding of image ``key`` ``(C, h, w)`` on the CPU, or None."""
        if key in self.memory:
            return self.memory[key]
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                embedding = f.get_tensor("embedding")
        except (OSError, RuntimeError, ValueError):  # unreadable: compute again
            return None
        if meta.get("encoder") != self.encoder or meta.get("image") != key:
            if not self.foreign_seen:
                log.warning(
                    "Embedding cache: %s was written for another encoder or image (encoder %s, image %s); "
                    "recomputing it and any other such file.",
                    path, meta.get("encoder"), meta.get("image"),
                )  # fmt: skip
                self.foreign_seen = True
            return None
        self.remember(key, embedding)
        return embedding

    def put(self, key: str, embedding: Tensor) -> None:
        """Store the embedding ``(C, h, w)`` of image ``key`` (atomically on disk)."""
        embedding = embedding.detach().cpu().contiguous()
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        save_file({"embedding": embedding}, str(tmp), metadata={"encoder": self.encoder, "image": key})
        os.replace(tmp, path)
        self.remember(key, embedding)

    def remember(self, key: str, embedding: Tensor) -> None:
        size = embedding.numel() * embedding.element_size()
        if self.held_bytes + size <= self.memory_bytes:
            self.memory[key] = embedding
            self.held_bytes += size

    @torch.no_grad()
    def embeddings(self, encode: Callable[[Tensor], Tensor], images: Tensor, keys: list[str]) -> Tensor:
        """The embeddings ``(B, C, h, w)`` of ``images (B, 3, S, S)`` (image keys ``keys``): the
        cached ones read back, the others computed by ``encode`` in one batch and stored."""
        found = [self.get(key) for key in keys]
        missing = [i for i, e in enumerate(found) if e is None]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            new = encode(images[missing])
            for i, embedding in zip(missing, new, strict=True):
                self.put(keys[i], embedding)
                found[i] = embedding
        return torch.stack([e.to(images.device, non_blocking=True) for e in found])
