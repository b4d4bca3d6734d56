"""The D²Conv3D and 3D deformable convolution operators.

Both are PyTorch custom operators (``torch.ops.d2bench.d2conv3d`` and
``torch.ops.d2bench.deform_conv3d``) with compiled CPU (and, where built, CUDA) kernels, a fake
kernel and autograd, so they run under autograd, ``torch.compile`` and ``torch.library.opcheck``.

The pure-PyTorch reference (:mod:`d2bench.ops.reference`) is used instead only when the user sets
``D2BENCH_OPS=reference``: it is slow and memory-hungry, and meant as the testing oracle.

Developers comparing CUDA kernels hold the launchers to one with :func:`kernel_policy` (see
:mod:`d2bench.ops.policy`); by default they choose.

Example::

    >>> import torch, d2bench.ops as ops
    >>> x = torch.randn(1, 4, 5, 6, 7)
    >>> s = torch.ones(1, 3, 5, 6, 7)              # dilation 1 everywhere: a plain conv
    >>> w = torch.randn(8, 4, 3, 3, 3)
    >>> ops.d2conv3d(x, s, None, w).shape
    torch.Size([1, 8, 5, 6, 7])
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from . import reference
from .geometry import IntOr3, check_d2_inputs, check_deform_inputs, make_geometry
from .policy import KernelPolicy, current_kernel_policy, kernel_policy

__all__ = [
    "OPS_IMPLEMENTATIONS",
    "KernelPolicy",
    "current_kernel_policy",
    "d2conv3d",
    "deform_conv3d",
    "ensure_loaded",
    "kernel_policy",
    "selected_implementation",
]

#: Values of the environment variable ``D2BENCH_OPS``.
OPS_IMPLEMENTATIONS = ("compiled", "reference")


def selected_implementation() -> str:
    """The operator implementation chosen by ``D2BENCH_OPS`` (default ``compiled``)."""
    value = os.environ.get("D2BENCH_OPS", "compiled").strip().lower() or "compiled"
    if value not in OPS_IMPLEMENTATIONS:
        allowed = ", ".join(OPS_IMPLEMENTATIONS)
        raise ValueError(
            f"D2BENCH_OPS={value!r} is not an operator implementation; use one of {allowed}"
        )
    return value


def _autocast(input: Tensor, weight: Tensor, bias: Tensor | None):
    """Under CUDA autocast, run in the autocast dtype like nn.Conv3d; maps stay as given."""
    if input.device.type == "cuda" and torch.is_autocast_enabled("cuda"):
        dtype = torch.get_autocast_dtype("cuda")
        return input.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype)
    return input, weight, bias


def ensure_loaded(device: torch.device | None = None) -> None:
    """Build (first time only) and load the compiled operators, unless the reference is chosen.

    With a CUDA ``device``, also check that the build holds the CUDA kernels.
    """
    if selected_implementation() != "compiled":
        return
    from ._registration import load_and_register

    with_cuda = load_and_register()
    if device is not None and device.type == "cuda" and not with_cuda:
        raise RuntimeError(
            "the d2bench operators were built without CUDA kernels (no nvcc/CUDA_HOME found, or "
            "D2BENCH_BUILD_CUDA=0): install the CUDA toolkit matching torch.version.cuda and "
            "clear the build cache, or set D2BENCH_OPS=reference"
        )


def deform_conv3d(
    input: Tensor,
    offset: Tensor,
    mask: Tensor | None,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntOr3 = 1,
    padding: IntOr3 = 1,
    dilation: IntOr3 = 1,
    offset_groups: int = 1,
) -> Tensor:
    """3D (modulated) deformable convolution with a 3×3×3 kernel (DCNv1 without mask, DCNv2 with).

    Shapes (G = ``offset_groups``, K = 27 taps, depth-major: k = (i·3 + j)·3 + l):

    - ``input``: N×C×T×H×W; channel c belongs to offset group ``c // (C/G)``.
    - ``offset``: N×(3·G·K)×T'×H'×W'; channel ``3·(g·K + k) + a`` is the offset along axis
      a ∈ (t, y, x) of tap k in group g.
    - ``mask``: N×(G·K)×T'×H'×W' or None.
    - ``weight``: C_out×C×3×3×3; ``bias``: C_out or None. Returns N×C_out×T'×H'×W'.

    Tap k of output voxel p samples ``x`` trilinearly at ``centre(p) + p_k·dilation + offset``,
    where ``centre(p) = p·stride − padding + dilation``; corners outside the volume contribute 0.
    """
    input, weight, bias = _autocast(input, weight, bias)
    geom = make_geometry(input, stride, padding, dilation)
    check_deform_inputs(input, offset, mask, weight, bias, geom, offset_groups)
    if selected_implementation() == "reference":
        return reference.deform_conv3d_reference(
            input, offset, mask, weight, bias, geom, offset_groups
        )
    ensure_loaded(input.device)
    return torch.ops.d2bench.deform_conv3d(
        input, offset, mask, weight, bias,
        list(geom.stride), list(geom.padding), list(geom.dilation), offset_groups,
    )  # fmt: skip


def d2conv3d(
    input: Tensor,
    dilation_map: Tensor,
    modulation: Tensor | None,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntOr3 = 1,
    padding: IntOr3 = 1,
    dilation: IntOr3 = 1,
) -> Tensor:
    """D²Conv3D: a 3×3×3 convolution whose dilation is predicted per output voxel.

    Shapes: ``input`` N×C×T×H×W; ``dilation_map`` N×3×T'×H'×W' holding (s_t, s_y, s_x);
    ``modulation`` N×27×T'×H'×W' or None; ``weight`` C_out×C×3×3×3; ``bias`` C_out or None.

    Tap k with offset p_k ∈ {−1, 0, 1}³ samples at ``centre(p) + p_k ⊙ dilation ⊙ s(p)``
    (trilinear, zero padding), so s = 1 is the plain convolution, s = 0 collapses the taps of
    an axis onto the centre and a negative s mirrors the kernel. Reads 3 + 27 channels per voxel,
    never the 81 offsets of the equivalent deformable convolution.
    """
    input, weight, bias = _autocast(input, weight, bias)
    geom = make_geometry(input, stride, padding, dilation)
    check_d2_inputs(input, dilation_map, modulation, weight, bias, geom)
    if selected_implementation() == "reference":
        return reference.d2conv3d_reference(input, dilation_map, modulation, weight, bias, geom)
    ensure_loaded(input.device)
    return torch.ops.d2bench.d2conv3d(
        input, dilation_map, modulation, weight, bias,
        list(geom.stride), list(geom.padding), list(geom.dilation),
    )  # fmt: skip
