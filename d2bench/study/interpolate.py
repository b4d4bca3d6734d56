"""Environment variables in study specs: ``${VAR}``, ``${VAR:-default}``, ``${VAR:?hint}``.

A spec names machine-specific things (the DAVIS root, a scratch folder) through variables so that
one file serves a laptop and a cluster. An unset variable without a default is an error naming
the key path where it was used, because a silently empty path would schedule broken cells.
``${VAR:?hint}`` (the shell's form) is such a required variable whose error also says ``hint``:
what to set it to and how to opt out, where the spec's author knows better than a generic line
(the paper studies' pretrained weights: unset must not mean "train from random weights").
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:-|:\?)([^}]*))?\}")


class InterpolationError(ValueError):
    """A ``${VAR}`` that cannot be resolved; the message names the key path."""


def interpolate(value: Any, environ: Mapping[str, str] | None = None, path: str = "") -> Any:
    """Return ``value`` with every ``${VAR}`` / ``${VAR:-default}`` / ``${VAR:?hint}`` replaced."""
    environ = os.environ if environ is None else environ
    if isinstance(value, dict):
        return {
            key: interpolate(item, environ, f"{path}.{key}" if path else str(key))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [interpolate(item, environ, f"{path}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, str) and "${" in value:
        return _substitute(value, environ, path)
    return value


def _substitute(text: str, environ: Mapping[str, str], path: str) -> str:
    def replace(match: re.Match[str]) -> str:
        name, form, word = match.group(1), match.group(2), match.group(3)
        resolved = environ.get(name)
        if resolved:
            return resolved
        if form == ":-":
            return word
        if form == ":?" and word.strip():
            raise InterpolationError(
                f"{path or '(top level)'}: environment variable {name} is not set: {word.strip()}"
            )
        raise InterpolationError(
            f"{path or '(top level)'}: environment variable {name} is not set "
            f"(set it, or write ${{{name}:-default}} to give a default)"
        )

    result = _REFERENCE.sub(replace, text)
    if "${" in result:
        raise InterpolationError(
            f"{path}: malformed variable reference in {text!r}; "
            "allowed forms are ${NAME}, ${NAME:-default} and ${NAME:?hint}"
        )
    return result


def empty_references(
    value: Any, environ: Mapping[str, str] | None = None, path: str = ""
) -> dict[str, str]:
    """Key path -> a note, for each value that references variables and resolves to nothing.

    ``root: ${DAVIS_ROOT:-}`` with DAVIS_ROOT unset is a valid reference but an empty path; the
    schema refuses the empty value, and this note tells the user which variable to set.
    """
    environ = os.environ if environ is None else environ
    notes: dict[str, str] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            notes.update(empty_references(item, environ, f"{path}.{key}" if path else str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            notes.update(empty_references(item, environ, f"{path}[{index}]"))
    elif isinstance(value, str) and "${" in value:
        names = [match.group(1) for match in _REFERENCE.finditer(value)]
        try:
            resolved = _substitute(value, environ, path)
        except InterpolationError:
            return notes
        if names and not resolved.strip():
            notes[path] = f"it comes from {value}, which is empty here: set {' or '.join(names)}"
    return notes
