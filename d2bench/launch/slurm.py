"""The SLURM backend: submitit job arrays, requeued on preemption and time-out.

Each cell is one array task running :func:`execute_cell`. The job object is a submitit
``Checkpointable``: on SLURM's warning signal (time limit, preemption) submitit resubmits the
same call, and because the cell runner resumes from the newest checkpoint in the cell folder,
the requeued job continues where it stopped. ``scontrol requeue`` restarts the same call too.
With ``detach`` the driver returns after submission; ``d2bench status`` reattaches later.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .base import LaunchContext, OnOutcome
from .profiles import SlurmProfile
from .task import CellTask, Outcome

try:  # submitit is a dependency, but keep `import d2bench.launch` working without it
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # pragma: no cover
    _Checkpointable = object  # type: ignore[assignment,misc]


class CellJob(_Checkpointable):  # type: ignore[misc,valid-type]
    """The callable submitted to SLURM; ``checkpoint()`` (inherited) resubmits the same task."""

    def __call__(self, task_data: dict[str, Any]) -> str:
        import submitit

        from .task import CellTask, execute_cell

        job_id = submitit.JobEnvironment().job_id
        return execute_cell(CellTask.from_dict(task_data), handle_signals=False, job_id=job_id)


def job_folder(work_dir: Path) -> Path:
    return work_dir / "slurm"


def make_executor(work_dir: Path, profile: SlurmProfile, context: LaunchContext) -> Any:
    import submitit

    resources = context.resources
    executor = submitit.AutoExecutor(folder=job_folder(work_dir) / "%j", cluster="slurm")
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
        from ..tracking.tracker import TAG_JOB

        if not tasks:
            return {}
        executor = make_executor(context.work_dir, self.profile, context)
        jobs = executor.map_array(CellJob(), [task.to_dict() for task in tasks])
        tracker = Tracker(tasks[0].tracking_uri)
        for task, job in zip(tasks, jobs, strict=True):
            tracker.client.set_tag(task.run_id, TAG_JOB, job.job_id)
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
    try:
        outcome = job.result()
    except Exception as error:  # the job itself failed: killed, out of memory, lost node
        record_job_failure(task, f"SLURM job {job.job_id} failed: {error}\n")
        return "FAILED"
    return str(outcome)


def record_job_failure(task: CellTask, text: str) -> None:
    from ..tracking import Tracker

    tracker = Tracker(task.tracking_uri)
    if tracker.client.get_run(task.run_id).info.status == "RUNNING":
        tracker.cell_logger(task.run_id).failed(text, Path(task.cell_dir))
