"""The kernel policy: which CUDA kernels a compiled call takes where the launchers would choose.

By default (every field ``"auto"``) the launchers pick the fastest kernels that apply. Forcing one
is for developers comparing kernels, never a user setting: :func:`kernel_policy` sets it for a
block, the CUDA launchers read it on every call (through the private operator
``d2bench::_set_kernel_policy``), and :mod:`d2bench.ops.routing` mirrors the backward choice
from the same value. It is one setting per process, not per thread: a block entered in one
thread steers the calls of every thread until it exits.

- ``forward``: ``"auto"`` (on Hopper, the wgmma kernel for float16/bfloat16 calls wherever it
  applies) or ``"mma"`` (always the mma.sync kernel).
- ``backward``: ``"auto"`` (the tensor-core kernels for float16/bfloat16 calls wherever they
  apply) or ``"cuda_core"`` (always the CUDA-core kernels).
- ``backward_rows``: ``"auto"`` (the CUDA-core backward's wave model picks each kernel's tile
  height) or ``64`` / ``128`` (both its kernels at that height).
- ``weight_grad_channels``: ``"auto"`` (the tensor-core weight gradient's launcher picks how
  many input channels a CTA takes) or ``32`` / ``64``.

The policy changes which kernels run, not what they compute (up to rounding). The reference
operators (``D2BENCH_OPS=reference``) and the CPU kernels ignore it.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "BACKWARD_KERNELS",
    "BACKWARD_ROWS",
    "FORWARD_KERNELS",
    "WEIGHT_GRAD_CHANNELS",
    "KernelPolicy",
    "current_kernel_policy",
    "kernel_policy",
]

ForwardKernel = Literal["auto", "mma"]
BackwardKernel = Literal["auto", "cuda_core"]
BackwardRows = Literal["auto", 64, 128]
WeightGradChannels = Literal["auto", 32, 64]

#: The values each field takes (the C++ side, ``csrc/kernel_policy.cpp``, accepts the same).
FORWARD_KERNELS: tuple[ForwardKernel, ...] = ("auto", "mma")
BACKWARD_KERNELS: tuple[BackwardKernel, ...] = ("auto", "cuda_core")
BACKWARD_ROWS: tuple[BackwardRows, ...] = ("auto", 64, 128)
WEIGHT_GRAD_CHANNELS: tuple[WeightGradChannels, ...] = ("auto", 32, 64)


@dataclass(frozen=True)
class KernelPolicy:
    """The kernels the launchers are held to; every field ``"auto"`` lets them choose."""

    forward: ForwardKernel = "auto"
    backward: BackwardKernel = "auto"
    backward_rows: BackwardRows = "auto"
    weight_grad_channels: WeightGradChannels = "auto"

    def __post_init__(self) -> None:
        _check("forward", self.forward, FORWARD_KERNELS)
        _check("backward", self.backward, BACKWARD_KERNELS)
        _check("backward_rows", self.backward_rows, BACKWARD_ROWS)
        _check("weight_grad_channels", self.weight_grad_channels, WEIGHT_GRAD_CHANNELS)

    def as_dict(self) -> dict[str, Any]:
        """The policy as JSON-able fields, for a measurement's record of its settings."""
        return dataclasses.asdict(self)


def _check(field: str, value: object, allowed: tuple[object, ...]) -> None:
    # Compared with their types, so that True (== 1) or 64.0 (== 64) are not taken for a value.
    if not any(type(value) is type(a) and value == a for a in allowed):
        choices = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"kernel_policy: {field} must be one of {choices}, got {value!r}")


_state: dict[str, Any] = {"policy": KernelPolicy(), "library_loaded": False}


def current_kernel_policy() -> KernelPolicy:
    """The policy in force (the default, all ``"auto"``, outside any :func:`kernel_policy`)."""
    return _state["policy"]


def _send_to_library(policy: KernelPolicy) -> None:
    import torch

    rows = 0 if policy.backward_rows == "auto" else policy.backward_rows
    channels = 0 if policy.weight_grad_channels == "auto" else policy.weight_grad_channels
    torch.ops.d2bench._set_kernel_policy(policy.forward, policy.backward, rows, channels)


def _install(policy: KernelPolicy) -> None:
    if _state["library_loaded"]:
        _send_to_library(policy)
    _state["policy"] = policy


def bind_library() -> None:
    """Called once the compiled library is loaded: hands it the policy in force (a block may
    have been entered before the first compiled call loaded the library)."""
    _state["library_loaded"] = True
    _send_to_library(_state["policy"])


@contextlib.contextmanager
def kernel_policy(
    *,
    forward: ForwardKernel | None = None,
    backward: BackwardKernel | None = None,
    backward_rows: BackwardRows | None = None,
    weight_grad_channels: WeightGradChannels | None = None,
) -> Iterator[KernelPolicy]:
    """Within the block, hold the compiled operators' CUDA launchers to the given kernels.

    A field left None keeps its value in force, so blocks nest; the previous policy is restored
    on exit, also when the block raises. A value outside the allowed ones raises ValueError
    before anything changes. Yields the policy in force within the block. Not thread-safe: the
    policy is the process's (see the module's docstring).
    """
    previous = current_kernel_policy()
    given = {
        "forward": forward,
        "backward": backward,
        "backward_rows": backward_rows,
        "weight_grad_channels": weight_grad_channels,
    }
    policy = dataclasses.replace(previous, **{k: v for k, v in given.items() if v is not None})
    _install(policy)
    try:
        yield policy
    finally:
        _install(previous)
