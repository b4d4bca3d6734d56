"""Where the measuring process runs: a local subprocess, one SLURM job, or one Ray task.

Each runs :mod:`d2bench.launch.measure_job` once, for every row, on one device; on SLURM and
Ray the job reserves a whole GPU (when the device is a GPU), so nothing else is scheduled beside
it while it times. Torch-free; the driver only waits for the outcome.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.measurement import MeasureTask
from ..study.spec import Resources

BACKENDS: tuple[str, ...] = ("local", "slurm", "ray")


@dataclass(frozen=True)
class MeasureOutcome:
    """How the measurement ended: ``ok``, or why not (``device`` error text, a failure)."""

    ok: bool
    device_error: str | None = None
    detail: str = ""


def job_resources(study_resources: Resources, device: str) -> Resources:
    """The study's CPUs, memory and time, with exactly one whole GPU when measuring on one."""
    wants_gpu = device.startswith("cuda") or (device == "auto" and study_resources.gpus > 0)
    return study_resources.model_copy(update={"gpus": 1 if wants_gpu else 0})


def run_local(task_file: Path) -> MeasureOutcome:
    """The measuring process as a child of this one (its output goes to this terminal)."""
    from .measure_job import EXIT_DEVICE

    command = [sys.executable, "-m", "d2bench.launch.measure_job", str(task_file)]
    process = subprocess.Popen(command)
    try:
        code = process.wait()
    except KeyboardInterrupt:
        process.terminate()
        process.wait()
        raise
    if code == EXIT_DEVICE:
        return MeasureOutcome(False, device_error="", detail="see the message above")
    return MeasureOutcome(code == 0, detail=f"exit code {code}" if code else "")


class MeasureJob:
    """The callable a SLURM job or a Ray task runs: the measurement, its outcome as a dict."""

    def __call__(self, task_data: dict[str, Any]) -> dict[str, Any]:
        from ..runner.measure_rows import MeasureDeviceError
        from .measure_job import execute_measurement

        task = MeasureTask.from_dict(task_data)
        try:
            execute_measurement(task, lambda line: print(line, flush=True))
        except MeasureDeviceError as error:
            return {"device_error": str(error)}
        return {"record_path": task.record_path}


def _outcome(result: dict[str, Any]) -> MeasureOutcome:
    if "device_error" in result:
        return MeasureOutcome(False, device_error=result["device_error"])
    return MeasureOutcome(True)


def run_slurm(
    task: MeasureTask, resources: Resources, profile_name: str, work_dir: Path
) -> MeasureOutcome:
    """One SLURM job (the study's cluster profile) holding one whole GPU; waits for it."""
    from .base import LaunchContext
    from .profiles import load_profile
    from .slurm import make_executor

    profile = load_profile(profile_name)
    context = LaunchContext(task.study, resources, work_dir)
    executor = make_executor(work_dir, profile, context)
    executor.update_parameters(name=f"d2bench-measure-{task.study}")
    job = executor.submit(MeasureJob(), task.to_dict())
    print(f"submitted SLURM job {job.job_id} (logs: {job.paths.folder})", flush=True)
    try:
        result = job.result()
    except Exception as error:  # the job died (killed, out of memory, ...) or raised
        first = (str(error).strip().splitlines() or [type(error).__name__])[-1]
        return MeasureOutcome(False, detail=f"SLURM job {job.job_id}: {first[:500]}")
    return _outcome(result)


def run_ray(task: MeasureTask, resources: Resources, address: str | None) -> MeasureOutcome:
    """One Ray task reserving the job's CPUs and (for a GPU device) one whole GPU."""
    from .ray_backend import init_ray, quiet_ray_environment

    quiet_ray_environment()
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        init_ray(address)
    try:
        available = ray.cluster_resources().get("CPU", 1.0)
        remote = ray.remote(
            num_cpus=min(float(resources.cpus), available),
            num_gpus=float(resources.gpus),
            max_retries=0,
        )(_ray_measure)
        try:
            result = ray.get(remote.remote(task.to_dict()))
        except Exception as error:  # the task raised or its worker died
            first = (str(error).strip().splitlines() or [type(error).__name__])[-1]
            return MeasureOutcome(False, detail=f"Ray task: {first[:500]}")
    finally:
        if started_here:
            ray.shutdown()
    return _outcome(result)


def _ray_measure(task_data: dict[str, Any]) -> dict[str, Any]:
    return MeasureJob()(task_data)
