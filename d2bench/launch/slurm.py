"""The SLURM backend: submitit job arrays, requeued on preemption and time-out.

Each cell is one array task running :func:`execute_cell`. How a running cell stops:

- SLURM's warning signal (SIGUSR2, ``signal_delay_s`` before the time limit, or at a
  preemption): the cell's own handler replaces submitit's while it trains, so the training loop
  finishes its step, writes a mid-epoch checkpoint and commits its curve; the run stays RUNNING.
  Only then does :class:`CellJob` hand over to submitit's handler for that signal, which does
  what it always does: dump ``checkpoint()`` (the same call) for the requeued job, ``scontrol
  requeue`` and exit. The requeued job continues the same MLflow run from that checkpoint.
  Submitit counts time-outs and refuses past the profile's ``max_num_timeout``; the run is then
  closed as KILLED with submitit's reason. Outside training (loading, inference) submitit's
  handler acts at once: the requeued job redoes that stage.
- ``scancel`` (SIGTERM, SIGKILL ``KillWait`` seconds later): a clean stop at the next step,
  checkpointed, recorded as KILLED with the reason; not requeued. SIGTERM also comes when SLURM
  requeues the job itself (``scontrol requeue``, preemption in requeue mode); the job's restart
  count, read from ``scontrol`` at the start and at the stop, tells the two apart: a requeued
  cell leaves its run RUNNING and exits without a result, like a warned one.
- Deaths the cell cannot see (OOM kill, a node failure, ``scancel`` before training): the run
  stays RUNNING with its job gone; :mod:`d2bench.launch.job_end` finds out why for whoever
  notices (this driver when attached, ``d2bench status`` or the next ``d2bench run``).

With ``detach`` the driver returns after submission; ``d2bench status`` reattaches later.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .base import LaunchContext, OnOutcome
from .profiles import SlurmProfile
from .task import PREEMPTED, REQUEUED, CellTask, Outcome

#: The signal submitit asks SLURM for (``--signal=USR2@delay``) and handles in the job.
WARNING_SIGNAL = signal.SIGUSR2

try:  # submitit is a dependency, but keep `import d2bench.launch` working without it
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # pragma: no cover
    _Checkpointable = object  # type: ignore[assignment,misc]


class CellJob(_Checkpointable):  # type: ignore[misc,valid-type]
    """The callable submitted to SLURM; ``checkpoint()`` (inherited) resubmits the same task."""

    def __call__(self, task_data: dict[str, Any]) -> str:
        import submitit

        from .task import execute_cell

        task = CellTask.from_dict(task_data)
        # submitit installed its checkpoint-and-requeue handler before calling us; the cell's
        # own handler stands in for it while training and puts it back afterwards.
        requeue = signal.getsignal(WARNING_SIGNAL)
        job_id = submitit.JobEnvironment().job_id
        slurm_job = os.environ.get("SLURM_JOB_ID", "")
        restarts = job_restarts(slurm_job)

        def being_requeued() -> bool:
            now = job_restarts(slurm_job)
            return restarts is not None and now is not None and now > restarts

        outcome = execute_cell(
            task,
            handle_signals=True,
            job_id=job_id,
            requeue_on_warning=callable(requeue),
            being_requeued=being_requeued,
        )
        if outcome == PREEMPTED and callable(requeue):
            requeue_through_submitit(task, requeue)
        if outcome == REQUEUED:
            sys.exit(-1)  # as submitit does: no result, so the job counts as not done
        return outcome


def job_restarts(slurm_job_id: str) -> int | None:
    """How many times SLURM has requeued the job so far (``Restarts`` of ``scontrol show job``);
    None where that cannot be read."""
    if not slurm_job_id:
        return None
    try:
        done = subprocess.run(
            ["scontrol", "show", "job", slurm_job_id], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"\bRestarts=(\d+)", done.stdout)
    return int(found.group(1)) if done.returncode == 0 and found else None


def requeue_through_submitit(task: CellTask, handler: Callable[[int, Any], Any]) -> None:
    """Run submitit's own warning-signal handler now that the cell is checkpointed: it requeues
    the job and exits. If it refuses (too many time-outs), close the run as KILLED, saying why."""
    try:
        handler(WARNING_SIGNAL, None)
    except Exception as refused:  # submitit's UncompletedJobError
        from ..tracking import Tracker

        reason = f"SLURM warning signal, not requeued: {refused}"
        Tracker(task.tracking_uri).cell_logger(task.run_id).interrupted(reason)
        raise


def job_folder(work_dir: Path) -> Path:
    return work_dir / "slurm"


def make_executor(work_dir: Path, profile: SlurmProfile, context: LaunchContext) -> Any:
    import submitit

    resources = context.resources
    executor = submitit.AutoExecutor(
        folder=job_folder(work_dir) / "%j",
        cluster="slurm",
        slurm_max_num_timeout=profile.max_num_timeout,
    )
    parameters: dict[str, Any] = {
        "name": f"d2bench-{context.study}",
        "timeout_min": profile.timeout_min or resources.time_min,
        "cpus_per_task": profile.cpus_per_task or resources.cpus,
        "mem_gb": profile.mem_gb or resources.memory_gb,
        "slurm_signal_delay_s": profile.signal_delay_s,
        "slurm_array_parallelism": min(
            profile.array_parallelism, context.max_concurrent or profile.array_parallelism
        ),
        "slurm_setup": list(profile.setup),
    }
    gpus = profile.gpus_per_node if profile.gpus_per_node is not None else resources.gpus
    if gpus:
        parameters["gpus_per_node"] = gpus
    for name in ("partition", "account", "qos", "constraint"):
        value = getattr(profile, name)
        if value:
            parameters[f"slurm_{name}"] = value
    if profile.additional:
        parameters["slurm_additional_parameters"] = dict(profile.additional)
    executor.update_parameters(**parameters)
    return executor


class SlurmBackend:
    name = "slurm"

    def __init__(
        self, profile: SlurmProfile, detach: bool = False, poll_seconds: float = 5.0
    ) -> None:
        self.profile = profile
        self.detach = detach
        self.poll_seconds = poll_seconds

    def run(
        self, tasks: Sequence[CellTask], context: LaunchContext, on_outcome: OnOutcome
    ) -> dict[str, Outcome | str]:
        from ..tracking import Tracker
        from ..tracking.tracker import TAG_JOB, TAG_JOB_LOGS

        if not tasks:
            return {}
        executor = make_executor(context.work_dir, self.profile, context)
        jobs = executor.map_array(CellJob(), [task.to_dict() for task in tasks])
        tracker = Tracker(tasks[0].tracking_uri)
        for task, job in zip(tasks, jobs, strict=True):
            tags = {TAG_JOB: job.job_id, TAG_JOB_LOGS: str(job.paths.folder)}
            tracker.set_attempt_tags(task.run_id, tags)
        if self.detach:
            for task in tasks:
                on_outcome(task, "SUBMITTED")
            return {task.key: "SUBMITTED" for task in tasks}
        return wait_for_jobs(list(zip(tasks, jobs, strict=True)), on_outcome, self.poll_seconds)


def wait_for_jobs(
    pairs: list[tuple[CellTask, Any]], on_outcome: OnOutcome, poll_seconds: float = 5.0
) -> dict[str, Outcome | str]:
    """Block until every job ends; a job that died without recording is marked FAILED."""
    outcomes: dict[str, Outcome | str] = {}
    pending = list(pairs)
    while pending:
        still = []
        for task, job in pending:
            if not job.done():
                still.append((task, job))
                continue
            outcome = _job_outcome(task, job)
            outcomes[task.key] = outcome
            on_outcome(task, outcome)
        pending = still
        if pending:
            time.sleep(poll_seconds)
    return outcomes


def _job_outcome(task: CellTask, job: Any) -> str:
    """The job's result; for a job that ended without one, what its run says (the cell may
    have recorded it, e.g. KILLED at a scancel), else why the job died (recorded into the run:
    FAILED, or KILLED where running it again is the fix)."""
    from ..tracking import Tracker

    try:
        return str(job.result())
    except Exception as error:  # the job ended without a result: killed, out of memory, ...
        tracker = Tracker(task.tracking_uri)
        status = tracker.client.get_run(tracker.current_run_id(task.run_id)).info.status
        if status != "RUNNING":
            return status
        return record_job_failure(tracker, task, job.job_id, str(error))


def record_job_failure(tracker: Any, task: CellTask, job_id: str, error: str) -> str:
    """Close a RUNNING run whose job ended without a result, with the diagnosed cause."""
    from .job_end import record_job_end

    end = record_job_end(tracker, task.run_id, job_id)
    logger = tracker.cell_logger(task.run_id)
    if end.retryable:
        logger.interrupted(end.summary)
        return "KILLED"
    logger.failed(f"{end.summary}\nsubmitit: {error}\n", Path(task.cell_dir))
    return "FAILED"
