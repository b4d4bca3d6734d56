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

#: Reads one JSON artifact of a run: (run_id, file name) -> parsed mapping, or None.
FetchJson = Callable[[str, str], Mapping[str, Any] | None]

#: ``oob_*``: pooled over all sampling locations; ``oob_layer_mean_*``: the mean over layers.
OOB_COLUMNS: tuple[str, ...] = tuple(
    f"{prefix}{kind}{suffix}"
    for prefix in ("oob_", "oob_layer_mean_")
    for kind in ("full", "partial")
    for suffix in ("", "_t", "_y", "_x")
)
MEMORY_COLUMNS: tuple[str, ...] = ("mem_alloc_gb", "mem_reserved_gb", "peak_rss_gb")
#: Memory keys of the FPS/memory protocol's record -> the run's metric column.
_MEMORY_KEYS = {
    "max_allocated_gb": "mem_alloc_gb",
    "mem_alloc_gb": "mem_alloc_gb",
    "max_reserved_gb": "mem_reserved_gb",
    "mem_reserved_gb": "mem_reserved_gb",
    "peak_rss_gb": "peak_rss_gb",
}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _reading_shares(reading: Any, prefix: str) -> dict[str, float]:
    """``{prefix}{full,partial}[_{t,y,x}]`` from one reading of an ``oob.json``."""
    if not isinstance(reading, Mapping):
        return {}
    out: dict[str, float] = {}
    per_axis = reading.get("per_axis") if isinstance(reading.get("per_axis"), Mapping) else {}
    for kind, word in (("full", "fully"), ("partial", "partly")):
        value = _number(reading.get(f"{word}_outside_share"))
        if value is not None:
            out[f"{prefix}{kind}"] = value
        for axis in ("t", "y", "x"):
            shares = per_axis.get(axis)
            if not isinstance(shares, Mapping):
                continue
            value = _number(shares.get(f"{word}_outside_share"))
            if value is not None:
                out[f"{prefix}{kind}_{axis}"] = value
    return out


def oob_shares(summary: Mapping[str, Any]) -> dict[str, float]:
    """``oob_*`` columns from an ``oob.json``: its ``total`` (pooled) and ``total.layer_mean``
    (the mean over layers; absent from files written before it existed)."""
    total = summary.get("total")
    if not isinstance(total, Mapping):
        return {}
    return {
        **_reading_shares(total, "oob_"),
        **_reading_shares(total.get("layer_mean"), "oob_layer_mean_"),
    }


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
            summary = fetch_json(run_id, "oob.json")
            for column, value in (oob_shares(summary) if summary else {}).items():
                out.at[index, column] = value
        if _all_missing(run, MEMORY_COLUMNS):
            result = fetch_json(run_id, "result.json")
            for column, value in (memory_figures(result) if result else {}).items():
                out.at[index, column] = value
    return out
