"""The named rows of the paper's Table 1, constructible by name.

Study configurations refer to variants by these names; ``get_variant`` turns a name (plus
optional field overrides, e.g. another activation for Table 2) into a validated spec.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from .activations import DEFAULT_ACTIVATION
from .spec import VariantSpec


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

VARIANT_NAMES: tuple[str, ...] = tuple(VARIANTS)

#: Other accepted spellings (matched case-insensitively).
VARIANT_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "revised_baseline": "baseline",
        "i": "d2conv3d_i",
        "ii": "d2conv3d_ii",
        "iii": "d2conv3d_iii",
        "iv": "d2conv3d_iv",
    }
)

#: How each row is labelled in the paper, for reports.
PAPER_LABELS: Mapping[str, str] = MappingProxyType(
    {
        "baseline": "Revised Baseline",
        "aspp": "ASPP",
        "dcnv1": "DCNv1",
        "dcnv2": "DCNv2",
        "d2conv3d_i": "(I) S (|D|=1)",
        "d2conv3d_ii": "(II) S (|D|=2)",
        "d2conv3d_iii": "(III) S+T (|D|=3)",
        "d2conv3d_iv": "(IV) S+T (|D|=3)",
    }
)


def canonical_variant_name(name: str) -> str:
    """Resolve a name or alias (any case); ValueError listing the known names."""
    key = name.strip().lower() if isinstance(name, str) else name
    key = VARIANT_ALIASES.get(key, key)
    if key not in VARIANTS:
        known = [*VARIANT_NAMES, *VARIANT_ALIASES]
        raise ValueError(f"unknown variant {name!r}; known names: {', '.join(known)}")
    return key


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
