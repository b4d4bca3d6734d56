"""A readable text table of an evaluation result: the global values, then one row per object."""

from __future__ import annotations

from typing import Any

from .statistics import GLOBAL_KEYS

_OBJECT_KEYS = ("J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")


def _row(cells: list[str], widths: list[int]) -> str:
    first = cells[0].ljust(widths[0])
    rest = [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)]
    return "  ".join([first, *rest])


def format_table(result: dict[str, Any]) -> str:
    """Global and per-object values in percent with three decimals, like the official tool."""
    protocol = result["protocol"]["name"]
    lines = [
        f"DAVIS evaluation, protocol {protocol}, image set {result['imageset']}: "
        f"{len(result['sequences'])} sequences, {result['num_objects']} objects, "
        f"{result['num_frames']} frames scored per object, {result['wall_s']:.2f} s",
        "",
    ]
    widths = [max(len(key), 8) for key in GLOBAL_KEYS]
    lines.append(
        "  ".join(key.rjust(width) for key, width in zip(GLOBAL_KEYS, widths, strict=True))
    )
    lines.append(
        "  ".join(
            f"{100 * result['global'][key]:.3f}".rjust(width)
            for key, width in zip(GLOBAL_KEYS, widths, strict=True)
        )
    )
    lines.append("")
    matched = protocol == "unsupervised"
    header = ["Object", *_OBJECT_KEYS, *(["Proposal"] if matched else [])]
    rows = []
    for name, entry in result["per_object"].items():
        cells = [name, *(f"{100 * entry[key]:.3f}" for key in _OBJECT_KEYS)]
        if matched:
            proposal = entry.get("proposal")
            cells.append("-" if proposal is None else str(proposal))
        rows.append(cells)
    widths = [max(len(cells[i]) for cells in [header, *rows]) for i in range(len(header))]
    lines.append(_row(header, widths))
    lines.extend(_row(cells, widths) for cells in rows)
    return "\n".join(lines)
