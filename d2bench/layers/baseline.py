"""The revised baseline row: the dense 3×3×3 convolution stays as it is."""

from __future__ import annotations

from torch import nn

from ..core.variants import VariantInfo, register_variant
from .base import ConvVariant, check_kind
from .spec import VariantSpec


@register_variant(
    VariantInfo(
        "baseline", "Revised Baseline", kind="conv", aliases=("revised_baseline",), table_order=10
    )
)
class KeepConv3d(ConvVariant):
    """Stands for the baseline in the registry; it never appears in a network."""

    replaces_convs = False

    @classmethod
    def from_conv(cls, conv: nn.Conv3d, spec: VariantSpec) -> nn.Module:
        check_kind(cls, spec)
        return conv

    @classmethod
    def convs_to_replace(cls, convs: list[str], converted: list[str]) -> list[str]:
        return []
