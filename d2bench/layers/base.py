"""What :func:`~d2bench.layers.replace_convs` asks of a registered variant class.

A class decorated with :func:`~d2bench.core.variants.register_variant` answers these questions
itself, so that putting a new variant into a network needs no switch on its kind anywhere.
"""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from .spec import VariantSpec


class ConvVariant:
    """Mixin of the layer classes that stand in for a 3×3×3 ``nn.Conv3d``.

    ``kind`` is set by the registering decorator. The defaults fit a layer that replaces every
    dense conv of a block and has no deformation branch.
    """

    kind: ClassVar[str]
    #: Whether applying the variant changes a model at all (the baseline does not).
    replaces_convs: ClassVar[bool] = True

    @classmethod
    def from_conv(cls, conv: nn.Conv3d, spec: VariantSpec) -> nn.Module:
        """The layer that stands in for ``conv`` under ``spec``."""
        raise NotImplementedError(f"{cls.__name__} must define from_conv")

    @classmethod
    def branch_channels_for(cls, spec: VariantSpec) -> int:
        """Output channels of the deformation branch under ``spec`` (0 where there is none)."""
        return 0

    @classmethod
    def convs_to_replace(cls, convs: list[str], converted: list[str]) -> list[str]:
        """Of a block's dense 3×3×3 convs, those to replace, given the layers of this variant
        the block already holds: every one (a converted layer is no longer a dense conv)."""
        return convs

    def matches(self, spec: VariantSpec) -> bool:
        """Whether this layer already is what ``spec`` asks for (runtime settings aside)."""
        return spec.kind == self.kind


def check_kind(layer: type[ConvVariant], spec: VariantSpec) -> None:
    """ValueError unless ``spec`` is of the kind ``layer`` implements."""
    if spec.kind != layer.kind:
        raise ValueError(f"{layer.__name__} implements kind {layer.kind!r}, spec is {spec.kind!r}")
