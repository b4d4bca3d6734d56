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

from ..core.contract import MEM_ALLOC_GB, PEAK_RSS_GB

#: Table columns (``MetricColumn.name``) a measurement fills.
MEASURED_COLUMNS: tuple[str, ...] = ("fps", "mem")
#: A host whose 1-minute load average, less the measuring process itself, reached this share of
#: its cores while measuring had other work beside the measurement.
BUSY_LOAD_SHARE = 0.5


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
    #: Why its FPS cannot be compared with a GPU measurement taken alone (empty: nothing seen).
    not_comparable: tuple[str, ...] = ()

    @property
    def on_cpu(self) -> bool:
        return self.device.split(":")[0] == "cpu"

    @property
    def comparable(self) -> bool:
        return not self.not_comparable

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
        text = (
            f"FPS and Mem: measured by `d2bench measure` on {self.device} ({self.device_name}), "
            f"every row on this one device, serially, rows interleaved, {self.rounds} round(s): "
            "mean ± sample std over rounds (n = rounds); one finished cell per row (FPS and "
            "memory do not depend on the seed); measurement run "
            f"{self.run_id} of {self.finished_utc}."
        )
        if self.not_comparable:
            text += (
                " Not comparable with GPU figures taken alone (the paper's included): "
                + "; ".join(self.not_comparable)
                + "."
            )
        return text


def _busy_reasons(beside: Any) -> list[str]:
    """What the record's ``beside`` (host activity before and after measuring) says ran beside
    the measurement: the study's running cells, a loaded host."""
    if not isinstance(beside, Mapping):
        return []
    reasons = []
    snapshots = [snap for snap in beside.values() if isinstance(snap, Mapping)]
    running = max((int(snap.get("running_cells") or 0) for snap in snapshots), default=0)
    if running:
        reasons.append(f"{running} cell run(s) of the study marked running in MLflow meanwhile")
    for when in ("after", "before"):  # "after": the 1-minute average covers the measurement
        snap = beside.get(when)
        if not isinstance(snap, Mapping):
            continue
        load, cores = snap.get("load_average"), snap.get("cpu_count")
        if isinstance(load, list) and load and isinstance(cores, int) and cores > 0:
            others = float(load[0]) - 1.0  # the measuring process itself keeps one core busy
            if others >= BUSY_LOAD_SHARE * cores:
                reasons.append(
                    f"other work on the host (1-minute load average {float(load[0]):.1f} on "
                    f"{cores} cores {when} measuring)"
                )
                break
    return reasons


def comparability(device: str, beside: Any) -> tuple[str, ...]:
    """Why a measurement on ``device`` with host activity ``beside`` is not comparable."""
    reasons = []
    if device.split(":")[0] == "cpu":
        reasons.append("measured on a CPU")
    return tuple(reasons + _busy_reasons(beside))


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
    device = str(record.get("device", "?"))
    return StudyMeasurement(
        run_id=str(record.get("run_id", "")),
        device=device,
        device_name=str(record.get("device_name") or "?"),
        rounds=int(record.get("rounds", 0)),
        finished_utc=str(record.get("finished_utc", "")),
        rows=tuple(rows),
        not_comparable=comparability(device, record.get("beside")),
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


@dataclass(frozen=True)
class FpsOrigin:
    """Where the FPS of the J&F–FPS figure come from, and why they do not compare (if so)."""

    description: str
    not_comparable: tuple[str, ...] = ()

    @property
    def comparable(self) -> bool:
        return not self.not_comparable


#: Why the cells' own (in-run) FPS never compare across rows.
IN_RUN_REASON = (
    "the cells' own in-run figures, each taken on whatever device the cell got, possibly beside "
    "other cells"
)


def ran_on_cpu(runs: pd.DataFrame) -> bool:
    """Whether the runs' memory figures are CPU ones (peak RSS, no GPU memory)."""
    gpu = MEM_ALLOC_GB in runs and runs[MEM_ALLOC_GB].notna().any()
    return not gpu and PEAK_RSS_GB in runs and bool(runs[PEAK_RSS_GB].notna().any())


def fps_origin(runs: pd.DataFrame, measurement: StudyMeasurement | None) -> FpsOrigin:
    """The measurement's FPS (comparable unless taken on a CPU or beside other work), else the
    cells' in-run FPS (never comparable)."""
    if measurement is not None:
        return FpsOrigin(
            f"d2bench measure on {measurement.device} ({measurement.device_name}), "
            f"mean over {measurement.rounds} round(s)",
            measurement.not_comparable,
        )
    reasons = [IN_RUN_REASON] + (["measured on a CPU"] if ran_on_cpu(runs) else [])
    return FpsOrigin("the cells' in-run figures", tuple(reasons))
