"""What every benchmark shares: its acceptance criteria, report files and Markdown pieces.

Each benchmark (``ops``, ``tiles``, ``model``, ``train``, ``eval``) measures its own thing and
renders its own tables; the criteria it judges, the file names, the JSON it writes (strict: no
NaN, always atomic) and the small formatting helpers of its Markdown are defined here once.
Torch-free.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.atomic_io import atomic_write_text

__all__ = [
    "DILATION_RANGE",
    "Target",
    "fmt",
    "gpu_slug",
    "json_safe",
    "md_cell",
    "pass_mark",
    "revision_text",
    "write_report",
]


#: The operator benchmarks' dilation maps are 1 + 0.5·randn clipped to this range: fractional
#: values, and some taps fall outside the volume.
DILATION_RANGE = (0.25, 3.0)


@dataclass(frozen=True)
class Target:
    """One criterion a benchmark judges its measurements against.

    The benchmark computes a value for it (a ratio against ``baseline``); the criterion is met
    when that value is ≥ ``limit`` (``at_least``) or ≤ ``limit`` otherwise. ``measure`` names
    what of ``variant`` is compared (a phase of an operator call, or a quantity such as FPS);
    ``kind`` how (the benchmark's own vocabulary); ``label`` and ``limit_text`` are how reports
    show it.
    """

    variant: str
    measure: str
    limit: float
    kind: str
    label: str
    limit_text: str
    baseline: str
    at_least: bool = False
    against: str | None = None

    def judge(self, value: float | None) -> bool | None:
        """Met (True), not met (False) or not measured (None)."""
        if value is None:
            return None
        return bool(value >= self.limit if self.at_least else value <= self.limit)


def gpu_slug(name: str | None) -> str:
    """``NVIDIA H100 80GB HBM3`` → ``nvidia-h100-80gb-hbm3``; no GPU → ``cpu``."""
    if not name:
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats as None, keys as strings and tuples as lists, so that
    strict JSON (``allow_nan=False``) can hold it."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def write_report(
    json_path: Path,
    report: dict[str, Any],
    render: Callable[[dict[str, Any]], str],
    *,
    final_newline: bool = False,
) -> str:
    """Write ``report`` as JSON at ``json_path`` and rendered as Markdown beside it (``.md``),
    each atomically; returns the Markdown."""
    report = json_safe(report)
    markdown = render(report)
    text = json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False)
    atomic_write_text(Path(json_path), text + ("\n" if final_newline else ""))
    atomic_write_text(Path(json_path).with_suffix(".md"), markdown)
    return markdown


# --------------------------------------------------------------------------------------------
# Markdown pieces


def md_cell(text: str) -> str:
    """Text safe inside a Markdown table cell (the paper's labels contain ``|D|``)."""
    return text.replace("|", "\\|")


def fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    """A number with ``digits`` decimals and a unit, or a dash when it was not measured."""
    return "—" if value is None else f"{value:.{digits}f}{suffix}"


def pass_mark(verdict: bool | None, missing: str = "—") -> str:
    """✓, ✗, or ``missing`` for a criterion that could not be judged."""
    return missing if verdict is None else ("✓" if verdict else "✗")


def revision_text(environment: dict[str, Any], digits: int = 12) -> str:
    """The measured revision, short, marked when the tree had uncommitted changes."""
    revision = environment.get("git_revision")
    return (revision[:digits] if revision else "unknown") + (
        " (uncommitted changes)" if environment.get("git_dirty") else ""
    )
