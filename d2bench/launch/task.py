"""One attempt at one cell, as every backend runs it: the task and :func:`execute_cell`.

A :class:`CellTask` is plain data (JSON-ready), so it crosses process, Ray and SLURM boundaries
unchanged. :func:`execute_cell` is the only code that runs on a worker: it opens the cell's
MLflow run, calls the cell runner with a metrics callback, and records the outcome, so that the
three backends share everything except how they start processes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..tracking.system_metrics import TrainingSystemMetrics, sampling_interval

Outcome = Literal["FINISHED", "FAILED", "KILLED"]
#: What :func:`execute_cell` returns when the cell stopped at a checkpoint on the scheduler's
#: warning signal and the caller is to requeue it (its run is left RUNNING for the next job).
PREEMPTED = "PREEMPTED"
#: ... when it stopped because the scheduler itself is requeueing the job (``scontrol requeue``,
#: a preemption in requeue mode: SIGTERM, then the same job again); its run is left RUNNING.
REQUEUED = "REQUEUED"

#: Comma-separated row names whose cells get a broken config at run time (failure drills).
FAULT_ROWS_ENV = "D2BENCH_FAULT_ROWS"
#: What a faulted cell's ``data.train_set`` becomes: a set that no data root holds.
FAULT_TRAIN_SET = "injected-fault/no-such-imageset"


@dataclass(frozen=True)
class CellTask:
    """Everything a worker needs: the resolved config, where to write, where to report."""

    study: str
    row: str
    seed: int
    key: str
    config: dict[str, Any]
    cell_dir: str
    tracking_uri: str
    run_id: str
    backend: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellTask:
        return cls(**data)

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def read(cls, path: Path) -> CellTask:
        return cls.from_dict(json.loads(Path(path).read_text()))


def inject_faults(config: dict[str, Any], row: str) -> dict[str, Any]:
    """The config, broken on purpose when ``row`` is listed in ``D2BENCH_FAULT_ROWS``.

    A failure drill for operators and tests: the cell fails inside the real runner (its data
    set does not exist), exactly like a config mistake discovered at run time would.
    """
    rows = {name.strip() for name in os.environ.get(FAULT_ROWS_ENV, "").split(",") if name}
    if row not in rows:
        return config
    data = {**config["data"], "train_set": FAULT_TRAIN_SET}
    return {**config, "data": data}


def _system_metrics(tracker: Any, run_id: str) -> TrainingSystemMetrics | None:
    """The training-time system metrics sampler, when ``D2BENCH_SYSTEM_METRICS`` asks for it."""
    interval = sampling_interval()
    return None if interval is None else TrainingSystemMetrics(run_id, tracker.uri, interval)


def execute_cell(
    task: CellTask,
    *,
    handle_signals: bool = True,
    job_id: str | None = None,
    requeue_on_warning: bool = False,
    being_requeued: Callable[[], bool] | None = None,
) -> Outcome | Literal["PREEMPTED", "REQUEUED"]:
    """Run one attempt and record it: FINISHED, FAILED (with traceback) or KILLED (stopped).

    Exceptions from the cell are recorded, not raised, so that one bad cell never stops the
    others; only a stop request (Ctrl-C) propagates after being recorded. With
    ``requeue_on_warning`` (SLURM), a cell stopped by the scheduler's warning signal returns
    :data:`PREEMPTED` instead of KILLED: its checkpoint and curve are written, its run stays
    RUNNING, and the caller requeues it; the requeued attempt continues the same run. A stop
    for which ``being_requeued()`` says the scheduler requeues the job anyway returns
    :data:`REQUEUED`, the run left RUNNING likewise; any other stop is KILLED.
    """
    from ..core.config import CellConfig
    from ..engine.signals import CellInterrupted
    from ..tracking import Tracker

    tracker = Tracker(task.tracking_uri)
    logger = tracker.cell_logger(task.run_id)
    logger.started(job_id)
    cell_dir = Path(task.cell_dir)
    sampler = _system_metrics(tracker, logger.run_id)
    try:
        from ..runner.cell import run_cell

        config = CellConfig.model_validate(inject_faults(task.config, task.row))
        result = run_cell(
            config,
            cell_dir,
            key=task.key,
            on_metrics=logger.log_metrics,
            on_commit=logger.flush,
            handle_signals=handle_signals,
            show_progress=True,  # lines in logs (SLURM, Ray), a live bar on a terminal
            on_phase=sampler,
        )
    except KeyboardInterrupt:
        logger.interrupted("interrupted (Ctrl-C)")
        raise
    except CellInterrupted as stopped:
        if requeue_on_warning and stopped.is_warning:
            logger.preempted(f"{stopped}; requeued")
            return PREEMPTED
        if being_requeued is not None and being_requeued():
            logger.preempted(f"{stopped}; the job is being requeued by SLURM")
            return REQUEUED
        logger.interrupted(str(stopped))
        return "KILLED"
    except Exception:
        logger.failed(traceback.format_exc(), cell_dir if cell_dir.is_dir() else None)
        return "FAILED"
    finally:
        if sampler is not None:
            sampler.stop()
    logger.finished(result, cell_dir)
    return "FINISHED"
