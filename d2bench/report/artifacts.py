"""Fill final metrics a run did not log from the JSON files it stored (``oob.json``,
``result.json``), so a report still shows what was measured when only the flat metric is absent.

Used only for finished runs whose columns are all empty; runs that logged the metrics are never
read twice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from ..core.contract import (
    MEMORY_KEYS,
    MEMORY_KEYS_BY_SPEED_KEY,
    OOB_FILE,
    OOB_KEYS,
    RESULT_FILE,
    oob_metrics,
)

#: Reads one JSON artifact of a run: (run_id, file name) -> parsed mapping, or None.
FetchJson = Callable[[str, str], Mapping[str, Any] | None]

#: The OOB and memory columns a run's files can fill.
OOB_COLUMNS: tuple[str, ...] = OOB_KEYS
MEMORY_COLUMNS: tuple[str, ...] = MEMORY_KEYS
#: Memory keys of the FPS/memory protocol's record (or already the run's) -> the run's column.
_MEMORY_KEYS = {**MEMORY_KEYS_BY_SPEED_KEY, **{key: key for key in MEMORY_KEYS}}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def memory_figures(result: Mapping[str, Any]) -> dict[str, float]:
    """Memory columns from a ``result.json`` (``speed.memory`` of the FPS/memory protocol)."""
    speed = result.get("speed")
    if not isinstance(speed, Mapping):
        return {}
    memory = speed.get("memory") if isinstance(speed.get("memory"), Mapping) else {}
    out: dict[str, float] = {}
    for source in (speed, memory):
        for key, column in _MEMORY_KEYS.items():
            value = _number(source.get(key))
            if value is not None:
                out.setdefault(column, value)
    return out


def _all_missing(run: pd.Series, columns: tuple[str, ...]) -> bool:
    return all(pd.isna(run.get(column, math.nan)) for column in columns)


def fill_missing_metrics(runs: pd.DataFrame, fetch_json: FetchJson) -> pd.DataFrame:
    """A copy of ``runs`` with empty OOB and memory columns of finished runs filled from files."""
    out = runs.copy()
    for column in (*OOB_COLUMNS, *MEMORY_COLUMNS):
        if column not in out.columns:
            out[column] = math.nan
    if "status" not in out.columns:
        return out
    for index, run in out[out["status"] == "FINISHED"].iterrows():
        run_id = str(run["run_id"])
        if _all_missing(run, OOB_COLUMNS):
            summary = fetch_json(run_id, OOB_FILE)
            for column, value in (oob_metrics(summary) if summary else {}).items():
                out.at[index, column] = value
        if _all_missing(run, MEMORY_COLUMNS):
            result = fetch_json(run_id, RESULT_FILE)
            for column, value in (memory_figures(result) if result else {}).items():
                out.at[index, column] = value
    return out
