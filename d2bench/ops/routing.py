"""Which backward kernel a compiled sampled-convolution call takes, and a record of it.

The CUDA entry points (``fused_backward_applies`` in ``csrc/cuda/sampling_conv_cuda.cu``)
send a float16/bfloat16 backward call to the tensor-core kernels only when the input *and the
upstream gradient* are channels_last_3d (plus channel counts, alignment and an accumulator that
must fit within the output), unless the kernel policy (:mod:`d2bench.ops.policy`) holds them to
the CUDA-core kernels; every other CUDA call takes the CUDA-core kernels, several times slower.
A training step's upstream gradient need not be channels_last_3d (``loss.sum().backward()``
straight after a layer hands it an expanded scalar; another layer's backward may return a
contiguous gradient), and it is often the only thing the fast path lacks.

:func:`backward_decision` mirrors that routing in Python (the GPU tests check it against the
kernels the profiler sees), so that the autograd backward can copy such a gradient into
channels_last_3d once, one pass over an output-sized tensor (about 0.01 ms at the paper's
largest layer), instead of losing milliseconds to the slower kernels. :func:`record_backward_paths`
collects each call's decision, named after the layer that made it, for benchmarks.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn
from torch._subclasses.fake_tensor import is_fake

from .policy import current_kernel_policy

__all__ = [
    "ACCUMULATOR_CHANNELS",
    "BackwardCall",
    "BackwardDecision",
    "BackwardRecord",
    "backward_decision",
    "current_layer",
    "grad_conversion",
    "grad_for_backward",
    "layout_name",
    "record_backward_paths",
]

BackwardPath = Literal["tensor_core", "cuda_core", "cpu"]

#: Input channels of the tensor-core backward's float32 accumulator per input voxel
#: (``kTensorCoreAccumulatorChannels`` in ``d2bench/ops/csrc/cuda/launch.h``).
ACCUMULATOR_CHANNELS = 64
_HALF_TYPES = (torch.float16, torch.bfloat16)
_CL = torch.channels_last_3d


@dataclass(frozen=True)
class BackwardDecision:
    """The backward kernels a call takes; ``reason`` says why not the tensor-core ones."""

    path: BackwardPath
    reason: str = ""


def layout_name(t: Tensor) -> str:
    """``contiguous``, ``channels_last_3d`` or ``strided`` (neither: expanded, sliced, ...)."""
    if t.is_contiguous():
        return "contiguous"
    if t.is_contiguous(memory_format=_CL):
        return "channels_last_3d"
    return "strided"


def _packed(t: Tensor) -> bool:
    return t.is_contiguous() or t.is_contiguous(memory_format=_CL)


def _aligned(t: Tensor, bytes_: int = 16) -> bool:
    """Whether ``t``'s data starts on a multiple of ``bytes_``; tensors without storage (traced
    by torch.compile) count as aligned, as every fresh allocation is."""
    if is_fake(t):
        return True
    try:
        return t.data_ptr() % bytes_ == 0
    except (RuntimeError, NotImplementedError):
        return True


def _grad_fits(grad: Tensor) -> bool:
    """The upstream-gradient condition of the tensor-core backward, on the tensor the kernels
    get (``grad`` itself where packed, else its contiguous copy, which never fits)."""
    if not _packed(grad):
        return False
    batch, channel, voxel = grad.stride(0), grad.stride(1), grad.stride(4)
    out_plane = grad.shape[2] * grad.shape[3] * grad.shape[4]
    return channel == 1 and batch == out_plane * voxel and _aligned(grad)


def _call_conditions(
    grad: Tensor, input: Tensor, weight: Tensor, groups: int, input_grad: bool
) -> str:
    """Why a CUDA call cannot take the tensor-core backward whatever its upstream gradient's
    layout; empty when it can."""
    if current_kernel_policy().backward == "cuda_core":
        return "kernel policy backward='cuda_core'"
    if input.dtype not in _HALF_TYPES:
        return f"{str(input.dtype).removeprefix('torch.')} input (tensor cores: 16-bit only)"
    n, c = input.shape[:2]
    in_plane = input.shape[2] * input.shape[3] * input.shape[4]
    out_plane = grad.shape[2] * grad.shape[3] * grad.shape[4]
    out_channels = weight.shape[0]
    accumulator = n * in_plane * ACCUMULATOR_CHANNELS * 4
    output = n * out_plane * out_channels * input.element_size()
    if input_grad and accumulator > output:
        return "its input-gradient accumulator would be larger than the output"
    # The kernels get input itself where packed, else a contiguous copy (channels strided).
    channel_stride = input.stride(1) if _packed(input) else in_plane
    if channel_stride != 1:
        return "input not channels_last_3d"
    if (c // groups) % 8 != 0 or out_channels % 8 != 0:
        return "channels (per offset group) or output channels not a multiple of 8"
    if not _aligned(input):
        return "input not 16-byte aligned"
    return ""


def backward_decision(
    grad: Tensor,
    input: Tensor,
    weight: Tensor,
    groups: int = 1,
    input_grad: bool = True,
    *,
    device_type: str | None = None,
) -> BackwardDecision:
    """The backward kernels of a call given ``grad`` (the upstream gradient as the kernels get
    it), as the compiled operators choose them. ``groups``: the offset groups (1 for D²);
    ``input_grad``: whether the input's gradient is wanted; ``device_type``: whose kernels
    decide (default the input's; "cuda" examines the CUDA routing on CPU tensors)."""
    if (device_type or input.device.type) != "cuda":
        return BackwardDecision("cpu", "not on a CUDA device")
    reason = _call_conditions(grad, input, weight, groups, input_grad)
    if reason:
        return BackwardDecision("cuda_core", reason)
    if not _grad_fits(grad):
        return BackwardDecision("cuda_core", f"upstream gradient {layout_name(grad)}")
    return BackwardDecision("tensor_core")


_conversion = {"enabled": True}


@contextlib.contextmanager
def grad_conversion(enabled: bool) -> Iterator[None]:
    """Within the block, whether backward calls copy an upstream gradient into channels_last_3d
    where that is all the tensor-core backward lacks (default: they do). Off, to measure what
    the copy saves."""
    before = _conversion["enabled"]
    _conversion["enabled"] = enabled
    try:
        yield
    finally:
        _conversion["enabled"] = before


def grad_for_backward(
    grad_output: Tensor,
    input: Tensor,
    weight: Tensor,
    groups: int = 1,
    input_grad: bool = True,
    *,
    device_type: str | None = None,
) -> tuple[Tensor, BackwardDecision, bool]:
    """The upstream gradient to hand the backward op, the kernels it will take, and whether it
    was copied into channels_last_3d for them.

    A packed gradient (contiguous or channels_last_3d) goes as it is, anything else packed once,
    as the kernels need; on a GPU a call that meets every other condition of the tensor-core
    backward gets its gradient in channels_last_3d (one copy) instead of the CUDA-core kernels.
    CPU calls are unchanged. ``device_type`` as for :func:`backward_decision`.
    """
    on_cuda = (device_type or input.device.type) == "cuda"
    if (
        on_cuda
        and _conversion["enabled"]
        and not _grad_fits(grad_output)
        and not _call_conditions(grad_output, input, weight, groups, input_grad)
    ):
        grad = grad_output.clone(memory_format=_CL)  # canonical channels_last_3d strides
        decision = backward_decision(
            grad, input, weight, groups, input_grad, device_type=device_type
        )
        return grad, decision, True
    layout = torch.contiguous_format
    if not grad_output.is_contiguous() and grad_output.is_contiguous(memory_format=_CL):
        layout = _CL
    grad = grad_output.contiguous(memory_format=layout)
    decision = backward_decision(grad, input, weight, groups, input_grad, device_type=device_type)
    return grad, decision, False


# -- the record ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackwardCall:
    """One backward call of a compiled sampled-convolution operator."""

    op: str
    layer: str | None  # the innermost module (of the recorded model) running at forward time
    path: BackwardPath
    reason: str
    grad_layout: str  # the upstream gradient's layout as autograd handed it over
    converted: bool  # copied into channels_last_3d for the tensor-core backward
    dtype: str
    input_shape: tuple[int, ...]
    out_channels: int


@dataclass
class BackwardRecord:
    """The backward calls made while :func:`record_backward_paths` was active, in order."""

    calls: list[BackwardCall] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Calls per path, plus ``converted``: those whose gradient was copied for it."""
        counts = Counter(call.path for call in self.calls)
        return {**dict(sorted(counts.items())), "converted": sum(c.converted for c in self.calls)}

    def as_dict(self) -> dict:
        return {"counts": self.counts(), "calls": [asdict(call) for call in self.calls]}


_lock = threading.Lock()
_records: list[BackwardRecord] = []
_layers: list[str] = []  # names of the modules whose forward is running (innermost last)


def current_layer() -> str | None:
    """The innermost recorded module whose forward is running, or None (nothing recorded)."""
    return _layers[-1] if _layers else None


def note_call(op: str, layer: str | None, grad_output: Tensor, input: Tensor, weight: Tensor,
              decision: BackwardDecision, converted: bool) -> None:  # fmt: skip
    """Append a backward call to every active record (a no-op when none is)."""
    if not _records:
        return
    call = BackwardCall(
        op=op,
        layer=layer,
        path=decision.path,
        reason=decision.reason,
        grad_layout=layout_name(grad_output),
        converted=converted,
        dtype=str(input.dtype).removeprefix("torch."),
        input_shape=tuple(input.shape),
        out_channels=int(weight.shape[0]),
    )
    with _lock:
        for record in _records:
            record.calls.append(call)


@contextlib.contextmanager
def record_backward_paths(model: nn.Module | None = None) -> Iterator[BackwardRecord]:
    """Record the backward path of every compiled sampled-convolution call in the block.

    With ``model``, each call is named after the innermost of its sub-modules whose forward made
    it (forward hooks, removed on exit); run the forward and the backward inside the block.
    Meant for eager runs: under torch.compile the backward is traced once and records nothing
    afterwards.
    """
    record = BackwardRecord()
    handles = []
    if model is not None:

        def enter(name: str):
            def hook(module, args):
                _layers.append(name)

            return hook

        def leave(module, args, output):
            if _layers:
                _layers.pop()

        for name, module in model.named_modules():
            handles.append(module.register_forward_pre_hook(enter(name or "<model>")))
            handles.append(module.register_forward_hook(leave, always_call=True))
    with _lock:
        _records.append(record)
    try:
        yield record
    finally:
        for handle in handles:
            handle.remove()
        _layers.clear()
        with _lock:
            _records.remove(record)
