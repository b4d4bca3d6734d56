"""The out-of-bounds floor: the share of a plain 3×3×3 conv's taps that fall outside its input.

A size-preserving 3×3×3 conv (zero padding 1) reads the padding with the taps of its border
ring that point away from the volume: along an axis of size n, 2 of its 3·n (output index, tap)
pairs land outside, and a tap is outside when it is outside along any axis. Every sampling
variant starts exactly there (s = 1, zero offsets), so the out-of-bounds figure draws this share
as the floor against which the variants' shares are read; it is largest on the coarsest block
(T = 2 for an 8-frame clip). Torch-free: the report draws it, :mod:`d2bench.metrics.oob` records
it per layer for the volumes the layers really saw.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

#: Inference pads frames to a multiple of this (d2bench.engine.inference.PAD_MULTIPLE; a test
#: keeps the two equal), so the layers see the padded frame size.
INFERENCE_PAD_MULTIPLE = 32
#: A decoder block's input relative to the (padded) clip: (temporal, spatial) downsampling.
#: ``rf3`` reads e3 (T/4, 1/16), ``rf2`` e2 (T/2, 1/8), ``rf1`` e1 (T, 1/4): d2bench.models.
BLOCK_DOWNSAMPLING: dict[str, tuple[int, int]] = {"rf3": (4, 16), "rf2": (2, 8), "rf1": (1, 4)}


def axis_taps_inside(size: int, stride: int = 1, padding: int = 1, dilation: int = 1) -> int:
    """(output index, tap) pairs along one axis whose coordinate lies in [0, size − 1].

    Tap k ∈ {0, 1, 2} of output index o reads ``o·stride − padding + k·dilation`` (the layers'
    coordinate with s = 1, as :mod:`d2bench.metrics.oob` defines it).
    """
    outputs = (size + 2 * padding - 2 * dilation - 1) // stride + 1
    return sum(
        1
        for o in range(max(outputs, 0))
        for k in range(3)
        if 0 <= o * stride - padding + k * dilation <= size - 1
    )


def axis_taps(size: int, stride: int = 1, padding: int = 1, dilation: int = 1) -> int:
    """All (output index, tap) pairs along one axis: 3 per output index."""
    return 3 * max((size + 2 * padding - 2 * dilation - 1) // stride + 1, 0)


def plain_conv_outside(
    volume: Sequence[int],
    stride: Sequence[int] = (1, 1, 1),
    padding: Sequence[int] = (1, 1, 1),
    dilation: Sequence[int] = (1, 1, 1),
) -> tuple[int, int]:
    """(taps outside, all taps) of one 3×3×3 conv over a T×H×W volume, per batch item.

    A tap is outside when its coordinate leaves [0, size − 1] along at least one axis; with
    integer coordinates it is then *fully* outside (it reads only padding), never partly.
    """
    inside, total = 1, 1
    for size, s, p, d in zip(volume, stride, padding, dilation, strict=True):
        inside *= axis_taps_inside(size, s, p, d)
        total *= axis_taps(size, s, p, d)
    return total - inside, total


def plain_conv_floor(volume: Sequence[int]) -> float:
    """The share of a size-preserving 3×3×3 conv's taps (zero padding 1) outside ``volume``."""
    outside, total = plain_conv_outside(volume)
    return outside / total


def block_volume(
    block: str,
    clip_len: int,
    frame_size: Sequence[int],
    pad_multiple: int = INFERENCE_PAD_MULTIPLE,
) -> tuple[int, int, int]:
    """T×H×W of a decoder block's input at inference: clips of ``clip_len`` frames of
    ``frame_size`` (H, W), padded to a multiple of ``pad_multiple`` as inference pads them."""
    t_down, s_down = BLOCK_DOWNSAMPLING[block]
    height, width = (math.ceil(side / pad_multiple) * pad_multiple for side in frame_size)
    return (
        math.ceil(clip_len / t_down),
        math.ceil(height / s_down),
        math.ceil(width / s_down),
    )
