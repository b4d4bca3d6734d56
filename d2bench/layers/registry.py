"""The named rows of the paper's Table 1 (and any variant registered since), constructible by name.

Study configurations refer to variants by these names; ``get_variant`` turns a name (plus
optional field overrides, e.g. another activation for Table 2) into a validated spec. Each name
is declared by the class that implements it (:func:`~d2bench.core.variants.register_variant`);
importing this module imports every module of the package that declares one, so a new variant
needs no line here.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from ..core.names import (
    DEFAULT_ACTIVATION,
    PAPER_LABELS,
    VARIANT_ALIASES,
    VARIANT_NAMES,
    canonical_variant_name,
    variant_names,
)
from ..core.variants import CATALOGUE, LAYER_PACKAGE, VariantInfo, variant_info
from .spec import VariantSpec

__all__ = [
    "PAPER_LABELS",
    "VARIANTS",
    "VARIANT_ALIASES",
    "VARIANT_NAMES",
    "canonical_variant_name",
    "get_variant",
    "layer_types",
    "variant_names",
]


def _import_declaring_modules() -> None:
    """Import the package's modules whose classes declare variants, so each class is bound."""
    for name in VARIANT_NAMES:
        module = CATALOGUE.owner(name).rpartition(".")[0]
        if module.startswith(f"{LAYER_PACKAGE}."):
            importlib.import_module(module)
    unbound = sorted({CATALOGUE.info(name).kind for name in VARIANT_NAMES} - set(_bound_kinds()))
    if unbound:
        raise ImportError(f"no class registered the declared kind(s) {', '.join(unbound)}")


def _bound_kinds() -> list[str]:
    return [layer.kind for layer in CATALOGUE.layers()]


def _spec(info: VariantInfo) -> VariantSpec:
    activation = DEFAULT_ACTIVATION if info.takes_activation else ""
    return VariantSpec(info.name, info.kind, info.modulation, info.dilation_axes, activation)


class _Variants(Mapping[str, VariantSpec]):
    """Canonical name → registered spec, in table order; sees variants registered later."""

    def __getitem__(self, name: str) -> VariantSpec:
        if CATALOGUE.resolve(name) != name:
            raise KeyError(name)
        return _spec(CATALOGUE.info(name))

    def __iter__(self) -> Iterator[str]:
        return iter(CATALOGUE.names())

    def __len__(self) -> int:
        return len(CATALOGUE.names())


#: Canonical name → spec, in the row order of Table 1 (then variants registered since).
VARIANTS: Mapping[str, VariantSpec] = _Variants()


def get_variant(name: str, **overrides: Any) -> VariantSpec:
    """The registered spec for ``name`` with some fields replaced (validated again).

    The name is kept unless overridden, e.g. ``get_variant("iv", activation="relu")`` is still
    called ``d2conv3d_iv``; pass ``name=`` to label the result differently.
    """
    spec = _spec(variant_info(name))
    fields = {f.name for f in dataclasses.fields(VariantSpec)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        allowed = ", ".join(sorted(fields))
        raise ValueError(f"unknown VariantSpec field(s) {', '.join(unknown)}; fields: {allowed}")
    return dataclasses.replace(spec, **overrides)


def layer_types() -> tuple[type, ...]:
    """Every registered class that appears in a network (those that replace convs)."""
    return tuple(layer for layer in CATALOGUE.layers() if getattr(layer, "replaces_convs", True))


_import_declaring_modules()
