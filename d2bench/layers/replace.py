"""Putting a variant into a network: swap its 3×3×3 convolutions inside named blocks, in place.

All blocks are checked before anything is swapped, so a bad call leaves the model untouched.
Calling again with the same variant is a no-op returning ``[]``: converted layers are
recognised and skipped (for ASPP, a block that already holds an ASPP block is skipped). A block
already converted to a *different* variant raises instead of silently mixing variants.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from torch import nn

from .conv_settings import is_replaceable
from .registry import get_variant, layer_types
from .spec import VariantSpec


def build_layer(conv: nn.Conv3d, spec: VariantSpec) -> nn.Module:
    """The layer that stands in for ``conv`` under ``spec`` (``conv`` itself for the baseline):
    the class registered for the spec's kind builds it."""
    return spec.layer_type.from_conv(conv, spec)  # type: ignore[attr-defined]


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix and name else prefix or name


def resolve_block(module: nn.Module, name: str) -> nn.Module:
    """``module.get_submodule(name)``, but the error lists what exists where the path broke."""
    current, path = module, ""
    for part in name.split(".") if name else []:
        children = dict(current.named_children())
        if part not in children:
            where = f"{path!r}" if path else "the top level"
            raise ValueError(
                f"block {name!r} not found: no child {part!r} at {where}; "
                f"available: {', '.join(children) or '(none)'}"
            )
        current, path = children[part], _join(path, part)
    return current


def _walk(
    module: nn.Module, prefix: str, seen: set[int], converted: tuple[type, ...]
) -> Iterator[tuple[str, nn.Module]]:
    """Modules in definition order, not descending into already-converted layers."""
    if id(module) in seen:
        return
    seen.add(id(module))
    yield prefix, module
    if isinstance(module, converted):
        return
    for name, child in module.named_children():
        yield from _walk(child, _join(prefix, name), seen, converted)


def _plan_block(module: nn.Module, block: str, spec: VariantSpec) -> list[str]:
    """Names (relative to ``module``) of the convs to replace in ``block``; validates it."""
    types = layer_types()
    found = list(_walk(resolve_block(module, block), block, set(), types))
    convs = [name for name, m in found if is_replaceable(m) and not isinstance(m, types)]
    converted = [(name, m) for name, m in found if isinstance(m, types)]
    if not convs and not converted:
        raise ValueError(f"block {block or '(whole module)'!r} contains no 3×3×3 nn.Conv3d")
    for name, layer in converted:
        if not layer.matches(spec):  # type: ignore[operator]
            raise ValueError(
                f"{name!r} is already a {type(layer).__name__} of another variant; "
                f"cannot convert block {block!r} to {spec.name!r}"
            )
    layer_type = spec.layer_type
    return layer_type.convs_to_replace(convs, [name for name, _ in converted])  # type: ignore[attr-defined]


def replace_convs(
    module: nn.Module, variant: VariantSpec | str, blocks: Sequence[str] | None = None
) -> list[str]:
    """Replace the dense 3×3×3 ``nn.Conv3d`` layers of ``blocks`` by ``variant``'s layer.

    ``blocks`` are dotted sub-module names (``None``: ``variant.blocks``, and if that is None too,
    the whole module). Weights are copied (except by ASPP, which replaces only the first such conv
    of each block). Returns the dotted names replaced, relative to ``module``; the baseline
    replaces nothing. Raises ValueError for unknown blocks, blocks without a 3×3×3 conv, and
    blocks already converted to another variant.
    """
    spec = get_variant(variant) if isinstance(variant, str) else variant
    if not isinstance(spec, VariantSpec):
        raise TypeError(f"variant must be a VariantSpec or a registry name, got {variant!r}")
    names = spec.blocks if blocks is None else blocks
    if isinstance(names, str):
        raise ValueError(f"blocks must be a sequence of names, not the string {names!r}")
    targets = [""] if names is None else list(names)
    if "" in targets and is_replaceable(module):
        raise ValueError("cannot replace the module itself in place; pass its parent instead")
    planned: list[str] = []
    for block in targets:
        planned += [n for n in _plan_block(module, block, spec) if n not in planned]
    for name in planned:
        parent_name, _, leaf = name.rpartition(".")
        parent = module.get_submodule(parent_name)
        setattr(parent, leaf, build_layer(getattr(parent, leaf), spec))
    return planned
