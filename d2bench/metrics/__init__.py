"""Metrics: DAVIS J&F, the training loss, measurement protocols.

Importing this package is light (no torch, no scipy): the names below load their module on
first use. ``from d2bench.metrics.davis import evaluate`` works as well.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name → submodule (relative to this package) that defines it.
_LAZY_NAMES: dict[str, str] = {
    "evaluate_davis": ".davis",
    "EvalError": ".davis",
}

#: Names whose attribute in the submodule differs from the exported one.
_RENAMED: dict[str, str] = {"evaluate_davis": "evaluate"}

__all__ = sorted(_LAZY_NAMES)


def __getattr__(name: str) -> Any:
    module_name = _LAZY_NAMES.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(module_name, __name__)
    value = getattr(module, _RENAMED.get(name, name))
    globals()[name] = value
    return value
