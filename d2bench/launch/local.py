"""The local backend: one cell at a time, each in its own Python process.

A fresh process per cell keeps cells independent (no state leaks between variants, a crash
takes one cell down) and lets Ctrl-C stop the current cell cleanly: the worker checkpoints and
records KILLED, and the driver schedules nothing more.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from .base import LaunchContext, OnOutcome
from .task import CellTask, Outcome
from .worker import EXIT_CODES

_OUTCOME_OF_EXIT = {code: outcome for outcome, code in EXIT_CODES.items()}


class LocalBackend:
    name = "local"

    def __init__(self, stop_grace_seconds: float = 120.0) -> None:
        self.stop_grace_seconds = stop_grace_seconds

    def run(
        self, tasks: Sequence[CellTask], context: LaunchContext, on_outcome: OnOutcome
    ) -> dict[str, Outcome | str]:
        outcomes: dict[str, Outcome | str] = {}
        for task in tasks:
            task_file = task.write(Path(task.cell_dir) / "task.json")
            env = {**os.environ, "D2BENCH_DRIVER_PID": str(os.getpid())}
            command = [sys.executable, "-m", "d2bench.launch.worker", str(task_file)]
            process = subprocess.Popen(command, env=env)
            try:
                code = process.wait()
            except KeyboardInterrupt:
                self._stop(process)
                on_outcome(task, "KILLED")
                raise
            outcome = _OUTCOME_OF_EXIT.get(code)
            if outcome is None:
                outcome = "FAILED"
                _record_crash(task, code)
            outcomes[task.key] = outcome
            on_outcome(task, outcome)
        return outcomes

    def _stop(self, process: subprocess.Popen) -> None:
        """Ask the worker to checkpoint and stop; kill it if it does not in time."""
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=self.stop_grace_seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _record_crash(task: CellTask, code: int) -> None:
    """A worker that died without recording anything (segfault, OOM kill): mark it FAILED."""
    from ..tracking import Tracker

    reason = f"worker process died with exit code {code}"
    if code < 0:
        reason = f"worker process killed by {signal.Signals(-code).name}"
    tracker = Tracker(task.tracking_uri)
    run = tracker.client.get_run(tracker.current_run_id(task.run_id))
    if run.info.status == "RUNNING":
        tracker.cell_logger(task.run_id).failed(reason + "\n", Path(task.cell_dir))
