"""3D deformable convolution (DCNv1 / DCNv2 rows): a free (t, y, x) offset for every tap."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from .. import ops
from ..core.variants import VariantInfo, register_variant
from ..ops.geometry import KERNEL_TAPS, IntOr3
from .branch import Deformation, SampledConv3d
from .coordinates import deform_coordinates
from .spec import OFFSET_CHANNELS, SamplingPrecision, VariantSpec


def _branch_channels(modulation: bool) -> int:
    return OFFSET_CHANNELS + (KERNEL_TAPS if modulation else 0)


@register_variant(
    VariantInfo("dcnv1", "DCNv1", kind="dcn", modulation=False, table_order=30),
    VariantInfo("dcnv2", "DCNv2", kind="dcn", modulation=True, table_order=40),
)
class DeformConv3d(SampledConv3d):
    """3×3×3 deformable convolution; ``modulation`` adds DCNv2's sigmoid mask per tap.

    The branch ``offset_conv`` predicts 81 offsets (+27 mask logits). Zero-initialised, the
    layer equals the replaced conv (times 0.5 on the input with modulation: sigmoid(0) = 0.5).
    """

    branch_name: ClassVar[str] = "offset_conv"
    sampling_geometry: ClassVar[str] = "offset"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        modulation: bool = False,
        stride: IntOr3 = 1,
        padding: IntOr3 = 1,
        dilation: IntOr3 = 1,
        bias: bool = True,
        checkpoint_branch: bool = False,
        sampling_precision: SamplingPrecision = "autocast",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.modulation = modulation
        super().__init__(
            in_channels,
            out_channels,
            _branch_channels(modulation),
            stride=stride,
            padding=padding,
            dilation=dilation,
            bias=bias,
            checkpoint_branch=checkpoint_branch,
            sampling_precision=sampling_precision,
            device=device,
            dtype=dtype,
        )

    @classmethod
    def spec_options(cls, spec: VariantSpec) -> dict[str, Any]:
        return {"modulation": spec.modulation}

    @classmethod
    def branch_channels_for(cls, spec: VariantSpec) -> int:
        return _branch_channels(spec.modulation)

    def matches(self, spec: VariantSpec) -> bool:
        return spec.kind == self.kind and spec.modulation == self.modulation

    def sampling_coordinates(self, geometry: Tensor) -> list[Tensor]:
        return deform_coordinates(geometry, self.stride, self.padding, self.dilation)

    def deformation_from_branch(self, h: Tensor) -> Deformation:
        offset = h[:, :OFFSET_CHANNELS]
        mask = torch.sigmoid(h[:, OFFSET_CHANNELS:]) if self.modulation else None
        return offset, mask

    def sample(
        self, x: Tensor, deformation: Deformation, weight: Tensor, bias: Tensor | None
    ) -> Tensor:
        offset, mask = deformation
        return ops.deform_conv3d(
            x, offset, mask, weight, bias, self.stride, self.padding, self.dilation
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, modulation={self.modulation}"
