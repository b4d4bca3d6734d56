"""Names of the variants and dilation activations, free of torch.

Study specs, the planner and reports need to validate and label variants without importing
torch; :mod:`d2bench.layers` builds its registry from these same names, so there is one list.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

#: Canonical variant names, in the row order of Table 1.
VARIANT_NAMES: tuple[str, ...] = (
    "baseline",
    "aspp",
    "dcnv1",
    "dcnv2",
    "d2conv3d_i",
    "d2conv3d_ii",
    "d2conv3d_iii",
    "d2conv3d_iv",
)

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

#: Canonical dilation activation names, in the column order of Table 2.
ACTIVATION_NAMES: tuple[str, ...] = ("none", "1+relu", "relu", "1+elu")

#: Keys used by the original code, accepted so that its configurations can be read unchanged.
ACTIVATION_ALIASES: Mapping[str, str] = MappingProxyType(
    {"linear": "none", "relu_plus_one": "1+relu", "elu": "1+elu"}
)

#: How Table 2 labels each activation.
ACTIVATION_LABELS: Mapping[str, str] = MappingProxyType(
    {"none": "None", "1+relu": "1 + ReLU", "relu": "ReLU", "1+elu": "1 + elu"}
)

#: The paper's choice (its best row of Table 2).
DEFAULT_ACTIVATION = "1+elu"


def canonical_variant_name(name: str) -> str:
    """Resolve a variant name or alias (any case); ValueError listing the known names."""
    key = name.strip().lower() if isinstance(name, str) else name
    key = VARIANT_ALIASES.get(key, key)
    if key not in VARIANT_NAMES:
        known = [*VARIANT_NAMES, *VARIANT_ALIASES]
        raise ValueError(f"unknown variant {name!r}; known names: {', '.join(known)}")
    return key


def canonical_activation(name: str) -> str:
    """Resolve an activation name or alias; ValueError listing the valid ones."""
    key = name.strip().lower() if isinstance(name, str) else name
    key = ACTIVATION_ALIASES.get(key, key)
    if key not in ACTIVATION_NAMES:
        valid = [*ACTIVATION_NAMES, *ACTIVATION_ALIASES]
        raise ValueError(f"activation must be one of {', '.join(valid)}; got {name!r}")
    return key
