"""What every benchmark shares: its criteria, report files and the frame of its Markdown.

Each benchmark (``ops``, ``tiles``, ``model``, ``train``, ``eval``) measures its own thing and
renders its own tables; the criteria it judges (read from ``targets.toml``, data beside this
module, so that the code measures and the file judges), the file names, the JSON it writes
(strict: no NaN, always atomic), the header of its Markdown (title, environment, protocol) and
the table and cell helpers are defined here once. Torch-free.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..core.atomic_io import atomic_write_text

__all__ = [
    "DILATION_RANGE",
    "Target",
    "describe_error",
    "fmt",
    "gpu_slug",
    "json_safe",
    "load_criteria",
    "markdown_table",
    "md_cell",
    "pass_mark",
    "report_header",
    "revision_text",
    "shorten",
    "write_report",
]


#: The operator benchmarks' dilation maps are 1 + 0.5·randn clipped to this range: fractional
#: values, and some taps fall outside the volume.
DILATION_RANGE = (0.25, 3.0)

#: The criteria of every benchmark, one table per benchmark (package data beside this module).
TARGETS_FILE = "targets.toml"


@dataclass(frozen=True)
class Target:
    """One criterion a benchmark judges its measurements against.

    The benchmark computes a value for it (a ratio against ``baseline``, or a time); the
    criterion is met when that value is ≥ ``limit`` (``at_least``) or ≤ ``limit`` otherwise.
    ``subject`` is what is measured (a kernel at a precision, a Table 1 variant, a protocol),
    ``measure`` which of its quantities (a phase of an operator call, FPS, a time); ``kind``
    how it is compared (the benchmark's own vocabulary); ``label`` and ``limit_text`` are how
    reports show it.
    """

    subject: str
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


def load_criteria(benchmark: str) -> list[dict[str, Any]]:
    """The entries of ``benchmark``'s table in ``targets.toml``, in the file's order.

    Each benchmark turns its entries into :class:`Target` objects with its own labels; the
    numbers live in the file, so that changing what the project expects of a measurement
    changes no code.
    """
    text = resources.files(__package__).joinpath(TARGETS_FILE).read_text(encoding="utf-8")
    return list(tomllib.loads(text).get(benchmark, []))


def gpu_slug(name: str | None) -> str:
    """``NVIDIA H100 80GB HBM3`` → ``nvidia-h100-80gb-hbm3``; no GPU → ``cpu``."""
    if not name:
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


def shorten(text: str, limit: int) -> str:
    """``text`` cut at ``limit`` characters, marked with an ellipsis when it was cut."""
    return text if len(text) <= limit else text[:limit] + " …"


def describe_error(error: BaseException, limit: int = 600) -> str:
    """``Type: message`` on one line, long messages (dispatcher errors) cut at ``limit``."""
    return f"{type(error).__name__}: {shorten(' '.join(str(error).split()), limit)}"


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


def report_header(
    title: str,
    environment: dict[str, Any],
    details: Sequence[str] = (),
    *,
    wall_s: float | None = None,
    note: str = "",
) -> list[str]:
    """The lines every report opens with: its title, then what it was measured on as bullets,
    then ``details`` (the benchmark's own protocol, one bullet each), then when it ran and for
    how long (``note`` appended to that line)."""
    env = environment
    gpu = env.get("gpu_name")
    if gpu:
        gpu_line = f"- GPU: {gpu}"
        if env.get("compute_capability"):
            gpu_line += (
                f" (compute capability {env['compute_capability']}, {env.get('gpu_count')} visible)"
            )
        gpu_line += f"; driver {env.get('driver_version') or 'unknown'}"
    else:
        gpu_line = "- GPU: none (measured on the CPU)"
    lines = [
        f"# {title}",
        "",
        gpu_line,
        f"- CPU: {env.get('cpu_model') or 'unknown'}; {env.get('platform')}",
        f"- torch {env.get('torch_version')}, CUDA {env.get('cuda_version') or '—'}, "
        f"cuDNN {env.get('cudnn_version') or '—'}, Python {env.get('python_version')}",
        f"- d2bench revision {revision_text(env)}",
        *(f"- {detail}" for detail in details),
    ]
    if wall_s is not None:
        lines.append(f"- Started {env.get('timestamp_utc')}, took {wall_s:.0f} s{note}")
    return lines


def markdown_table(columns: Sequence[str], align: str, rows: Iterable[Sequence[str]]) -> list[str]:
    """A Markdown table: ``align`` has one letter per column, ``l``, ``r`` or ``c``."""
    rule = {"l": "---", "r": "---:", "c": ":---:"}
    if len(align) != len(columns):
        raise ValueError(f"{len(columns)} columns but alignment {align!r}")
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join(rule[letter] for letter in align) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


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
