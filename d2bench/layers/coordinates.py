"""Where a sampling layer's 27 taps read its input, computed exactly as the operators do.

Each sampling layer answers :meth:`~d2bench.layers.SampledConv3d.sampling_coordinates` with one
of these functions; the out-of-bounds statistic (:mod:`d2bench.metrics.oob`) counts what they
return, so a new sampling variant brings its own coordinates and needs no change there.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..ops.geometry import KERNEL_TAPS, TAPS


def _tap_offsets(like: Tensor) -> Tensor:
    """27×3 tap offsets p_k (depth-major), in ``like``'s dtype and device."""
    return torch.tensor(TAPS, dtype=like.dtype, device=like.device)


def _centres(
    out_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    like: Tensor,
) -> list[Tensor]:
    """Per axis, the centre-tap coordinate of every output voxel, shaped to broadcast on N×K×P."""
    t_out, h_out, w_out = out_size
    grids = []
    for axis, size in enumerate(out_size):
        line = torch.arange(size, dtype=like.dtype, device=like.device)
        line = line * stride[axis] - padding[axis] + dilation[axis]
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = size
        grids.append(line.view(shape).expand(1, 1, t_out, h_out, w_out).reshape(1, 1, -1))
    return grids


def d2_coordinates(
    dilation_map: Tensor,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> list[Tensor]:
    """Sampling coordinates (t, y, x) of a D² layer, each N×27×P, as the operator computes them."""
    n = dilation_map.shape[0]
    out_size = tuple(dilation_map.shape[2:])
    centres = _centres(out_size, stride, padding, dilation, dilation_map)
    taps = _tap_offsets(dilation_map)
    coords = []
    for axis in range(3):
        step = dilation[axis] * dilation_map[:, axis].reshape(n, 1, -1)  # dil · s, N×1×P
        coords.append(centres[axis] + taps[:, axis].view(1, -1, 1) * step)
    return coords


def deform_coordinates(
    offset: Tensor,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> list[Tensor]:
    """Sampling coordinates (t, y, x) of a DCN layer, each N×(G·27)×P (offset N×3·G·27×…)."""
    n, channels = offset.shape[:2]
    if channels % (3 * KERNEL_TAPS):
        raise ValueError(f"offset must have 3·G·27 channels, got {channels}")
    groups = channels // (3 * KERNEL_TAPS)
    out_size = tuple(offset.shape[2:])
    centres = _centres(out_size, stride, padding, dilation, offset)
    taps = _tap_offsets(offset).repeat(groups, 1)  # (G·27)×3
    per_tap = offset.reshape(n, groups * KERNEL_TAPS, 3, -1)
    coords = []
    for axis in range(3):
        grid = centres[axis] + (taps[:, axis] * dilation[axis]).view(1, -1, 1)
        coords.append(grid + per_tap[:, :, axis])
    return coords
