"""Read the finished runs' J&F per sequence for the tables' paired comparison.

Each run's MLflow table ``per_sequence.json`` is read first; runs recorded before it existed
fall back to their ``eval.json`` (and ``eval-best_val.json``). A checkpoint's records are kept
only when they add up to the J&F the run reported, so a file of other weights never enters a
comparison.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from ..core.contract import (
    BEST_VAL_EVAL_FILE,
    BEST_VAL_JF_MEAN,
    EVAL_FILE,
    JF_MEAN,
    PER_SEQUENCE_TABLE,
)
from ..core.per_sequence import (
    COLUMNS,
    global_jf,
    records_from_eval,
    records_from_table,
)
from .artifacts import FetchJson

log = logging.getLogger(__name__)

#: The run metric each checkpoint's records must add up to.
_METRIC = {"final": JF_MEAN, "best_val": BEST_VAL_JF_MEAN}
#: How far the records' J&F may be from the run's metric (float round-off only).
TOLERANCE = 1e-6

FRAME_COLUMNS: tuple[str, ...] = ("run_id", *COLUMNS)


def _metric(run: pd.Series, name: str) -> float | None:
    value = run.get(name)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _eval_records(fetch: FetchJson, run_id: str, name: str, checkpoint: str) -> list[dict]:
    """One eval file's records; a malformed file is warned about and contributes none."""
    evaluation = fetch(run_id, name)
    if not evaluation:
        return []
    try:
        return records_from_eval(evaluation, checkpoint)
    except ValueError as error:
        log.warning("run %s: %s: %s", run_id, name, error)
        return []


def _from_files(run: pd.Series, fetch: FetchJson, run_id: str) -> list[dict]:
    """Records from the run's eval files (runs logged before the per-sequence table)."""
    records = _eval_records(fetch, run_id, EVAL_FILE, "final")
    best = _metric(run, _METRIC["best_val"])
    if best is None:
        return records
    if best == _metric(run, _METRIC["final"]):  # the best epoch was the last: the same weights
        return records + [{**r, "checkpoint": "best_val"} for r in records]
    return records + _eval_records(fetch, run_id, BEST_VAL_EVAL_FILE, "best_val")


def _consistent(run: pd.Series, run_id: str, records: list[dict]) -> list[dict]:
    """The records of each checkpoint whose J&F matches the run's metric (where it has one)."""
    kept: list[dict] = []
    for checkpoint, metric in _METRIC.items():
        mine = [r for r in records if r["checkpoint"] == checkpoint]
        if not mine:
            continue
        reported = _metric(run, metric)
        if reported is not None and abs(global_jf(mine) - reported) > TOLERANCE:
            log.warning(
                "run %s: per-sequence %s J&F %.6f differs from its %s %.6f; not used",
                run_id, checkpoint, global_jf(mine), metric, reported,
            )  # fmt: skip
            continue
        kept += mine
    return kept


def per_sequence_frame(runs: pd.DataFrame, fetch: FetchJson) -> pd.DataFrame:
    """``run_id`` + :data:`~d2bench.core.per_sequence.COLUMNS` of every finished run with them."""
    rows: list[dict[str, Any]] = []
    if "status" not in runs.columns or "run_id" not in runs.columns:
        return pd.DataFrame(columns=list(FRAME_COLUMNS))
    for _, run in runs[runs["status"] == "FINISHED"].iterrows():
        run_id = str(run["run_id"])
        if all(_metric(run, metric) is None for metric in _METRIC.values()):
            continue  # J&F not measured
        table = fetch(run_id, PER_SEQUENCE_TABLE)
        records: list[dict] = []
        if isinstance(table, Mapping):
            try:
                records = records_from_table(table)
            except ValueError as error:
                log.warning("run %s: %s: %s", run_id, PER_SEQUENCE_TABLE, error)
        if not records:
            records = _from_files(run, fetch, run_id)
        rows += [{"run_id": run_id, **r} for r in _consistent(run, run_id, records)]
    return pd.DataFrame(rows, columns=list(FRAME_COLUMNS))
