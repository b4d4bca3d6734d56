"""The measurement phase's contract: what is measured for a row, and from which weights.

Torch-free (the foundation floor): the planner (``launch``), the measuring process (``engine``)
and the report agree through these plain, JSON-ready types. :func:`evaluated_checkpoint` is the
one place that decides which weights of a finished cell stand for it.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .contract import CHECKPOINT_DIR, RESULT_FILE

#: The trainer's regular checkpoints (``engine.checkpoint.checkpoint_name``), oldest to newest
#: by (epoch, batches done).
_REGULAR_CHECKPOINT = re.compile(r"^ckpt-e(\d{4})-b(\d{6})\.pt$")
#: Where the measurement records go under the runs folder.
MEASUREMENTS_DIR = "measurements"


@dataclass(frozen=True)
class MeasureTarget:
    """One row's representative: the cell measured for it and the weights it loads."""

    row: str
    seed: int
    key: str
    #: Every cell key of the row (the report matches its table rows by any of them).
    row_keys: tuple[str, ...]
    variant: str
    activation: str | None
    cell_dir: str
    #: The checkpoint the cell evaluated; None when the cell never trained (``epochs: 0``):
    #: then its seeded initial model is what it evaluated.
    checkpoint: str | None
    config: dict[str, Any]


@dataclass(frozen=True)
class MeasureTask:
    """Everything the measuring process needs; written as JSON next to its record."""

    study: str
    device: str
    rounds: int
    targets: tuple[MeasureTarget, ...]
    #: Rows without a finished cell (named in the record, not measured).
    unmeasured: tuple[str, ...]
    tracking_uri: str
    parent_run_id: str
    #: The JSON record the measuring process writes (under the runs folder).
    record_path: str
    backend: str = "local"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MeasureTask:
        targets = tuple(
            MeasureTarget(**{**t, "row_keys": tuple(t["row_keys"])}) for t in data["targets"]
        )
        return cls(**{**data, "targets": targets, "unmeasured": tuple(data["unmeasured"])})

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def read(cls, path: Path) -> MeasureTask:
        return cls.from_dict(json.loads(Path(path).read_text()))


def read_finished_result(cell_dir: Path, key: str) -> dict[str, Any] | None:
    """The cell's ``result.json`` when it finished as this cell (same key), else None."""
    path = cell_dir / RESULT_FILE
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(result, dict) or result.get("key") not in (key, None):
        return None
    return result


def evaluated_checkpoint(cell_dir: Path, result: dict[str, Any]) -> Path | None:
    """The checkpoint whose weights the cell's final evaluation used: the one place that decides.

    In order: the file the result names as evaluated (``result["checkpoint"]``, relative to
    the cell folder), else the newest regular checkpoint ``ckpt-e*-b*.pt`` (the end of the last
    epoch: the final weights, which the cell's plain J&F, OOB shares and in-run FPS come from;
    a kept best-validation file is not a regular checkpoint). The values of the weights do not
    change FPS or memory; loading the evaluated ones keeps the measured network exactly the
    cell's. None when the cell has no checkpoint (it never trained: its seeded initial model).
    """
    named = result.get("checkpoint")
    if isinstance(named, str) and named:
        path = cell_dir / named
        if path.is_file():
            return path
    folder = cell_dir / CHECKPOINT_DIR
    if not folder.is_dir():
        return None
    found = [
        (tuple(int(group) for group in match.groups()), path)
        for path in folder.iterdir()
        if (match := _REGULAR_CHECKPOINT.match(path.name))
    ]
    return max(found)[1] if found else None


def record_path(runs_dir: Path, study: str) -> Path:
    """``<runs>/measurements/<study>-<UTC time>.json``: one file per invocation, never reused."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    folder = runs_dir.resolve() / MEASUREMENTS_DIR
    path = folder / f"{study}-{stamp}.json"
    index = 1
    while path.exists() or path.with_suffix(".task.json").exists():
        index += 1
        path = folder / f"{study}-{stamp}-{index}.json"
    return path
