"""Turn a frame of runs into a table: mean ± std over seeds, paper value, difference, best,
significance against the reference row, and the status of rows that have no result yet.

The frame is what :meth:`d2bench.tracking.Tracker.study_runs` returns (one row per cell run,
a ``status`` column and one column per final metric); nothing here talks to MLflow.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace

import pandas as pd
from scipy import stats

from ..names import DEFAULT_ACTIVATION, canonical_activation, canonical_variant_name
from . import paper
from .layout import DILATED_VARIANTS, MetricColumn, TableLayout
from .measurement import IN_RUN_CAPTION, MEASURED_COLUMNS, StudyMeasurement, ran_on_cpu

#: Row states, from "all seeds finished" to "no run at all".
ROW_STATES = ("ok", "partial", "running", "failed", "missing", "not in study")

#: The significance mark placed after a value (a dagger: no clash with Markdown emphasis).
SIGNIFICANCE_MARK = "†"


@dataclass(frozen=True)
class CellStats:
    """One metric of one row, in display units (percent for J&F)."""

    mean: float | None
    std: float | None
    n: int
    paper: float | None
    diff: float | None
    p_value: float | None
    significant: bool
    best: bool


@dataclass(frozen=True)
class TableRow:
    """One row as built: status, how many runs are in each state, the metric cells."""

    label: str
    extras: tuple[str, ...]
    status: str
    n_finished: int
    n_failed: int
    n_running: int
    cells: tuple[CellStats, ...]
    run_ids: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    """A built table: what the renderers print."""

    layout: TableLayout
    rows: tuple[TableRow, ...]
    #: The frame column each metric column was read from (e.g. "peak_rss_gb" on CPU runs).
    sources: tuple[str, ...]
    #: Whether any row was tested against the reference (≥ 2 seeds on both sides).
    tested: bool
    caption: str
    #: Where the FPS/Mem columns come from: the study's newest measurement, or None (in-run).
    measurement: StudyMeasurement | None = None
    #: Headers of the columns measured on a CPU: shown without the paper's (GPU) value and Δ.
    cpu_columns: tuple[str, ...] = ()

    @property
    def columns(self) -> tuple[MetricColumn, ...]:
        return self.layout.columns


def _canonical_or_same(name: object, canonical) -> object:
    if not isinstance(name, str) or not name:
        return name
    try:
        return canonical(name)
    except ValueError:
        return name


def normalise_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Canonical variant/activation names; dilated variants without one get the default.

    Non-dilated variants get an empty activation, so that selectors can compare strings.
    """
    out = frame.copy()
    for column in ("variant", "activation", "status", "run_id"):
        if column not in out.columns:
            out[column] = None
    out["variant"] = [_canonical_or_same(v, canonical_variant_name) for v in out["variant"]]
    activations = []
    for variant, activation in zip(out["variant"], out["activation"], strict=True):
        if variant not in DILATED_VARIANTS:
            activations.append("")
        elif not isinstance(activation, str) or not activation:
            activations.append(DEFAULT_ACTIVATION)
        else:
            activations.append(_canonical_or_same(activation, canonical_activation))
    out["activation"] = activations
    out["status"] = [str(s).upper() if isinstance(s, str) else "MISSING" for s in out["status"]]
    return out


def select_runs(frame: pd.DataFrame, selector: Mapping[str, str | tuple[str, ...]]) -> pd.DataFrame:
    """The runs matching every entry of ``selector``: equal to the value, or one of a tuple.

    A selector column the frame lacks matches nothing.
    """
    mask = pd.Series(True, index=frame.index)
    for column, value in selector.items():
        if column not in frame.columns:
            return frame.iloc[0:0]
        accepted = [str(v) for v in value] if isinstance(value, tuple) else [str(value)]
        mask &= frame[column].astype(str).isin(accepted)
    return frame[mask]


def _resolve_source(frame: pd.DataFrame, column: MetricColumn) -> str:
    for source in column.sources:
        if source in frame.columns and frame[source].notna().any():
            return source
    return column.sources[0]


def _values(runs: pd.DataFrame, source: str, scale: float) -> list[float]:
    if source not in runs.columns:
        return []
    finished = runs[runs["status"] == "FINISHED"]
    values = pd.to_numeric(finished[source], errors="coerce").dropna()
    return [float(v) * scale for v in values]


def _spread(values: list[float]) -> float:
    return max(values) - min(values)


def _welch_p(values: list[float], reference: list[float]) -> float | None:
    """Two-sided Welch p-value; None below 2 seeds a side or when neither side varies."""
    if len(values) < 2 or len(reference) < 2:
        return None
    scale = max(1.0, *(abs(v) for v in values + reference))
    if _spread(values) <= 1e-12 * scale and _spread(reference) <= 1e-12 * scale:
        return None  # identical repeats on both sides (e.g. a memory figure): no test
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_ind(values, reference, equal_var=False)
    p_value = float(result.pvalue)
    return None if math.isnan(p_value) else p_value


def _row_status(runs: pd.DataFrame, planned: bool) -> tuple[str, int, int, int]:
    finished = int((runs["status"] == "FINISHED").sum())
    failed = int((runs["status"] == "FAILED").sum())
    running = int((runs["status"] == "RUNNING").sum())
    if finished == 0:
        empty = "missing" if planned or len(runs) else "not in study"
        status = "running" if running else "failed" if failed else empty
    else:
        status = "partial" if failed or running else "ok"
    return status, finished, failed, running


def _row_keys(layout_row_select: Mapping[str, object], row_runs: pd.DataFrame) -> set[str]:
    """The cell keys a table row stands for (its selector's and its runs')."""
    selected = layout_row_select.get("cell_key", ())
    keys = {str(k) for k in (selected if isinstance(selected, tuple) else (selected,))}
    if "cell_key" in row_runs.columns:
        keys |= {str(k) for k in row_runs["cell_key"].dropna()}
    return keys


def _is_measured(column: MetricColumn, measurement: StudyMeasurement | None) -> bool:
    return measurement is not None and column.name in MEASURED_COLUMNS


def _column_source(
    runs: pd.DataFrame, column: MetricColumn, measurement: StudyMeasurement | None
) -> str:
    """The frame column a metric column reads, or (measured memory) what was measured."""
    if measurement is not None and column.name == "mem" and measurement.memory_source:
        return measurement.memory_source
    return _resolve_source(runs, column)


def _cpu_columns(
    runs: pd.DataFrame,
    layout: TableLayout,
    sources: tuple[str, ...],
    measurement: StudyMeasurement | None,
) -> set[str]:
    """Names of the FPS/Mem columns whose numbers were taken on a CPU (a CPU measurement, or
    in-run figures of CPU cells: their memory is the process's peak resident memory)."""
    on_cpu = measurement.on_cpu if measurement is not None else ran_on_cpu(runs)
    return {
        column.name
        for column, source in zip(layout.columns, sources, strict=True)
        if (column.name == "mem" and source == "peak_rss_gb") or (column.name == "fps" and on_cpu)
    }


def build_table(
    frame: pd.DataFrame,
    layout: TableLayout,
    protocol: str = "",
    measurement: StudyMeasurement | None = None,
) -> Table:
    """Build ``layout`` from the runs in ``frame``; ``protocol`` ends the caption.

    With a ``measurement``, the FPS and Mem columns show its rounds (mean ± std over rounds,
    not over seeds, and untested); without one, the cells' in-run figures.
    """
    runs = normalise_runs(frame)
    sources = tuple(_column_source(runs, column, measurement) for column in layout.columns)
    cpu = _cpu_columns(runs, layout, sources, measurement)
    if layout.show_paper and cpu:  # the paper's FPS and memory are GPU figures: no Δ to a CPU
        columns = tuple(
            replace(column, compare_paper=False) if column.name in cpu else column
            for column in layout.columns
        )
        layout = replace(layout, columns=columns)
    reference_runs = (
        select_runs(runs, layout.reference) if layout.reference is not None else runs.iloc[0:0]
    )
    reference_ids = set(reference_runs["run_id"].astype(str))

    raw_rows = []
    tested = False
    for layout_row in layout.rows:
        row_runs = select_runs(runs, layout_row.select)
        status, finished, failed, running = _row_status(row_runs, layout_row.planned)
        is_reference = bool(reference_ids) and set(row_runs["run_id"].astype(str)) == (
            reference_ids
        )
        cells = []
        for column, source in zip(layout.columns, sources, strict=True):
            measured = _is_measured(column, measurement)
            if measured and measurement is not None:
                keys = _row_keys(layout_row.select, row_runs)
                values = [v * column.scale for v in measurement.values(column.name, keys)]
                reference = []
            else:
                values = _values(row_runs, source, column.scale)
                reference = _values(reference_runs, source, column.scale)
            mean = sum(values) / len(values) if values else None
            std = float(pd.Series(values).std(ddof=1)) if len(values) >= 2 else None
            paper_value = layout_row.paper.get(column.name) if column.compare_paper else None
            diff = mean - paper_value if mean is not None and paper_value is not None else None
            p_value = None if is_reference or measured else _welch_p(values, reference)
            tested = tested or p_value is not None
            significant = p_value is not None and p_value < layout.alpha
            cells.append(
                CellStats(mean, std, len(values), paper_value, diff, p_value, significant, False)
            )
        raw_rows.append((layout_row, status, finished, failed, running, cells, row_runs))

    best = _best_rows_per_column(layout, [cells for *_, cells, _ in raw_rows])
    rows = []
    for row_index, (layout_row, status, finished, failed, running, cells, row_runs) in enumerate(
        raw_rows
    ):
        marked = tuple(
            replace(cell, best=row_index in best[column_index])
            for column_index, cell in enumerate(cells)
        )
        rows.append(
            TableRow(
                label=layout_row.label,
                extras=layout_row.extras,
                status=status,
                n_finished=finished,
                n_failed=failed,
                n_running=running,
                cells=marked,
                run_ids=tuple(str(r) for r in row_runs["run_id"]),
            )
        )
    cpu_headers = tuple(column.header for column in layout.columns if column.name in cpu)
    table = Table(
        layout,
        tuple(rows),
        sources,
        tested,
        caption="",
        measurement=measurement,
        cpu_columns=cpu_headers,
    )
    return replace(table, caption=table_caption(table, protocol))


def _best_rows_per_column(layout: TableLayout, rows: list[list[CellStats]]) -> list[set[int]]:
    """Per column, the indices of the rows whose shown mean is the best (ties all count).

    Nothing is bold while fewer than two rows have a value: a lone number is not "best".
    """
    best: list[set[int]] = []
    for index, column in enumerate(layout.columns):
        shown = {
            row_index: round(cells[index].mean, column.decimals)
            for row_index, cells in enumerate(rows)
            if cells[index].mean is not None
        }
        if len(shown) < 2:
            best.append(set())
            continue
        target = max(shown.values()) if column.higher_is_better else min(shown.values())
        best.append({row_index for row_index, value in shown.items() if value == target})
    return best


def _source_note(column: MetricColumn, source: str) -> str:
    if source == "peak_rss_gb":
        return f"{column.header}: peak resident memory of the process (CPU run); "
    if source == "mem_reserved_gb":
        return f"{column.header}: peak GPU memory reserved by the allocator; "
    if source == "mem_alloc_gb":
        return f"{column.header}: peak GPU memory allocated; "
    return ""


def table_caption(table: Table, protocol: str = "") -> str:
    """The caption: what each number is, the bold rule, the test, the protocol."""
    layout = table.layout
    better = ", ".join(
        f"{'higher' if c.higher_is_better else 'lower'} {c.header}" for c in layout.columns
    )
    parts = [
        f"{layout.title}.",
        "Ours: mean ± sample std over seeds (n = finished seeds);",
        "paper: the published value; Δ = ours − paper." if layout.show_paper else "",
        f"Bold: best of each column ({better}).",
    ]
    if table.tested:
        parts.append(
            f"{SIGNIFICANCE_MARK}: p < {layout.alpha:g}, two-sided Welch's t-test "
            f"(unequal variances) against {layout.reference_label} over seeds, "
            "where both have at least 2 seeds."
        )
    elif layout.reference is not None:
        parts.append(
            f"No significance test: it needs at least 2 finished seeds in a row and in "
            f"{layout.reference_label}."
        )
    notes = "".join(
        _source_note(column, source)
        for index, (column, source) in enumerate(zip(layout.columns, table.sources, strict=True))
        if any(row.cells[index].n for row in table.rows)
    )
    if notes:
        parts.append(notes.rstrip("; ") + ".")
    if layout.checkpoint_note:
        parts.append(layout.checkpoint_note)
    speed_shown = any(
        row.cells[index].n
        for index, column in enumerate(layout.columns)
        if column.name in MEASURED_COLUMNS
        for row in table.rows
    )
    if table.measurement is not None and speed_shown:
        parts.append(table.measurement.caption())
    elif speed_shown:
        parts.append(IN_RUN_CAPTION)
    if speed_shown and layout.show_paper and table.cpu_columns:
        parts.append(
            f"{' and '.join(table.cpu_columns)}: measured on a CPU, so no paper value or Δ "
            f"beside them (the paper's are GPU figures, on a {paper.PAPER_HARDWARE})."
        )
    if layout.paper_note:
        parts.append(layout.paper_note)
    if protocol:
        parts.append(f"Ours: {protocol.rstrip('.')}.")
    return " ".join(part for part in parts if part)
