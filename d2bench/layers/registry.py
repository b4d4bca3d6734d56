"""The named rows of the paper's Table 1, constructible by name.

Study configurations refer to variants by these names; ``get_variant`` turns a name (plus
optional field overrides, e.g. another activation for Table 2) into a validated spec.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ..core.names import (
    DEFAULT_ACTIVATION,
    PAPER_LABELS,
    VARIANT_ALIASES,
    VARIANT_NAMES,
    canonical_variant_name,
)
from .spec import VariantSpec

__all__ = [
    "PAPER_LABELS",
    "VARIANTS",
    "VARIANT_ALIASES",
    "VARIANT_NAMES",
    "canonical_variant_name",
    "get_variant",
]


def _d2(name: str, axes: str, modulation: bool) -> VariantSpec:
    return VariantSpec(name, "d2", modulation, axes, DEFAULT_ACTIVATION)  # type: ignore[arg-type]


#: Canonical name → spec, in the row order of Table 1.
VARIANTS: Mapping[str, VariantSpec] = MappingProxyType(
    {
        "baseline": VariantSpec("baseline", "conv"),
        "aspp": VariantSpec("aspp", "aspp"),
        "dcnv1": VariantSpec("dcnv1", "dcn", modulation=False),
        "dcnv2": VariantSpec("dcnv2", "dcn", modulation=True),
        "d2conv3d_i": _d2("d2conv3d_i", "s", True),
        "d2conv3d_ii": _d2("d2conv3d_ii", "yx", True),
        "d2conv3d_iii": _d2("d2conv3d_iii", "tyx", False),
        "d2conv3d_iv": _d2("d2conv3d_iv", "tyx", True),
    }
)

if tuple(VARIANTS) != VARIANT_NAMES:
    raise ImportError("d2bench.core.names.VARIANT_NAMES and the registry disagree")


def get_variant(name: str, **overrides: Any) -> VariantSpec:
    """The registered spec for ``name`` with some fields replaced (validated again).

    The name is kept unless overridden, e.g. ``get_variant("iv", activation="relu")`` is still
    called ``d2conv3d_iv``; pass ``name=`` to label the result differently.
    """
    spec = VARIANTS[canonical_variant_name(name)]
    fields = {f.name for f in dataclasses.fields(VariantSpec)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        allowed = ", ".join(sorted(fields))
        raise ValueError(f"unknown VariantSpec field(s) {', '.join(unknown)}; fields: {allowed}")
    return dataclasses.replace(spec, **overrides)
