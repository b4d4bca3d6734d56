"""The measuring process: run a :class:`~d2bench.core.measurement.MeasureTask` and record it.

``python -m d2bench.launch.measure_job TASK.json`` is what every backend ends up running (in a
subprocess, a SLURM job or a Ray task): measure every row on the task's device, write the
record atomically to the task's JSON file under the runs folder, and log it as a measurement run
in MLflow. It reads the cells' files and writes none of them. Exit codes: 0 recorded, 1 failed
(traceback in the run), 2 the device does not exist where the job runs.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.atomic_io import atomic_write_text
from ..core.measurement import MeasureTask

EXIT_DEVICE = 2


def _running_cells(tracker: Any, study: str) -> int | None:
    """How many of the study's cell runs MLflow marks as running (None: not readable)."""
    try:
        runs = tracker.study_runs(study)
    except Exception:  # a store that cannot answer: record "unknown" rather than fail
        return None
    return int((runs["status"] == "RUNNING").sum()) if "status" in runs else 0


def _load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):  # no load average on this platform
        return None


def host_activity(tracker: Any, study: str) -> dict[str, Any]:
    """What ran beside the measurement, as far as it can be seen from here: the host's load
    averages (1, 5, 15 min) and cores, and the study's cell runs marked running."""
    return {
        "load_average": _load_average(),
        "cpu_count": os.cpu_count(),
        "running_cells": _running_cells(tracker, study),
    }


def execute_measurement(task: MeasureTask, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure, then write the record file and the measurement run; returns the record.

    The device is checked before the run is created (a bad one leaves no trace in MLflow).
    The record's ``beside`` holds :func:`host_activity` before and after measuring, so the
    report can tell a measurement taken beside other work.
    """
    from ..core.provenance import git_revision
    from ..runner.measure_rows import measure_rows, resolve_measure_device
    from ..tracking import Tracker
    from ..tracking.measurements import (
        create_measurement_run,
        fail_measurement_run,
        finish_measurement_run,
    )

    resolve_measure_device(task.device)
    tracker = Tracker(task.tracking_uri)
    run_id = create_measurement_run(
        tracker,
        task.study,
        task.parent_run_id,
        device=task.device,
        rounds=task.rounds,
        record_path=task.record_path,
        revision=git_revision(),
    )
    try:
        before = host_activity(tracker, task.study)
        record = measure_rows(task, echo)
        beside = {"before": before, "after": host_activity(tracker, task.study)}
        record = {**record, "run_id": run_id, "backend": task.backend, "beside": beside}
        atomic_write_text(Path(task.record_path), json.dumps(record, indent=1, default=str))
        finish_measurement_run(tracker, run_id, record)
    except BaseException:
        fail_measurement_run(tracker, run_id, traceback.format_exc())
        raise
    return record


def main(argv: list[str] | None = None) -> int:
    from ..runner.measure_rows import MeasureDeviceError

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m d2bench.launch.measure_job TASK.json", file=sys.stderr)
        return 2
    from .worker import die_with_parent

    die_with_parent()  # the command that started us is gone: nobody waits for the record
    task = MeasureTask.read(Path(argv[0]))
    try:
        execute_measurement(task, lambda line: print(line, flush=True))
    except MeasureDeviceError as error:
        print(f"d2bench measure: error: {error}", file=sys.stderr)
        return EXIT_DEVICE
    except KeyboardInterrupt:
        return 130
    except Exception:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
