"""Help texts several sub-commands share."""

from __future__ import annotations

#: ``--out`` of the benchmarks.
OUT_HELP = "folder for the JSON and Markdown reports (default: %(default)s)"
