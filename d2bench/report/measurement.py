"""Table 1's FPS and memory from the study's newest ``d2bench measure`` record.

A measurement holds, per row, one value per round (every row measured on one device, rounds
interleaved). The table shows their mean ± sample std over rounds; without a measurement it
falls back to the cells' in-run figures, labelled as not comparable. Torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

#: Table columns (``MetricColumn.name``) a measurement fills.
MEASURED_COLUMNS: tuple[str, ...] = ("fps", "mem")


@dataclass(frozen=True)
class MeasuredRow:
    """One row's rounds: FPS and memory per round, and which memory figure it is."""

    row: str
    row_keys: tuple[str, ...]
    fps: tuple[float, ...]
    memory_gb: tuple[float, ...]
    memory_source: str | None


@dataclass(frozen=True)
class StudyMeasurement:
    """The newest measurement of a study, as the tables need it."""

    run_id: str
    device: str
    device_name: str
    rounds: int
    finished_utc: str
    rows: tuple[MeasuredRow, ...]

    def for_keys(self, keys: Iterable[str]) -> MeasuredRow | None:
        """The measured row holding any of the cell ``keys``, or None (not measured)."""
        wanted = set(keys)
        return next((row for row in self.rows if wanted & set(row.row_keys)), None)

    def values(self, column: str, keys: Iterable[str]) -> list[float]:
        """The rounds' values of a measured ``column`` ("fps", "mem") for a table row."""
        row = self.for_keys(keys)
        if row is None:
            return []
        return list(row.fps if column == "fps" else row.memory_gb)

    @property
    def memory_source(self) -> str | None:
        return next((row.memory_source for row in self.rows if row.memory_source), None)

    def caption(self) -> str:
        """The sentence naming the device, the rounds and what ± means."""
        return (
            f"FPS and Mem: measured by `d2bench measure` on {self.device} ({self.device_name}), "
            f"every row on this one device, serially, rows interleaved, {self.rounds} round(s): "
            "mean ± sample std over rounds (n = rounds); one finished cell per row (FPS and "
            "memory do not depend on the seed); measurement run "
            f"{self.run_id} of {self.finished_utc}."
        )


#: The caption's sentence when no measurement exists and in-run figures are shown.
IN_RUN_CAPTION = (
    "FPS and Mem: in-run figures of each cell (taken on whatever device the cell got, possibly "
    "beside other cells): diagnostics only, not comparable across rows; `d2bench measure` "
    "gives comparable ones."
)


def _floats(values: Iterable[Any]) -> tuple[float, ...]:
    return tuple(float(v) for v in values if isinstance(v, int | float) and math.isfinite(float(v)))


def parse_measurement(record: Mapping[str, Any] | None) -> StudyMeasurement | None:
    """A :class:`StudyMeasurement` from a measurement record (``measurement.json``)."""
    if not isinstance(record, Mapping) or not isinstance(record.get("rows"), Mapping):
        return None
    rows = []
    for name, measured in record["rows"].items():
        rounds = measured.get("rounds", [])
        rows.append(
            MeasuredRow(
                row=str(name),
                row_keys=tuple(measured.get("row_keys") or [measured.get("cell_key", "")]),
                fps=_floats(r.get("fps") for r in rounds),
                memory_gb=_floats(r.get("memory_gb") for r in rounds),
                memory_source=measured.get("memory_source"),
            )
        )
    return StudyMeasurement(
        run_id=str(record.get("run_id", "")),
        device=str(record.get("device", "?")),
        device_name=str(record.get("device_name") or "?"),
        rounds=int(record.get("rounds", 0)),
        finished_utc=str(record.get("finished_utc", "")),
        rows=tuple(rows),
    )


def with_measured_fps(runs: pd.DataFrame, measurement: StudyMeasurement | None) -> pd.DataFrame:
    """The runs with ``fps`` replaced by their row's measured mean (for the J&F–FPS figure);
    unchanged without a measurement, NaN for rows it did not measure."""
    if measurement is None or "cell_key" not in runs.columns:
        return runs
    means = {
        key: sum(row.fps) / len(row.fps)
        for row in measurement.rows
        if row.fps
        for key in row.row_keys
    }
    return runs.assign(fps=[means.get(str(key), math.nan) for key in runs["cell_key"]])
