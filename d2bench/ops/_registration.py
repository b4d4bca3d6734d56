"""Fake kernels and autograd for the compiled operators, registered once the library is loaded.

The schemas and the device kernels come from C++ (``d2bench/ops/csrc/``); what torch.compile and
autograd need on top is declared here, as torch.library recommends.
"""

from __future__ import annotations

import threading

import torch
from torch import Tensor

from . import policy, routing
from .geometry import ConvGeometry

_lock = threading.Lock()
_state = {"loaded": False, "cuda": False}


def _out_shape(input: Tensor, weight: Tensor, stride, padding, dilation) -> list[int]:
    geom = ConvGeometry(tuple(input.shape[2:]), tuple(stride), tuple(padding), tuple(dilation))
    return [input.shape[0], weight.shape[0], *geom.out_size]


def memory_format(t: Tensor) -> torch.memory_format:
    """channels_last_3d when ``t`` is laid out that way (and not also contiguous), as in C++."""
    if not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return torch.contiguous_format


def _grad_like(wanted: bool, like: Tensor | None, input: Tensor, follow_layout: bool = False):
    """What the kernels return: the input gradient in input's layout, others contiguous."""
    if wanted and like is not None:
        layout = memory_format(like) if follow_layout else torch.contiguous_format
        return torch.empty_like(like, memory_format=layout)
    return input.new_empty(0)


def _fake_output(input: Tensor, weight: Tensor, stride, padding, dilation) -> Tensor:
    shape = _out_shape(input, weight, stride, padding, dilation)
    return input.new_empty(shape).contiguous(memory_format=memory_format(input))


def _fake_d2conv3d(input, dilation_map, modulation, weight, bias, stride, padding, dilation):
    return _fake_output(input, weight, stride, padding, dilation)


def _fake_deform_conv3d(
    input, offset, mask, weight, bias, stride, padding, dilation, offset_groups
):
    return _fake_output(input, weight, stride, padding, dilation)


def _fake_backward(grad_output, input, coords, mod, weight, output_mask) -> tuple[Tensor, ...]:
    return (
        _grad_like(output_mask[0], input, input, follow_layout=True),
        _grad_like(output_mask[1], coords, input),
        _grad_like(output_mask[2], mod, input),
        _grad_like(output_mask[3], weight, input),
    )


def _fake_d2conv3d_backward(
    grad_output, input, dilation_map, modulation, weight, stride, padding, dilation, output_mask
):
    return _fake_backward(grad_output, input, dilation_map, modulation, weight, output_mask)


def _fake_deform_conv3d_backward(
    grad_output, input, offset, mask, weight, stride, padding, dilation, offset_groups, output_mask
):
    return _fake_backward(grad_output, input, offset, mask, weight, output_mask)


def _setup_context(ctx, inputs, output) -> None:
    input, coords, mod, weight, bias, *conv_args = inputs
    ctx.save_for_backward(input, coords, mod, weight)
    ctx.has_bias = bias is not None
    ctx.conv_args = conv_args
    ctx.layer = routing.current_layer()  # None unless a backward record names layers


def _make_backward(backward_op, name: str):
    def backward(ctx, grad_output: Tensor):
        input, coords, mod, weight = ctx.saved_tensors
        wanted = [bool(ctx.needs_input_grad[i]) for i in range(4)]
        wanted[2] = wanted[2] and mod is not None
        grads: tuple[Tensor | None, ...] = (None, None, None, None)
        if any(wanted):
            # Either packed layout goes to the kernels as it is (channels_last_3d: no copy);
            # on a GPU, one that keeps a 16-bit call off the tensor-core backward is copied
            # into channels_last_3d (see routing.grad_for_backward).
            groups = ctx.conv_args[3] if len(ctx.conv_args) > 3 else 1
            grad, decision, converted = routing.grad_for_backward(
                grad_output, input, weight, groups, wanted[0]
            )
            routing.note_call(name, ctx.layer, grad_output, input, weight, decision, converted)
            grads = backward_op(grad, input, coords, mod, weight, *ctx.conv_args, wanted)
            grads = tuple(g if w else None for g, w in zip(grads, wanted, strict=True))
        grad_bias = None
        if ctx.has_bias and ctx.needs_input_grad[4]:
            grad_bias = grad_output.sum(dim=(0, 2, 3, 4))
        return (*grads, grad_bias, *([None] * len(ctx.conv_args)))

    return backward


def _register() -> None:
    lib = torch.ops.d2bench
    torch.library.register_fake("d2bench::d2conv3d", _fake_d2conv3d)
    torch.library.register_fake("d2bench::deform_conv3d", _fake_deform_conv3d)
    torch.library.register_fake("d2bench::d2conv3d_backward", _fake_d2conv3d_backward)
    torch.library.register_fake("d2bench::deform_conv3d_backward", _fake_deform_conv3d_backward)
    torch.library.register_autograd(
        "d2bench::d2conv3d",
        _make_backward(lib.d2conv3d_backward.default, "d2conv3d"),
        setup_context=_setup_context,
    )
    torch.library.register_autograd(
        "d2bench::deform_conv3d",
        _make_backward(lib.deform_conv3d_backward.default, "deform_conv3d"),
        setup_context=_setup_context,
    )


def load_and_register() -> bool:
    """Load the compiled library and register its Python parts, once per process.

    Returns True when the library holds CUDA kernels.
    """
    if _state["loaded"]:
        return _state["cuda"]
    with _lock:
        if not _state["loaded"]:
            from ._extension import load_library

            _state["cuda"] = load_library()
            _register()
            policy.bind_library()
            _state["loaded"] = True
    return _state["cuda"]
