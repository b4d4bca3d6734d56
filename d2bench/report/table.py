"""Turn a frame of runs into a table: mean ± std over seeds, paper value, difference, best,
the comparison against the reference row, and the status of rows that have no result yet.

The frame is what :meth:`d2bench.tracking.Tracker.study_runs` returns (one row per cell run,
a ``status`` column and one column per final metric); nothing here talks to MLflow. Given the
runs' J&F per sequence (:mod:`d2bench.core.per_sequence`), the J&F column is compared with the
reference pairwise over the sequences, Holm-corrected across the table's rows
(:mod:`d2bench.report.statistics`), and that comparison alone marks J&F better or worse; the
other columns keep Welch's test over seeds.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace

import pandas as pd
from scipy import stats

from ..core.contract import MEM_ALLOC_GB, MEM_RESERVED_GB, PEAK_RSS_GB
from ..core.names import DEFAULT_ACTIVATION, canonical_activation, canonical_variant_name
from ..core.per_sequence import checkpoint_of_metric
from . import paper
from .layout import DILATED_VARIANTS, JF, MetricColumn, TableLayout
from .measurement import IN_RUN_CAPTION, MEASURED_COLUMNS, StudyMeasurement, ran_on_cpu
from .statistics import (
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    MIN_SEQUENCES,
    SCORE_COLUMNS,
    Comparison,
    compare_rows,
)

log = logging.getLogger(__name__)

#: Row states, from "all seeds finished" to "no run at all".
ROW_STATES = ("ok", "partial", "running", "failed", "missing", "not in study")

#: The significance mark placed after a value (a dagger: no clash with Markdown emphasis).
SIGNIFICANCE_MARK = "†"
#: The marks of the paired comparison: better / worse than the reference.
BETTER_MARK = "▲"
WORSE_MARK = "▼"


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
    #: The paired comparison of the J&F column with the reference (None: not compared).
    comparison: Comparison | None = None
    #: Whether the row shows the reference's own runs.
    is_reference: bool = False


@dataclass(frozen=True)
class PairedColumn:
    """What the table's paired comparison did: the column, the family, the bootstrap."""

    #: The compared metric column's name ("jf") and the checkpoint its scores are of.
    column: str
    checkpoint: str
    #: Rows with an interval (the family Holm corrects over).
    family: int
    alpha: float
    resamples: int
    seed: int
    min_sequences: int


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
    #: The paired comparison against the reference (None: no per-sequence scores for it).
    paired: PairedColumn | None = None

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
        if (column.name == "mem" and source == PEAK_RSS_GB) or (column.name == "fps" and on_cpu)
    }


def is_jf_column(column: MetricColumn) -> bool:
    """Whether a column shows J&F (the selected checkpoint's or the other one's)."""
    return column.name == JF.name or column.name.startswith(f"{JF.name}_")


def _scores_of(
    per_sequence: pd.DataFrame, runs: pd.DataFrame, checkpoint: str
) -> pd.DataFrame | None:
    """The finished ``runs``' per-sequence scores of ``checkpoint``, with their seeds."""
    finished = runs[runs["status"] == "FINISHED"]
    if finished.empty:
        return None
    seeds = (
        finished["seed"]
        if "seed" in finished.columns and finished["seed"].notna().all()
        else pd.Series(range(len(finished)), index=finished.index)
    )
    seed_of = dict(zip(finished["run_id"].astype(str), seeds.astype(int), strict=True))
    picked = per_sequence[
        per_sequence["run_id"].astype(str).isin(seed_of)
        & (per_sequence["checkpoint"] == checkpoint)
    ]
    if picked.empty:
        return None
    picked = picked.assign(run_id=picked["run_id"].astype(str))
    return picked.assign(seed=picked["run_id"].map(seed_of)).loc[:, list(SCORE_COLUMNS)]


def _paired_comparisons(
    runs: pd.DataFrame,
    layout: TableLayout,
    sources: tuple[str, ...],
    row_runs: list[pd.DataFrame],
    reference_rows: list[bool],
    per_sequence: pd.DataFrame | None,
    resamples: int,
    seed: int,
) -> tuple[PairedColumn | None, list[Comparison | None]]:
    """The J&F column's comparison of every row with the reference, or (None, …) when the
    reference has no per-sequence scores (then nothing is compared pairwise)."""
    nothing: list[Comparison | None] = [None] * len(row_runs)
    names = [column.name for column in layout.columns]
    if per_sequence is None or layout.reference is None or JF.name not in names:
        return None, nothing
    index = names.index(JF.name)
    column, checkpoint = layout.columns[index], checkpoint_of_metric(sources[index])
    reference = _scores_of(per_sequence, select_runs(runs, layout.reference), checkpoint)
    if reference is None:
        return None, nothing
    frames = [
        None if is_reference else _scores_of(per_sequence, frame, checkpoint)
        for frame, is_reference in zip(row_runs, reference_rows, strict=True)
    ]
    try:
        comparisons = compare_rows(
            frames,
            reference,
            alpha=layout.alpha,
            resamples=resamples,
            seed=seed,
            min_sequences=MIN_SEQUENCES,
            scale=column.scale,
            higher_is_better=column.higher_is_better,
        )
    except ValueError as error:  # the reference's own scores are unusable: compare nothing
        log.warning("table %s: no paired comparison: %s", layout.name, error)
        return None, nothing
    family = sum(1 for c in comparisons if c is not None and c.has_interval)
    paired = PairedColumn(
        column.name, checkpoint, family, layout.alpha, resamples, seed, MIN_SEQUENCES
    )
    return paired, comparisons


def build_table(
    frame: pd.DataFrame,
    layout: TableLayout,
    protocol: str = "",
    measurement: StudyMeasurement | None = None,
    per_sequence: pd.DataFrame | None = None,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    bootstrap_seed: int = DEFAULT_SEED,
) -> Table:
    """Build ``layout`` from the runs in ``frame``; ``protocol`` ends the caption.

    With a ``measurement``, the FPS and Mem columns show its rounds (mean ± std over rounds,
    not over seeds, and untested); without one, the cells' in-run figures. With
    ``per_sequence`` (``run_id``, ``checkpoint``, ``sequence``, ``objects``, ``jf_mean``: the
    runs' J&F per sequence) and a reference that has them, the J&F column is compared with the
    reference pairwise over sequences (``resamples`` bootstrap draws, generator seeded with
    ``bootstrap_seed``) and no longer gets Welch's dagger.
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

    all_row_runs = [select_runs(runs, layout_row.select) for layout_row in layout.rows]
    reference_rows = [
        bool(reference_ids) and set(row_runs["run_id"].astype(str)) == reference_ids
        for row_runs in all_row_runs
    ]
    paired, comparisons = _paired_comparisons(
        runs, layout, sources, all_row_runs, reference_rows, per_sequence, resamples,
        bootstrap_seed,
    )  # fmt: skip

    raw_rows = []
    tested = False
    for layout_row, row_runs, is_reference in zip(
        layout.rows, all_row_runs, reference_rows, strict=True
    ):
        status, finished, failed, running = _row_status(row_runs, layout_row.planned)
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
            # with the paired comparison, it alone marks J&F; Welch's p stays in the CSV
            welch_marks = paired is None or not is_jf_column(column)
            tested = tested or (welch_marks and p_value is not None)
            significant = welch_marks and p_value is not None and p_value < layout.alpha
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
                comparison=comparisons[row_index],
                is_reference=reference_rows[row_index],
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
        paired=paired,
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
    if source == PEAK_RSS_GB:
        return f"{column.header}: peak resident memory of the process (CPU run); "
    if source == MEM_RESERVED_GB:
        return f"{column.header}: peak GPU memory reserved by the allocator; "
    if source == MEM_ALLOC_GB:
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
    if table.paired is not None:
        parts.append(paired_caption(table))
    if table.tested:
        only = " (columns other than J&F; uncorrected)" if table.paired is not None else ""
        parts.append(
            f"{SIGNIFICANCE_MARK}: p < {layout.alpha:g}, two-sided Welch's t-test "
            f"(unequal variances) against {layout.reference_label} over seeds, "
            f"where both have at least 2 seeds{only}."
        )
    elif layout.reference is not None and table.paired is None:
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


def paired_header(table: Table) -> str:
    """The header of the paired comparison's column."""
    paired = table.paired
    assert paired is not None
    column = next(c for c in table.columns if c.name == paired.column)
    level = f"{1 - paired.alpha:.0%}"
    return f"Δ{column.header} vs {table.layout.reference_label} [{level} CI, Holm]"


def paired_caption(table: Table) -> str:
    """How the rows were compared with the reference and when a row is marked."""
    paired = table.paired
    assert paired is not None
    layout = table.layout
    column = next(c for c in table.columns if c.name == paired.column)
    reference = layout.reference_label
    alpha = f"{paired.alpha:g}"
    text = (
        f"Δ{column.header} vs {reference}: the row's {column.header} minus {reference}'s, "
        "both over the evaluation sequences that every seed of the two rows scored (per seed, "
        "then averaged over seeds), in points. In brackets: a percentile bootstrap interval "
        f"from {paired.resamples} draws (generator seed {paired.seed}), each resampling the "
        "sequences (one draw for both rows; a sequence keeps all its objects and seeds) and the "
        "seeds (one draw for both rows where they ran the same seeds). "
    )
    if paired.family:
        text += (
            f"Holm-corrected over the m = {paired.family} row(s) with an interval: the row with "
            "the i-th smallest bootstrap p-value (the smallest error level at which its "
            f"interval excludes 0) is shown at level 1 − {alpha}/(m − i + 1), until a row's "
            "interval includes 0; "
            "that row and all after it keep its level. "
            f"{BETTER_MARK}/{WORSE_MARK}: the interval lies above/below 0, i.e. better/worse "
            f"than {reference} (family-wise error of the marks at most {alpha}); no mark: it "
            "includes 0. "
        )
    else:
        text += "No row has an interval, so none is marked. "
    text += (
        f"A row on fewer than {paired.min_sequences} sequences shows Δ and its number of "
        "sequences, without an interval."
    )
    dropped = [
        f"{row.label} on {row.comparison.sequences} of "
        f"{row.comparison.sequences + len(row.comparison.dropped)}"
        for row in table.rows
        if row.comparison is not None and row.comparison.dropped
    ]
    if dropped:
        text += (
            " Sequences not scored by every seed of both rows are left out: "
            + "; ".join(dropped)
            + "."
        )
    return text
