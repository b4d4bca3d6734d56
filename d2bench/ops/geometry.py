"""Shapes of a 3×3×3 sampling convolution, and the input checks every implementation shares.

The checks live here (not only in C++) so that the reference and the compiled operators reject
bad input with the same message, before any kernel runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

#: Tap k = (i·3 + j)·3 + l has offset (i−1, j−1, l−1) along (t, y, x): depth-major.
TAPS: tuple[tuple[int, int, int], ...] = tuple(
    (i - 1, j - 1, l - 1)
    for i in range(3)
    for j in range(3)
    for l in range(3)  # noqa: E741
)
KERNEL_TAPS = 27

IntOr3 = int | Sequence[int]


def triple(value: IntOr3, name: str) -> tuple[int, int, int]:
    """Expand an int or a 3-sequence into a (t, y, x) triple, rejecting anything else."""
    if isinstance(value, int):
        return (value, value, value)
    values = tuple(value)
    if len(values) != 3 or not all(isinstance(v, int) for v in values):
        raise ValueError(f"{name} must be an int or 3 ints (t, y, x), got {value!r}")
    return values  # type: ignore[return-value]


@dataclass(frozen=True)
class ConvGeometry:
    """Input size, output size and the stride/padding/dilation of one 3×3×3 convolution."""

    in_size: tuple[int, int, int]
    stride: tuple[int, int, int]
    padding: tuple[int, int, int]
    dilation: tuple[int, int, int]

    @property
    def out_size(self) -> tuple[int, int, int]:
        return tuple(  # type: ignore[return-value]
            (size + 2 * pad - 2 * dil - 1) // stride + 1
            for size, stride, pad, dil in zip(
                self.in_size, self.stride, self.padding, self.dilation, strict=True
            )
        )

    @property
    def out_numel(self) -> int:
        t, h, w = self.out_size
        return t * h * w


def make_geometry(input: Tensor, stride: IntOr3, padding: IntOr3, dilation: IntOr3) -> ConvGeometry:
    """Validate stride/padding/dilation against ``input`` and return the geometry."""
    if input.dim() != 5:
        raise ValueError(f"input must be 5-D (N, C, T, H, W), got shape {tuple(input.shape)}")
    stride3 = triple(stride, "stride")
    padding3 = triple(padding, "padding")
    dilation3 = triple(dilation, "dilation")
    if min(stride3) < 1:
        raise ValueError(f"stride must be >= 1 on every axis, got {stride3}")
    if min(padding3) < 0:
        raise ValueError(f"padding must be >= 0 on every axis, got {padding3}")
    if min(dilation3) < 1:
        raise ValueError(f"dilation must be >= 1 on every axis, got {dilation3}")
    geom = ConvGeometry(tuple(input.shape[2:]), stride3, padding3, dilation3)  # type: ignore[arg-type]
    if min(geom.out_size) < 1:
        raise ValueError(
            f"input of spatial size {geom.in_size} is too small for a 3×3×3 kernel with "
            f"padding {padding3} and dilation {dilation3} (output size {geom.out_size})"
        )
    return geom


def _check_same(input: Tensor, name: str, other: Tensor) -> None:
    if other.device != input.device:
        raise ValueError(f"{name} is on {other.device} but input is on {input.device}")
    if other.dtype != input.dtype:
        raise TypeError(f"{name} has dtype {other.dtype} but input has {input.dtype}")


REDUCED_PRECISION = (torch.float16, torch.bfloat16)


def _check_map(input: Tensor, geom: ConvGeometry, name: str, tensor: Tensor, channels: int) -> None:
    """A per-output-voxel map: N×channels×T'×H'×W' on input's device, in input's dtype or, for a
    float16/bfloat16 input, float32 (sampling coordinates must not be rounded to 8 bits)."""
    if tensor.device != input.device:
        raise ValueError(f"{name} is on {tensor.device} but input is on {input.device}")
    if tensor.dtype != input.dtype and not (
        input.dtype in REDUCED_PRECISION and tensor.dtype == torch.float32
    ):
        raise TypeError(
            f"{name} has dtype {tensor.dtype}; it must have input's dtype ({input.dtype}) "
            "or float32 for a float16/bfloat16 input"
        )
    expected = (input.shape[0], channels, *geom.out_size)
    if tuple(tensor.shape) != expected:
        raise ValueError(
            f"{name} must have shape {expected} (N, {channels}, T', H', W') for input "
            f"{tuple(input.shape)}, got {tuple(tensor.shape)}"
        )


def check_weight(input: Tensor, weight: Tensor, bias: Tensor | None) -> None:
    """Weight is C_out×C_in×3×3×3 matching input's channels; bias has C_out entries."""
    if input.dtype.is_complex or not input.dtype.is_floating_point:
        raise TypeError(f"input must be a floating-point tensor, got {input.dtype}")
    _check_same(input, "weight", weight)
    if weight.dim() != 5 or tuple(weight.shape[2:]) != (3, 3, 3):
        raise ValueError(
            f"weight must be C_out×C_in×3×3×3 (only 3×3×3 kernels are supported), "
            f"got shape {tuple(weight.shape)}"
        )
    if weight.shape[1] != input.shape[1]:
        raise ValueError(
            f"weight expects {weight.shape[1]} input channels but input has {input.shape[1]} "
            "(grouped convolution is not supported)"
        )
    if bias is not None:
        _check_same(input, "bias", bias)
        if tuple(bias.shape) != (weight.shape[0],):
            raise ValueError(
                f"bias must have shape ({weight.shape[0]},) for weight {tuple(weight.shape)}, "
                f"got {tuple(bias.shape)}"
            )


def check_deform_inputs(
    input: Tensor,
    offset: Tensor,
    mask: Tensor | None,
    weight: Tensor,
    bias: Tensor | None,
    geom: ConvGeometry,
    offset_groups: int,
) -> None:
    """Raise a ValueError/TypeError naming the argument that does not fit."""
    check_weight(input, weight, bias)
    if offset_groups < 1 or input.shape[1] % offset_groups:
        raise ValueError(
            f"offset_groups must be >= 1 and divide the {input.shape[1]} input channels, "
            f"got {offset_groups}"
        )
    if offset.dim() != 5:
        raise ValueError(f"offset must be 5-D (N, 3·G·27, T', H', W'), got {tuple(offset.shape)}")
    expected_channels = 3 * offset_groups * KERNEL_TAPS
    if offset.shape[1] != expected_channels:
        raise ValueError(
            f"offset must have 3·G·27 = {expected_channels} channels for offset_groups="
            f"{offset_groups}, got {offset.shape[1]}"
        )
    _check_map(input, geom, "offset", offset, expected_channels)
    if mask is not None:
        _check_map(input, geom, "mask", mask, offset_groups * KERNEL_TAPS)
        _check_pair_dtype("mask", mask, "offset", offset)


def check_d2_inputs(
    input: Tensor,
    dilation_map: Tensor,
    modulation: Tensor | None,
    weight: Tensor,
    bias: Tensor | None,
    geom: ConvGeometry,
) -> None:
    """Raise a ValueError/TypeError naming the argument that does not fit."""
    check_weight(input, weight, bias)
    _check_map(input, geom, "dilation_map", dilation_map, 3)
    if modulation is not None:
        _check_map(input, geom, "modulation", modulation, KERNEL_TAPS)
        _check_pair_dtype("modulation", modulation, "dilation_map", dilation_map)


def _check_pair_dtype(name: str, tensor: Tensor, other_name: str, other: Tensor) -> None:
    if tensor.dtype != other.dtype:
        raise TypeError(f"{name} has dtype {tensor.dtype} but {other_name} has {other.dtype}")
