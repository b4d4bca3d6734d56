"""D²Conv3D rows (I)–(IV): the kernel's dilation is predicted per output voxel.

Instead of 81 free offsets, the branch predicts 1–3 dilation factors (plus optional modulation),
so the sampling pattern stays a dilated 3×3×3 grid that only stretches or shrinks.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from .. import ops
from ..core.variants import VariantInfo, register_variant
from ..ops.geometry import KERNEL_TAPS, IntOr3
from .activations import DEFAULT_ACTIVATION, apply_activation, canonical_activation
from .branch import Deformation, SampledConv3d
from .coordinates import d2_coordinates
from .spec import DILATION_CHANNELS, SamplingPrecision, VariantSpec


def _branch_channels(dilation_axes: str, modulation: bool) -> int:
    return DILATION_CHANNELS[dilation_axes] + (KERNEL_TAPS if modulation else 0)


@register_variant(
    VariantInfo(
        "d2conv3d_i",
        "(I) S (|D|=1)",
        kind="d2",
        modulation=True,
        dilation_axes="s",
        aliases=("i",),
        table_order=50,
    ),
    VariantInfo(
        "d2conv3d_ii",
        "(II) S (|D|=2)",
        kind="d2",
        modulation=True,
        dilation_axes="yx",
        aliases=("ii",),
        table_order=60,
    ),
    VariantInfo(
        "d2conv3d_iii",
        "(III) S+T (|D|=3)",
        kind="d2",
        modulation=False,
        dilation_axes="tyx",
        aliases=("iii",),
        table_order=70,
    ),
    VariantInfo(
        "d2conv3d_iv",
        "(IV) S+T (|D|=3)",
        kind="d2",
        modulation=True,
        dilation_axes="tyx",
        aliases=("iv",),
        table_order=80,
    ),
)
class D2Conv3d(SampledConv3d):
    """3×3×3 convolution with a dynamic dilation map s = (s_t, s_y, s_x) per output voxel.

    ``dilation_axes`` picks which factors are predicted: ``s`` → (1, d, d), ``yx`` →
    (1, d_y, d_x), ``tyx`` → (d_t, d_y, d_x). A temporal factor that is not predicted is an exact
    1 (not an activated value), so the temporal extent is then that of the replaced conv.
    """

    branch_name: ClassVar[str] = "dilation_conv"
    sampling_geometry: ClassVar[str] = "dilation"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        dilation_axes: str = "tyx",
        activation: str = DEFAULT_ACTIVATION,
        modulation: bool = True,
        stride: IntOr3 = 1,
        padding: IntOr3 = 1,
        dilation: IntOr3 = 1,
        bias: bool = True,
        checkpoint_branch: bool = False,
        sampling_precision: SamplingPrecision = "autocast",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if dilation_axes not in ("s", "yx", "tyx"):
            raise ValueError(
                f"dilation_axes must be one of 's', 'yx', 'tyx'; got {dilation_axes!r}"
            )
        self.dilation_axes = dilation_axes
        self.activation = canonical_activation(activation)
        self.modulation = modulation
        super().__init__(
            in_channels,
            out_channels,
            _branch_channels(dilation_axes, modulation),
            stride=stride,
            padding=padding,
            dilation=dilation,
            bias=bias,
            checkpoint_branch=checkpoint_branch,
            sampling_precision=sampling_precision,
            device=device,
            dtype=dtype,
        )

    @property
    def dilation_channels(self) -> int:
        """Predicted dilation factors: 1, 2 or 3."""
        return DILATION_CHANNELS[self.dilation_axes]

    @classmethod
    def spec_options(cls, spec: VariantSpec) -> dict[str, Any]:
        return {
            "dilation_axes": spec.dilation_axes,
            "activation": spec.activation,
            "modulation": spec.modulation,
        }

    @classmethod
    def branch_channels_for(cls, spec: VariantSpec) -> int:
        return _branch_channels(spec.dilation_axes, spec.modulation)

    def sampling_coordinates(self, geometry: Tensor) -> list[Tensor]:
        return d2_coordinates(geometry, self.stride, self.padding, self.dilation)

    def matches(self, spec: VariantSpec) -> bool:
        return (
            spec.kind == self.kind
            and spec.modulation == self.modulation
            and spec.dilation_axes == self.dilation_axes
            and spec.activation == self.activation
        )

    def deformation_from_branch(self, h: Tensor) -> Deformation:
        n_dil = self.dilation_channels
        factors = apply_activation(self.activation, h[:, :n_dil])
        if self.dilation_axes == "tyx":
            dilation_map = factors
        else:
            ones = torch.ones_like(factors[:, :1])
            spatial = factors.expand(-1, 2, -1, -1, -1) if n_dil == 1 else factors
            dilation_map = torch.cat([ones, spatial], dim=1)
        modulation = torch.sigmoid(h[:, n_dil:]) if self.modulation else None
        return dilation_map, modulation

    def sample(
        self, x: Tensor, deformation: Deformation, weight: Tensor, bias: Tensor | None
    ) -> Tensor:
        dilation_map, modulation = deformation
        return ops.d2conv3d(
            x, dilation_map, modulation, weight, bias, self.stride, self.padding, self.dilation
        )

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, dilation_axes={self.dilation_axes!r}, "
            f"activation={self.activation!r}, modulation={self.modulation}"
        )
