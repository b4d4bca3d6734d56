"""The catalogue of conv variants: each declared once, by the layer class that implements it.

A layer module in :mod:`d2bench.layers` registers its class with::

    @register_variant(VariantInfo("dcnv1", "DCNv1", kind="dcn", table_order=30))
    class DeformConv3d(SampledConv3d): ...

That one decorator is the whole declaration: the layer floor finds the class through it, and the
torch-free floors (study specs, the planner, reports) read the same literal records from the
layer modules' *source* with :mod:`ast`, without importing them (importing them imports torch).
So the records must be literals: a computed argument fails loudly here instead of drifting.
A class registered at run time from elsewhere (a test, a user's module) joins the catalogue of
the process that imported it.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

#: The name of the decorator the source scan looks for.
DECORATOR = "register_variant"
#: The package whose modules declare the built-in variants.
LAYER_PACKAGE = "d2bench.layers"

LayerType = TypeVar("LayerType", bound=type)

#: A line that may apply the decorator (a cheap test before parsing a module).
_DECORATED = re.compile(rf"^\s*@[\w.]*\b{DECORATOR}\(", re.MULTILINE)


@dataclass(frozen=True)
class VariantInfo:
    """What the torch-free floors know of one variant (one row of the paper's Table 1).

    Attributes:
        name: canonical name, as studies spell it (lower case).
        label: how the paper labels the row.
        kind: the layer family; all rows of one class share it (the class is found by it).
        modulation: predict a sigmoid mask per tap.
        dilation_axes: which dilations are predicted (``s``, ``yx``, ``tyx``); only these rows
            take a dilation activation.
        aliases: other accepted spellings (matched case-insensitively).
        table_order: where the row sits in Table 1 and in every listing (lowest first).
    """

    name: str
    label: str
    kind: str
    modulation: bool = False
    dilation_axes: str = ""
    aliases: tuple[str, ...] = ()
    table_order: int = 1000

    def __post_init__(self) -> None:
        for field in ("name", "label", "kind"):
            value = getattr(self, field)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"VariantInfo.{field} must be a non-empty string; got {value!r}")
        if self.name != self.name.strip().lower():
            raise ValueError(f"VariantInfo.name must be lower case; got {self.name!r}")
        object.__setattr__(self, "aliases", tuple(a.strip().lower() for a in self.aliases))

    @property
    def takes_activation(self) -> bool:
        """Whether the row predicts dilations, so that a dilation activation applies."""
        return bool(self.dilation_axes)


class VariantCatalogue:
    """Name → record, alias → name and kind → layer class; rejects a name given twice."""

    def __init__(self) -> None:
        self._infos: dict[str, VariantInfo] = {}
        self._owners: dict[str, str] = {}
        self._aliases: dict[str, str] = {}
        self._labels: dict[str, str] = {}
        self._layers: dict[str, type] = {}
        self._kind_owners: dict[str, str] = {}
        #: Read-only live views (they see variants registered later).
        self.aliases: Mapping[str, str] = MappingProxyType(self._aliases)
        self.labels: Mapping[str, str] = MappingProxyType(self._labels)

    def declare(self, info: VariantInfo, owner: str) -> None:
        """Add ``info``, declared by the class ``owner`` (``module.Class``)."""
        self._check_free(info, owner)
        self._kind_owners[info.kind] = owner
        self._infos[info.name] = info
        self._owners[info.name] = owner
        self._labels[info.name] = info.label
        self._aliases.update(dict.fromkeys(info.aliases, info.name))

    def _check_free(self, info: VariantInfo, owner: str) -> None:
        """ValueError unless ``info``'s name, aliases and kind are free for ``owner``."""
        for spelling in (info.name, *info.aliases):
            taken = self._aliases.get(spelling, spelling)
            if taken in self._infos:
                raise ValueError(
                    f"variant name {spelling!r} of {owner} is already registered by "
                    f"{self._owners[taken]} (variant {taken!r}); choose another name"
                )
        kind_owner = self._kind_owners.get(info.kind, owner)
        if kind_owner != owner:
            raise ValueError(
                f"kind {info.kind!r} of {owner} is already implemented by {kind_owner}; "
                "one class implements one kind"
            )

    def register(self, layer: LayerType, infos: Iterable[VariantInfo]) -> LayerType:
        """Bind ``layer`` to its records, declaring those the source scan did not see; all or
        nothing: a clash leaves the catalogue as it was."""
        infos = tuple(infos)
        owner = f"{layer.__module__}.{layer.__qualname__}"
        kinds = {info.kind for info in infos}
        if len(kinds) != 1:
            raise ValueError(f"{owner}: one class implements one kind; got {sorted(kinds)}")
        (kind,) = kinds
        names = [spelling for info in infos for spelling in (info.name, *info.aliases)]
        if len(set(names)) != len(names):
            raise ValueError(f"{owner}: a name or alias is given twice in {names}")
        new = [info for info in infos if not self._declared_by(info, owner)]
        for info in new:
            self._check_free(info, owner)
        for info in new:
            self.declare(info, owner)
        layer.kind = kind  # type: ignore[attr-defined]
        self._layers[kind] = layer
        return layer

    def _declared_by(self, info: VariantInfo, owner: str) -> bool:
        """Whether the source scan already declared exactly ``info`` for ``owner``."""
        return self._owners.get(info.name) == owner and self._infos[info.name] == info

    def unregister(self, name: str) -> None:
        """Forget variant ``name`` (and its class, if it implemented no other row): for tests
        and interactive sessions that registered a variant of their own."""
        info = self._infos.pop(name)
        del self._owners[name], self._labels[name]
        for alias in info.aliases:
            self._aliases.pop(alias, None)
        if not any(other.kind == info.kind for other in self._infos.values()):
            self._layers.pop(info.kind, None)
            self._kind_owners.pop(info.kind, None)

    def owner(self, name: str) -> str:
        """The ``module.Class`` that declared a canonical name."""
        return self._owners[name]

    def names(self) -> tuple[str, ...]:
        """Every registered name, in table order (ties by name)."""
        return tuple(sorted(self._infos, key=lambda n: (self._infos[n].table_order, n)))

    def kinds(self) -> tuple[str, ...]:
        """Every kind some variant has, in table order of its first row."""
        return tuple(dict.fromkeys(self._infos[name].kind for name in self.names()))

    def info(self, name: str) -> VariantInfo:
        """The record of a canonical name (KeyError if unknown)."""
        return self._infos[name]

    def resolve(self, name: str) -> str | None:
        """The canonical name of a name or alias in any case, or None."""
        key = name.strip().lower()
        key = self._aliases.get(key, key)
        return key if key in self._infos else None

    def layer(self, kind: str) -> type:
        """The class registered for ``kind`` (KeyError naming the known kinds)."""
        try:
            return self._layers[kind]
        except KeyError:
            known = ", ".join(self._layers) or "(none: import d2bench.layers first)"
            raise KeyError(f"no layer class registered for kind {kind!r}; known: {known}") from None

    def layers(self) -> tuple[type, ...]:
        """Every registered layer class."""
        return tuple(self._layers.values())


def _called_name(expr: ast.expr) -> str | None:
    """The bare name a call expression calls (``f(...)`` or ``module.f(...)``), else None."""
    func = expr.func if isinstance(expr, ast.Call) else None
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)


def _literal_info(call: ast.expr, where: str) -> VariantInfo:
    """A ``VariantInfo(...)`` call of literals, evaluated without running the module."""
    if not isinstance(call, ast.Call) or _called_name(call) != "VariantInfo":
        raise ValueError(f"{where}: {DECORATOR}(...) takes VariantInfo(...) records only")
    fields = [f.name for f in dataclasses.fields(VariantInfo)]
    try:
        values: dict[str, Any] = dict(zip(fields, map(ast.literal_eval, call.args), strict=False))
        values.update({kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg})
    except ValueError:
        raise ValueError(
            f"{where}: VariantInfo arguments must be literals (strings, numbers, tuples), so that "
            "the torch-free floors can read them without importing the module"
        ) from None
    if len(values) != len(call.args) + len(call.keywords):
        raise ValueError(f"{where}: VariantInfo(...) takes named literal fields only")
    return VariantInfo(**values)


def _is_registration(decorator: ast.expr) -> bool:
    return _called_name(decorator) == DECORATOR


def declared_in_source(path: Path, module: str) -> list[tuple[VariantInfo, str]]:
    """The (record, ``module.Class``) pairs that ``path``'s class decorators register."""
    found: list[tuple[VariantInfo, str]] = []
    text = path.read_text(encoding="utf-8")
    if not _DECORATED.search(text):  # most modules: skip the parse
        return found
    tree = ast.parse(text, filename=str(path))
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        for decorator in node.decorator_list:
            if _is_registration(decorator):
                where = f"{path.name}: class {node.name}"
                for arg in decorator.args:  # type: ignore[attr-defined]
                    found.append((_literal_info(arg, where), f"{module}.{node.name}"))
    return found


def _layer_sources() -> list[tuple[Path, str]]:
    """The layer package's modules as (path, dotted name), found without importing it."""
    spec = importlib.util.find_spec(LAYER_PACKAGE)
    roots = [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    sources = []
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            module = ".".join((LAYER_PACKAGE, *parts))
            sources.append((path, module.removesuffix(".__init__")))
    return sources


def _built_in_catalogue() -> VariantCatalogue:
    catalogue = VariantCatalogue()
    declared = [pair for source in _layer_sources() for pair in declared_in_source(*source)]
    for info, owner in sorted(declared, key=lambda pair: (pair[0].table_order, pair[0].name)):
        catalogue.declare(info, owner)
    if not declared:
        raise ImportError(f"no variant declarations found in the sources of {LAYER_PACKAGE}")
    return catalogue


#: The process's catalogue: the built-in rows read from source, plus any registered since.
CATALOGUE = _built_in_catalogue()


def register_variant(*infos: VariantInfo) -> Callable[[LayerType], LayerType]:
    """Class decorator: ``cls`` implements the rows ``infos`` (all of one kind, which it sets as
    ``cls.kind``). A name or alias already taken raises ValueError naming its owner."""
    if not infos:
        raise ValueError(f"{DECORATOR} needs at least one VariantInfo")

    def decorate(layer: LayerType) -> LayerType:
        return CATALOGUE.register(layer, infos)

    return decorate


def unregister_variant(name: str) -> None:
    """Undo a run-time :func:`register_variant` (see :meth:`VariantCatalogue.unregister`)."""
    CATALOGUE.unregister(name)


def variant_info(name: str) -> VariantInfo:
    """The record of a variant name or alias; ValueError listing the known names."""
    canonical = CATALOGUE.resolve(name) if isinstance(name, str) else None
    if canonical is None:
        known = [*CATALOGUE.names(), *CATALOGUE.aliases]
        raise ValueError(f"unknown variant {name!r}; known names: {', '.join(known)}")
    return CATALOGUE.info(canonical)
