"""Pieces shared by the layers whose kernel samples at predicted positions (DCN and D²).

Such a layer keeps the replaced convolution's weight and adds a small "branch" convolution that
predicts, per output voxel, where the 27 taps sample (and optionally how much each counts).
"""

from __future__ import annotations

import contextlib
import math
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, ClassVar, Self

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from torch.utils.hooks import RemovableHandle

from ..ops.geometry import IntOr3, triple
from .base import ConvVariant, check_kind
from .conv_settings import conv_settings
from .spec import SAMPLING_PRECISIONS, SamplingPrecision, VariantSpec

#: What a branch predicts: the op's geometry argument and its optional modulation.
Deformation = tuple[Tensor, Tensor | None]

#: ``hook(layer, input, geometry, modulation)``: called by a forward with the exact arguments the
#: operator receives (the dilation map or the offsets, in the dtype the operator samples with).
SamplingHook = Callable[["SampledConv3d", Tensor, Tensor, Tensor | None], None]


class ZeroInitConv3d(nn.Conv3d):
    """A conv whose ``reset_parameters`` zeroes it, so a fresh layer equals the conv it replaced.

    Being a subclass (not a plain conv zeroed once) keeps it zero when generic initialisation
    code calls ``reset_parameters`` on every module.
    """

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


def branch_dtype(x: Tensor) -> torch.dtype:
    """At least float32 for sampling positions: bf16 steps by 0.5 from coordinate 64 on."""
    return torch.promote_types(x.dtype, torch.float32)


def autocast_off(x: Tensor) -> contextlib.AbstractContextManager[Any]:
    """A context in which autocast cannot lower the precision of computations on ``x``.

    Only device types with autocast are named (a plain check that torch.compile can trace).
    """
    device = x.device.type
    if device in ("cuda", "cpu"):
        return torch.autocast(device_type=device, enabled=False)
    return contextlib.nullcontext()


class SampledConv3d(ConvVariant, nn.Module, ABC):
    """Base of :class:`DeformConv3d` and :class:`D2Conv3d`: weight, branch, precision, checkpoint.

    Subclasses say how many channels the branch predicts, how its raw output becomes the
    operator's arguments, and which operator runs.

    Precision under autocast: the branch always computes in float32 (or wider) and the sampling
    coordinates and modulation reach the operator in float32, and our operators accumulate the
    products in float32 whatever the input dtype. ``sampling_precision`` decides only the dtype
    of the sampled input, the weight and the output: ``"autocast"`` runs the operator in the
    autocast dtype like ``nn.Conv3d`` (half the bytes to read); ``"fp32"`` casts the input,
    weight and bias to float32 (at least), samples with autocast off and casts the result back
    to the dtype the ``"autocast"`` path returns, so the rest of the network sees the same
    dtypes. ``"fp32"`` is what the original did: its deformable operator had no half kernel and
    upcast every argument to float32 inside the op.
    """

    #: Attribute name of the branch conv; it also names the branch's entries in state dicts.
    branch_name: ClassVar[str]
    #: What the operator's geometry argument is: a ``dilation`` map or free ``offset``s.
    sampling_geometry: ClassVar[str]
    #: The branch conv's precision under autocast: ``"fp32"`` (default) computes it in float32;
    #: ``"autocast"`` runs it in the autocast dtype on tensor cores, as the original did, and
    #: takes its output to float32 before the activation, so the sampling coordinates are still
    #: formed in float32. Set through :func:`set_branch_precision` (a measurement knob of
    #: ``d2bench bench train``; not a study setting yet).
    branch_precision: str = "fp32"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        branch_channels: int,
        *,
        stride: IntOr3 = 1,
        padding: IntOr3 = 1,
        dilation: IntOr3 = 1,
        bias: bool = True,
        checkpoint_branch: bool = False,
        sampling_precision: SamplingPrecision = "autocast",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if sampling_precision not in SAMPLING_PRECISIONS:
            raise ValueError(
                f"sampling_precision must be one of {', '.join(SAMPLING_PRECISIONS)}; "
                f"got {sampling_precision!r}"
            )
        self.sampling_precision: SamplingPrecision = sampling_precision
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = triple(stride, "stride")
        self.padding = triple(padding, "padding")
        self.dilation = triple(dilation, "dilation")
        self.checkpoint_branch = checkpoint_branch
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 3, 3, 3, **factory))
        if bias:
            self.bias: nn.Parameter | None = nn.Parameter(torch.empty(out_channels, **factory))
        else:
            self.register_parameter("bias", None)
        branch = ZeroInitConv3d(
            in_channels, branch_channels, 3, self.stride, self.padding, self.dilation, **factory
        )
        self.add_module(self.branch_name, branch)
        # An OrderedDict (not a dict): RemovableHandle keeps a weak reference to it.
        self._sampling_hooks: OrderedDict[int, SamplingHook] = OrderedDict()
        self.reset_parameters()

    @property
    def branch(self) -> nn.Conv3d:
        """The conv predicting the deformation."""
        return getattr(self, self.branch_name)

    @property
    def branch_channels(self) -> int:
        """Output channels of the deformation branch."""
        return self.branch.out_channels

    def reset_parameters(self) -> None:
        """Main weight as nn.Conv3d initialises it; the branch starts at zero (no deformation)."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_channels * 27)
            nn.init.uniform_(self.bias, -bound, bound)
        self.branch.reset_parameters()

    @classmethod
    def from_conv(cls, conv: nn.Conv3d, spec: VariantSpec) -> Self:
        """A layer of variant ``spec`` that starts from ``conv``'s weight, bias and geometry."""
        check_kind(cls, spec)
        settings = conv_settings(conv)
        layer = cls(
            conv.in_channels,
            conv.out_channels,
            stride=settings.stride,
            padding=settings.padding,
            dilation=settings.dilation,
            bias=conv.bias is not None,
            checkpoint_branch=spec.checkpoint_branch,
            sampling_precision=spec.sampling_precision,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
            **cls.spec_options(spec),
        )
        layer.copy_conv(conv)
        layer.train(conv.training)
        return layer

    def copy_conv(self, conv: nn.Conv3d) -> None:
        """Take over ``conv``'s weight and bias as independent copies (frozen stays frozen)."""
        weight, bias = conv.weight, conv.bias
        self.weight = nn.Parameter(weight.detach().clone(), requires_grad=weight.requires_grad)
        if bias is not None:
            self.bias = nn.Parameter(bias.detach().clone(), requires_grad=bias.requires_grad)

    def register_sampling_hook(self, hook: SamplingHook) -> RemovableHandle:
        """Have every forward call ``hook`` with the sampling arguments the operator receives.

        For measurements of where a layer samples (out-of-bounds statistic, dilation maps). With
        no hook registered a forward pays nothing; ``handle.remove()`` unregisters.
        """
        handle = RemovableHandle(self._sampling_hooks)
        self._sampling_hooks[handle.id] = hook
        return handle

    @classmethod
    @abstractmethod
    def spec_options(cls, spec: VariantSpec) -> dict[str, Any]:
        """Constructor keyword arguments taken from a spec."""

    @abstractmethod
    def matches(self, spec: VariantSpec) -> bool:
        """Whether this layer already is what ``spec`` asks for (``checkpoint_branch`` and
        ``sampling_precision`` aside: they change no weight)."""

    @classmethod
    @abstractmethod
    def branch_channels_for(cls, spec: VariantSpec) -> int:
        """Output channels of the deformation branch under ``spec``."""

    @abstractmethod
    def sampling_coordinates(self, geometry: Tensor) -> list[Tensor]:
        """The (t, y, x) coordinates, each N×(G·27)×P, at which the operator samples for the
        geometry argument it received (what the out-of-bounds statistic counts)."""

    @abstractmethod
    def deformation_from_branch(self, h: Tensor) -> Deformation:
        """Turn the raw branch output into the operator's sampling arguments."""

    @abstractmethod
    def sample(
        self, x: Tensor, deformation: Deformation, weight: Tensor, bias: Tensor | None
    ) -> Tensor:
        """Run the operator; every tensor argument already has the same dtype."""

    def predict(self, x: Tensor) -> Deformation:
        """The sampling arguments for ``x``, in float32 or wider even under autocast."""
        dtype = branch_dtype(x)
        branch = self.branch
        if self.branch_precision == "autocast" and _autocast_enabled(x):
            h = F.conv3d(x, branch.weight, branch.bias, self.stride, self.padding, self.dilation)
            with autocast_off(x):
                return self.deformation_from_branch(h.to(dtype))
        with autocast_off(x):
            bias = None if branch.bias is None else branch.bias.to(dtype)
            h = F.conv3d(
                x.to(dtype), branch.weight.to(dtype), bias, self.stride, self.padding, self.dilation
            )
            return self.deformation_from_branch(h)

    def forward(self, x: Tensor) -> Tensor:
        x = _sampling_layout(x)
        if self.checkpoint_branch and self.training and torch.is_grad_enabled():
            deformation = checkpoint(self.predict, x, use_reentrant=False)
        else:
            deformation = self.predict(x)
        if self.sampling_precision == "fp32":
            return self._sample_in_float32(x, deformation)
        # The weights take the input's dtype (as autocast does for nn.Conv3d). The sampling
        # arguments stay float32 for a float16/bfloat16 input (the operators accept that, and a
        # bf16 coordinate is off by up to 0.4 px at width 108); otherwise they match the input.
        dtype = x.dtype
        map_dtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
        geometry, modulation = deformation
        cast = (geometry.to(map_dtype).contiguous(), _cast(modulation, map_dtype))
        for hook in tuple(self._sampling_hooks.values()):
            hook(self, x, *cast)
        return self.sample(x, cast, _kernel_weight(self.weight, x), _cast(self.bias, dtype))

    def _sample_in_float32(self, x: Tensor, deformation: Deformation) -> Tensor:
        """The operator on float32 (or wider) arguments with autocast off; the result in the
        dtype the ``"autocast"`` path would return (see the class docstring)."""
        out_dtype = _autocast_output_dtype(x)
        dtype = branch_dtype(x)
        geometry, modulation = deformation
        with autocast_off(x):
            wide = x.to(dtype)
            cast = (geometry.to(dtype).contiguous(), _cast(modulation, dtype))
            for hook in tuple(self._sampling_hooks.values()):
                hook(self, wide, *cast)
            weight = _kernel_weight(self.weight, wide)
            out = self.sample(wide, cast, weight, _cast(self.bias, dtype))
        return out.to(out_dtype)

    def extra_repr(self) -> str:
        parts = [
            f"{self.in_channels}, {self.out_channels}",
            f"stride={self.stride}",
            f"padding={self.padding}",
            f"dilation={self.dilation}",
            f"bias={self.bias is not None}",
            f"branch_channels={self.branch_channels}",
        ]
        if self.checkpoint_branch:
            parts.append("checkpoint_branch=True")
        if self.sampling_precision != "autocast":
            parts.append(f"sampling_precision={self.sampling_precision!r}")
        return ", ".join(parts)


#: Values of :attr:`SampledConv3d.branch_precision`.
BRANCH_PRECISIONS: tuple[str, ...] = ("fp32", "autocast")


def set_branch_precision(model: nn.Module, precision: str) -> int:
    """Set every sampling layer's branch precision in ``model``; returns how many were set."""
    if precision not in BRANCH_PRECISIONS:
        raise ValueError(f"branch precision {precision!r}; allowed: {', '.join(BRANCH_PRECISIONS)}")
    layers = [m for m in model.modules() if isinstance(m, SampledConv3d)]
    for layer in layers:
        layer.branch_precision = precision
    return len(layers)


def _sampling_layout(x: Tensor) -> Tensor:
    """``x`` in channels_last_3d on a GPU, where the CUDA kernels read 16 contiguous bytes per
    sampled corner; with channels strided they fall back to a scalar gather several times slower.
    The output keeps this layout, so a network converts once per deformable layer at most."""
    if x.is_cuda and x.dim() == 5 and not x.is_contiguous(memory_format=torch.channels_last_3d):
        return x.contiguous(memory_format=torch.channels_last_3d)
    return x


def _autocast_enabled(x: Tensor) -> bool:
    """Whether autocast is on for ``x``'s device (a plain check that torch.compile can trace)."""
    device = x.device.type
    return device in ("cuda", "cpu") and torch.is_autocast_enabled(device)


def _autocast_output_dtype(x: Tensor) -> torch.dtype:
    """The dtype a convolution returns for ``x`` here: the autocast dtype where autocast is on
    for ``x``'s device (as for ``nn.Conv3d``), else ``x``'s own."""
    if _autocast_enabled(x):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def _kernel_weight(weight: Tensor, x: Tensor) -> Tensor:
    """The weight in ``x``'s dtype and, on a GPU, in channels_last_3d: the order the CUDA kernels
    read it in. Cast and re-laid out in one copy (none where the parameter is held that way), so
    the operator's forward and backward do not each copy the weight again."""
    if x.is_cuda and x.dim() == 5:
        return weight.to(dtype=x.dtype, memory_format=torch.channels_last_3d)
    return weight.to(x.dtype)


def _cast(tensor: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    return None if tensor is None else tensor.to(dtype).contiguous()
