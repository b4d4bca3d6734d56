"""The error of weight loading, shared by the readers of each file format."""

from __future__ import annotations


class WeightsError(ValueError):
    """A weights file that is missing, unreadable or does not fit the backbone.

    The message names the file and, for a mismatch, a few of the offending keys.
    """


def few(names: list[str], limit: int = 5) -> str:
    """At most ``limit`` names, and how many more there are: enough to recognise a mismatch."""
    shown = ", ".join(names[:limit])
    return f"{shown} (and {len(names) - limit} more)" if len(names) > limit else shown
