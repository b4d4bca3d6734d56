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
    header = ["Object", *_OBJECT_KEYS, *(["Proposal", "GT object"] if matched else [])]
    rows = []
    for name, entry in result["per_object"].items():
        cells = [name, *(f"{100 * entry[key]:.3f}" for key in _OBJECT_KEYS)]
        if matched:  # row k is the k-th matched proposal: say which object it matched
            proposal = entry.get("proposal")
            cells.append("-" if proposal is None else str(proposal))
            cells.append(str(entry["object"]))
        rows.append(cells)
    widths = [max(len(cells[i]) for cells in [header, *rows]) for i in range(len(header))]
    lines.append(_row(header, widths))
    lines.extend(_row(cells, widths) for cells in rows)
    return "\n".join(lines)


def per_sequence_rows(result: dict[str, Any]) -> list[tuple[str, float, float]]:
    """(name, J-Mean, F-Mean) per row, in order: the official per-sequence CSV, row for row."""
    return [
        (name, float(entry["J-Mean"]), float(entry["F-Mean"]))
        for name, entry in result["per_object"].items()
    ]


def per_sequence_csv(result: dict[str, Any]) -> str:
    """The official per-sequence CSV's text: ``Sequence,J-Mean,F-Mean``, fractions to 3 places."""
    lines = ["Sequence,J-Mean,F-Mean"]
    lines += [f"{name},{j:.3f},{f:.3f}" for name, j, f in per_sequence_rows(result)]
    return "\n".join(lines) + "\n"
