"""The one error type of the data layer."""

from __future__ import annotations


class DavisError(ValueError):
    """A DAVIS-layout folder that cannot be read; the message names the file or folder at fault."""
