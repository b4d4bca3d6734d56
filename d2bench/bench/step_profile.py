"""Where one training step's GPU time goes: the sampling operators, convolutions, the rest.

``d2bench bench train --profile`` profiles one step per row after its timed steps and sums the
kernels' device time by what they do, so the gap between a D²Conv3D row and the baseline splits
into its parts: the sampling operators' own kernels (forward, input and weight gradient), the
convolutions (the backbone's and decoder's, plus the deformation branches', all cuDNN), and the
element-wise and other kernels (activations, the sigmoid, casts, layout copies, the optimiser).
The categories come from kernel symbols: the operators' kernels are ours and named here, cuDNN's
carry their library's naming.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import torch

#: The operators' CUDA kernels (``d2bench/ops/csrc/cuda``), by symbol.
OPERATOR_KERNELS: dict[str, str] = {
    "hopper_forward_kernel": "forward",
    "fused_forward_kernel": "forward",
    "input_grad_kernel": "input gradient",
    "simt_input_grad_kernel": "input gradient",
    "weight_grad_kernel": "weight gradient",
    "simt_weight_grad_kernel": "weight gradient",
}
#: Substrings of convolution kernels' symbols (cuDNN, its runtime-compiled engines, CUTLASS).
CONVOLUTION_MARKS = ("conv", "cudnn", "xmma", "implicit_gemm", "wgrad", "dgrad", "fprop")
#: Substrings of matrix-product kernels' symbols (cuBLAS, CUTLASS GEMMs).
MATMUL_MARKS = ("gemm", "cublas", "cutlass")

CATEGORIES = (
    "sampling operator: forward",
    "sampling operator: input gradient",
    "sampling operator: weight gradient",
    "convolutions (cuDNN)",
    "matrix products",
    "element-wise and other",
)


def _symbol(name: str) -> str:
    """The kernel's bare name: ``void ns::kernel<...>(...)`` → ``kernel``; ``(anonymous
    namespace)`` counts as a namespace, and a name with no such part is returned whole."""
    head = name.replace("(anonymous namespace)", "anonymous").split("<", 1)[0].split("(", 1)[0]
    words = head.rsplit("::", 1)[-1].split()
    return words[-1] if words else name


def kernel_category(name: str) -> str:
    """Which of :data:`CATEGORIES` a GPU kernel of this (profiler) name belongs to."""
    part = OPERATOR_KERNELS.get(_symbol(name))
    if part is not None:
        return f"sampling operator: {part}"
    lowered = name.lower()
    if any(mark in lowered for mark in CONVOLUTION_MARKS):
        return "convolutions (cuDNN)"
    if any(mark in lowered for mark in MATMUL_MARKS):
        return "matrix products"
    return "element-wise and other"


def categorise(kernels: list[tuple[str, float]], calls: int = 1) -> dict[str, float]:
    """Milliseconds per call in each category (all of them present) and their ``total``."""
    sums: collections.Counter[str] = collections.Counter()
    for name, microseconds in kernels:
        sums[kernel_category(name)] += microseconds
    result = {category: sums[category] / calls / 1000 for category in CATEGORIES}
    result["total"] = sum(sums.values()) / calls / 1000
    return result


def heaviest_kernels(
    kernels: list[tuple[str, float]], calls: int = 1, count: int = 15
) -> list[dict[str, Any]]:
    """The ``count`` kernels that take the most GPU time per call (template instances apart,
    named by their bare symbol), each with its category, milliseconds and launches per call:
    what a category's total is made of."""
    times: collections.Counter[str] = collections.Counter()
    launches: collections.Counter[str] = collections.Counter()
    for name, microseconds in kernels:
        times[name] += microseconds
        launches[name] += 1
    return [
        {
            "kernel": _symbol(name)[:120],
            "category": kernel_category(name),
            "ms": round(microseconds / calls / 1000, 4),
            "launches": round(launches[name] / calls, 2),
        }
        for name, microseconds in times.most_common(count)
    ]


def profile_step(
    step: Callable[[], None], device: torch.device, calls: int = 1
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """GPU milliseconds per call of ``step`` (already warm) by category, and its heaviest
    kernels (:func:`heaviest_kernels`); both empty off CUDA."""
    if device.type != "cuda":
        return {}, []
    torch.cuda.synchronize(device)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
        for _ in range(calls):
            step()
        torch.cuda.synchronize(device)
    kernels = [
        (event.name, float(event.device_time))
        for event in profile.events()
        if event.device_type == torch.autograd.DeviceType.CUDA
    ]
    return categorise(kernels, calls), heaviest_kernels(kernels, calls)
