"""Is a RUNNING cell attempt really running? The planner asks before it trusts a RUNNING run.

An attempt records who scheduled it (driver), who runs it (worker) and, under SLURM, its job
id. A process on this host is checked by pid; a SLURM job by ``squeue``. What cannot be
checked from here (a process on another host, no ``squeue``) is trusted to be alive.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterable

from ..study.planner import CellRecord
from ..tracking.tracker import TAG_BACKEND, TAG_DRIVER, TAG_JOB, TAG_WORKER

#: squeue states of a job that will still run or is running.
ACTIVE_JOB_STATES = frozenset(
    {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED",
     "REQUEUE_HOLD", "REQUEUE_FED", "STAGE_OUT", "SIGNALING", "PREEMPTED"}
)  # fmt: skip


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _not_zombie(pid)


def _not_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def local_process_alive(identity: str, host: str) -> bool | None:
    """True/False for a ``host:pid`` on this host; None when it is elsewhere or malformed."""
    name, _, pid = identity.rpartition(":")
    if name != host or not pid.isdigit():
        return None
    return pid_alive(int(pid))


def slurm_job_states(job_ids: Iterable[str]) -> dict[str, str] | None:
    """``{job id: state}`` for the jobs squeue still lists; None where squeue is unusable."""
    ids = sorted(set(job_ids))
    if not ids or shutil.which("squeue") is None:
        return None if ids else {}
    try:
        done = subprocess.run(
            ["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(ids)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0 and "Invalid job id" not in done.stderr:
        return None
    states = {}
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return states


def make_liveness(records: Iterable[CellRecord]) -> Callable[[CellRecord], bool]:
    """A predicate for :func:`d2bench.study.planner.make_plan` (one squeue call for all)."""
    host = socket.gethostname()
    running = [r for r in records if r.status in ("RUNNING", "SCHEDULED")]
    jobs = [r.tag(TAG_JOB) for r in running if r.tag(TAG_BACKEND) == "slurm" and r.tag(TAG_JOB)]
    states = slurm_job_states(jobs)

    def alive(record: CellRecord) -> bool:
        job = record.tag(TAG_JOB)
        if record.tag(TAG_BACKEND) == "slurm" and job:
            if states is None:
                return True
            return states.get(job) in ACTIVE_JOB_STATES
        verdicts = [
            local_process_alive(record.tag(tag), host)
            for tag in (TAG_WORKER, TAG_DRIVER)
            if record.tag(tag)
        ]
        if any(verdict is True for verdict in verdicts):
            return True
        # Elsewhere (or untagged): cannot tell from here, so trust it.
        return any(verdict is None for verdict in verdicts) or not verdicts

    return alive


def orphaned_workers(records: Iterable[CellRecord]) -> list[CellRecord]:
    """RUNNING attempts on this host whose driver is gone but whose worker still lives."""
    host = socket.gethostname()
    orphans = []
    for record in records:
        if record.status != "RUNNING" or not record.tag(TAG_WORKER):
            continue
        driver = local_process_alive(record.tag(TAG_DRIVER), host)
        worker = local_process_alive(record.tag(TAG_WORKER), host)
        if driver is False and worker is True:
            orphans.append(record)
    return orphans
