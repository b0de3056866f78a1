"""Input sizes a patch-based network sees whole.

A ViT's patch embedding (a ``patch x patch`` convolution with stride ``patch``) and T2T-ViT's
soft splits (``nn.Unfold`` stages) silently drop the pixels past the last full window: a
30-pixel image through a patch-16 ViT is the top-left 16x16 crop. ``check_image_size`` refuses
such a size before the network is built and names the nearest sizes that are seen whole.
"""

from __future__ import annotations

from collections.abc import Sequence

from vitrain.errors import UserError

# (kernel, stride, padding) of each windowed stage
Stages = Sequence[tuple[int, int, int]]


def covers_input(size: int, stages: Stages) -> bool:
    """Whether every input pixel of a side ``size`` falls in some window of every stage.

    Stage input ``n`` padded by ``p`` holds the real pixels at padded positions ``p .. p+n-1``;
    its ``(n + 2p - k) // s + 1`` windows reach position ``(count - 1) * s + k - 1``.
    """
    for kernel, stride, padding in stages:
        count = (size + 2 * padding - kernel) // stride + 1
        if size < 1 or count < 1 or (count - 1) * stride + kernel - 1 < padding + size - 1:
            return False
        size = count
    return True


def nearest_valid(size: int, stages: Stages, limit: int = 4096) -> list[int]:
    """The closest sizes below and above ``size`` that :func:`covers_input` accepts."""
    below = next((n for n in range(size - 1, 0, -1) if covers_input(n, stages)), None)
    above = next((n for n in range(size + 1, size + limit) if covers_input(n, stages)), None)
    return [n for n in (below, above) if n is not None]


def check_image_size(img_size: int | Sequence[int], stages: Stages, what: str) -> None:
    """Raise a ``UserError`` unless the network ``what`` sees every pixel of ``img_size``.

    ``img_size`` is an int or ``(H, W)``; ``stages`` the ``(kernel, stride, padding)`` of its
    windowed input stages (a ViT: ``[(patch, patch, 0)]``).
    """
    sides = [img_size, img_size] if isinstance(img_size, int) else list(img_size)
    for side in sides:
        if covers_input(int(side), stages):
            continue
        options = " or ".join(f"data.image_size={n}" for n in nearest_valid(int(side), stages))
        raise UserError(
            f"data.image_size={side} (model.net.img_size) does not fit {what}: the pixels past its last "
            f"full window would be dropped silently. Use {options}."
        )


def patch_stages(patch_size: int | Sequence[int]) -> list[tuple[int, int, int]]:
    """The one stage of a ViT patch embedding (square patches; a pair must be equal)."""
    side = patch_size if isinstance(patch_size, int) else int(patch_size[0])
    return [(side, side, 0)]
