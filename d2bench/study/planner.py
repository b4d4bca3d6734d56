"""The planner: which cells of a study are done, running, failed or missing.

It reads the tracker's records of the study (latest attempt per cell key) and decides. A run
that says RUNNING but whose driver or job is gone is *stale*: it counts as missing, so a
study whose driver was killed is finished by running it again, without duplicates.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from .cells import Cell


class CellState(enum.StrEnum):
    DONE = "done"
    RUNNING = "running"
    FAILED = "failed"
    MISSING = "missing"
    STALE = "stale"


@dataclass(frozen=True)
class CellRecord:
    """What the tracker holds about the latest attempt of one cell."""

    run_id: str
    key: str
    status: str  # MLflow run status: FINISHED, FAILED, RUNNING, KILLED, SCHEDULED
    start_time: int = 0
    tags: tuple[tuple[str, str], ...] = ()

    def tag(self, name: str, default: str = "") -> str:
        return dict(self.tags).get(name, default)


@dataclass(frozen=True)
class PlannedCell:
    cell: Cell
    state: CellState
    record: CellRecord | None = None

    @property
    def run_id(self) -> str | None:
        return self.record.run_id if self.record else None


@dataclass(frozen=True)
class Plan:
    cells: tuple[PlannedCell, ...]

    def counts(self) -> Counter[str]:
        return Counter(item.state.value for item in self.cells)

    def with_state(self, *states: CellState) -> list[PlannedCell]:
        return [item for item in self.cells if item.state in states]

    def to_schedule(
        self, retry_failed: bool = False, force_rows: Iterable[str] = ()
    ) -> list[PlannedCell]:
        """Missing and stale cells; failed ones with ``retry_failed``; all of ``force_rows``."""
        forced = set(force_rows)
        wanted = {CellState.MISSING, CellState.STALE}
        if retry_failed:
            wanted.add(CellState.FAILED)
        return [
            item
            for item in self.cells
            if item.state in wanted or (item.cell.row in forced and item.state != CellState.RUNNING)
        ]


def latest_records(records: Iterable[CellRecord]) -> dict[str, CellRecord]:
    """The newest attempt per key, except that a FINISHED attempt always wins (results stay)."""
    chosen: dict[str, CellRecord] = {}
    for record in records:
        current = chosen.get(record.key)
        if current is None or _preferred(record, current):
            chosen[record.key] = record
    return chosen


def _preferred(candidate: CellRecord, current: CellRecord) -> bool:
    candidate_done = candidate.status == "FINISHED"
    current_done = current.status == "FINISHED"
    if candidate_done != current_done:
        return candidate_done
    return candidate.start_time > current.start_time


def make_plan(
    cells: Sequence[Cell],
    records: Iterable[CellRecord],
    is_alive: Callable[[CellRecord], bool] = lambda record: True,
) -> Plan:
    """Classify every cell; ``is_alive`` says whether a RUNNING record's job still exists."""
    latest = latest_records(records)
    planned = []
    for cell in cells:
        record = latest.get(cell.key)
        planned.append(PlannedCell(cell, _state(record, is_alive), record))
    return Plan(tuple(planned))


def _state(record: CellRecord | None, is_alive: Callable[[CellRecord], bool]) -> CellState:
    if record is None:
        return CellState.MISSING
    if record.status == "FINISHED":
        return CellState.DONE
    if record.status == "FAILED":
        return CellState.FAILED
    if record.status in ("RUNNING", "SCHEDULED"):
        return CellState.RUNNING if is_alive(record) else CellState.STALE
    return CellState.MISSING  # KILLED: stopped on purpose, to be run again
