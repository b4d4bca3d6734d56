"""The ASPP-3D row: atrous spatial pyramid pooling in place of a block's first 3×3×3 conv.

Unlike the sampling layers it does not copy the replaced weight: it is a different structure
(several parallel branches with BatchNorm and a fusion conv), so there is no weight that would
make it equal the old conv; it is trained from its own initialisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Self

import torch
from torch import Tensor, nn

from ..core.variants import VariantInfo, register_variant
from ..ops.geometry import IntOr3, triple
from .base import ConvVariant, check_kind
from .conv_settings import conv_settings
from .spec import VariantSpec

Rate = tuple[int, int, int]

#: The paper's rates: smaller ones for the deeper (1024-channel, 1/16 scale) input.
RATES_1024: tuple[Rate, ...] = ((1, 3, 3), (1, 6, 6), (1, 9, 9))
RATES_512: tuple[Rate, ...] = ((1, 6, 6), (1, 12, 12), (1, 18, 18))


def default_rates(in_channels: int) -> tuple[Rate, ...]:
    """The paper's rates for a 1024-channel input, else those of the 512-channel input."""
    return RATES_1024 if in_channels == 1024 else RATES_512


def _rate(value: int | Sequence[int]) -> Rate:
    """An int r means (1, r, r): the paper never dilates time in ASPP."""
    rate = (1, value, value) if isinstance(value, int) else triple(value, "rate")
    if min(rate) < 1:
        raise ValueError(f"ASPP rates must be >= 1 on every axis, got {rate}")
    return rate  # type: ignore[return-value]


def _unit(
    in_channels: int, out_channels: int, kernel: int, stride: IntOr3, rate: Rate, factory: dict
) -> nn.Sequential:
    """Conv → BN → ReLU; a 3-tap kernel is padded by its rate so sizes are kept."""
    padding = rate if kernel == 3 else (0, 0, 0)
    dilation = rate if kernel == 3 else (1, 1, 1)
    return nn.Sequential(
        nn.Conv3d(
            in_channels, out_channels, kernel, stride, padding, dilation, bias=False, **factory
        ),
        nn.BatchNorm3d(out_channels, **factory),
        nn.ReLU(inplace=True),
    )


@register_variant(VariantInfo("aspp", "ASPP", kind="aspp", table_order=20))
class ASPP3d(ConvVariant, nn.Module):
    """A 1×1×1 branch plus one dilated 3×3×3 branch per rate, concatenated and fused by 1×1×1.

    ``stride`` is applied by every branch, so the output size equals that of the replaced
    size-preserving conv. ``width`` is each branch's channel count (default ``out_channels``).
    It replaces only the first 3×3×3 conv of a block (see :meth:`convs_to_replace`).
    """

    #: No deformation branch.
    branch_channels: ClassVar[int] = 0

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        rates: Sequence[int | Sequence[int]] | None = None,
        *,
        stride: IntOr3 = 1,
        width: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.rates = tuple(
            _rate(r) for r in (default_rates(in_channels) if rates is None else rates)
        )
        if not self.rates:
            raise ValueError("ASPP needs at least one rate")
        self.stride = triple(stride, "stride")
        self.width = out_channels if width is None else width
        units = [_unit(in_channels, self.width, 1, self.stride, (1, 1, 1), factory)]
        units += [_unit(in_channels, self.width, 3, self.stride, r, factory) for r in self.rates]
        self.branches = nn.ModuleList(units)
        fused = self.width * len(units)
        self.fuse = _unit(fused, out_channels, 1, 1, (1, 1, 1), factory)

    @classmethod
    def from_conv(
        cls,
        conv: nn.Conv3d,
        spec: VariantSpec | None = None,
        rates: Sequence[int | Sequence[int]] | None = None,
    ) -> Self:
        """An ASPP block with ``conv``'s channels, stride, device and dtype (not its weights)."""
        if spec is not None:
            check_kind(cls, spec)
        settings = conv_settings(conv)
        if not settings.keeps_size:
            raise ValueError(
                f"ASPP keeps the spatial size, so it can only replace a conv with padding equal "
                f"to dilation; got padding {settings.padding}, dilation {settings.dilation}"
            )
        block = cls(
            conv.in_channels,
            conv.out_channels,
            rates,
            stride=settings.stride,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        block.train(conv.training)
        return block

    @classmethod
    def convs_to_replace(cls, convs: list[str], converted: list[str]) -> list[str]:
        """The block's first dense conv, unless the block already holds an ASPP block."""
        return [] if converted else convs[:1]

    def forward(self, x: Tensor) -> Tensor:
        return self.fuse(torch.cat([branch(x) for branch in self.branches], dim=1))

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, rates={self.rates}, stride={self.stride}, "
            f"width={self.width}"
        )
