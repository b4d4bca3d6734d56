"""Names of the variants and dilation activations, free of torch.

Study specs, the planner and reports need to validate and label variants without importing
torch. The variants' names, aliases and labels come from :mod:`.variants`, which reads them from
the declarations of the layer classes themselves, so there is one list.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from .variants import CATALOGUE, variant_info

#: Canonical names of the package's variants, in the row order of Table 1 (each declared by
#: its layer class in :mod:`d2bench.layers`; :func:`variant_names` adds any registered since).
VARIANT_NAMES: tuple[str, ...] = CATALOGUE.names()

#: Other accepted spellings (matched case-insensitively); a live view of the catalogue.
VARIANT_ALIASES: Mapping[str, str] = CATALOGUE.aliases

#: How each row is labelled in the paper, for reports; a live view of the catalogue.
PAPER_LABELS: Mapping[str, str] = CATALOGUE.labels

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


def variant_names() -> tuple[str, ...]:
    """Every variant known to this process, in table order: :data:`VARIANT_NAMES` plus those
    registered at run time by modules outside the package."""
    return CATALOGUE.names()


def canonical_variant_name(name: str) -> str:
    """Resolve a variant name or alias (any case); ValueError listing the known names."""
    return variant_info(name).name


def takes_activation(variant: str) -> bool:
    """Whether ``variant`` predicts dilations, so that a dilation activation applies to it."""
    return variant_info(variant).takes_activation


def canonical_activation(name: str) -> str:
    """Resolve an activation name or alias; ValueError listing the valid ones."""
    key = name.strip().lower() if isinstance(name, str) else name
    key = ACTIVATION_ALIASES.get(key, key)
    if key not in ACTIVATION_NAMES:
        valid = [*ACTIVATION_NAMES, *ACTIVATION_ALIASES]
        raise ValueError(f"activation must be one of {', '.join(valid)}; got {name!r}")
    return key
