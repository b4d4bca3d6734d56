"""What every backend provides: run a list of cell tasks and say how each attempt ended."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from ..study.spec import Resources
from .task import CellTask, Outcome

#: Called as each cell ends (for progress lines); outcome "SUBMITTED" for detached jobs.
OnOutcome = Callable[[CellTask, str], None]


@dataclass(frozen=True)
class LaunchContext:
    """What a backend needs besides the tasks."""

    study: str
    resources: Resources
    #: Folder for backend state (Ray results, submitit logs); shared with workers.
    work_dir: Path
    max_concurrent: int | None = None


class Backend(Protocol):
    name: str

    def run(
        self, tasks: Sequence[CellTask], context: LaunchContext, on_outcome: OnOutcome
    ) -> dict[str, Outcome | str]:
        """Run the tasks; return ``{cell key: outcome}`` ("SUBMITTED" when detached)."""
        ...


@runtime_checkable
class CheckedBackend(Protocol):
    """A backend that can tell, before anything is written, whether it can run the cells."""

    def preflight(self, resources: Resources, runs_dir: Path, tracking_uri: str) -> list[str]:
        """Raise :class:`~d2bench.launch.preflight.PreflightError`, or return warnings to show."""
        ...
