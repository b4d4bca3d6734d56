"""Why a SLURM job ended when its cell could not say so itself.

A cell records its own outcome (FINISHED, FAILED with a traceback, KILLED on a stop signal, left
RUNNING when requeued). What it cannot record is a death from outside: the kernel's OOM killer,
the time limit or ``scancel`` arriving before training started or after the kill grace, a node
that failed. The run then stays RUNNING with its job gone, and whoever notices (``d2bench
status``, the next ``d2bench run``, an attached driver) asks here and writes the answer into the
run.

SLURM's accounting (``sacct``) knows every job's final state but needs slurmdbd, which many
small clusters (and the test cluster) do not run; then the job's own logs in the submitit folder
tell, because slurmstepd writes there (``*** JOB 12 ON node CANCELLED AT ... DUE TO TIME LIMIT
***``, ``Detected 1 oom-kill event(s)``). Torch-free.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..study.planner import CellRecord
    from ..tracking import Tracker

#: sacct states of a job that has ended, in words.
SACCT_STATES = {
    "OUT_OF_MEMORY": "out of memory",
    "TIMEOUT": "time limit reached",
    "NODE_FAIL": "node failure",
    "BOOT_FAIL": "node failed to boot",
    "PREEMPTED": "preempted",
    "CANCELLED": "cancelled",
    "DEADLINE": "deadline reached",
    "FAILED": "failed (non-zero exit)",
    "COMPLETED": "completed",
}

#: What slurmstepd, the kernel and submitit write into a job's logs, in words, most telling first
#: (a time limit is also followed by "Killed"). Only the part after the last requeue counts.
LOG_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"oom[-_ ]kill|out of memory|exceeded job memory limit", re.IGNORECASE),
     "out of memory"),
    (re.compile(r"CANCELLED AT \S+ DUE TO TIME LIMIT"), "time limit reached"),
    (re.compile(r"CANCELLED AT \S+ DUE TO NODE FAIL"), "node failure"),
    (re.compile(r"CANCELLED AT \S+ DUE TO PREEMPTION"), "preempted"),
    (re.compile(r"\*\*\* (?:JOB|STEP) \S+ ON \S+ CANCELLED AT \S+ \*\*\*"), "cancelled"),
    (re.compile(r"Submitted job triggered an exception"), "the job raised an exception"),
)  # fmt: skip
#: Ends after which running the cell again is the fix (as opposed to changing something).
RETRYABLE = frozenset({"cancelled", "preempted", "node failure", "node failed to boot"})
REQUEUE_LINE = re.compile(r"CANCELLED AT \S+ DUE TO JOB REQUEUE.*\n?")


@dataclass(frozen=True)
class JobEnd:
    """``summary``: one line for the run's tag; ``evidence``: what it was read from;
    ``cause``: the end in words (a key of :data:`RETRYABLE` or another)."""

    summary: str
    evidence: str
    cause: str = "unknown"

    @property
    def retryable(self) -> bool:
        return self.cause in RETRYABLE


def job_log_files(folder: str | Path | None) -> list[Path]:
    """The submitit stderr and stdout files of one job (``*_log.err``, ``*_log.out``)."""
    if not folder or not Path(folder).is_dir():
        return []
    return sorted(Path(folder).glob("*_log.err")) + sorted(Path(folder).glob("*_log.out"))


def explain_stale(tracker: Tracker, record: CellRecord) -> str | None:
    """For a stale attempt of a SLURM job: why the job died, recorded into its run (None for
    other backends, whose workers the planner checks by process id)."""
    from ..tracking.tracker import TAG_BACKEND, TAG_JOB

    if record.tag(TAG_BACKEND) != "slurm" or not record.tag(TAG_JOB):
        return None
    return record_job_end(tracker, record.run_id, record.tag(TAG_JOB)).summary


def record_job_end(tracker: Tracker, run_id: str, job_id: str) -> JobEnd:
    """Diagnose the run's dead job and write the answer into the run, once (a run that already
    holds one keeps it: its logs may have been cleaned up since)."""
    from ..tracking.tracker import TAG_JOB_END, TAG_JOB_LOGS

    run_id = tracker.current_run_id(run_id)
    tags = tracker.client.get_run(run_id).data.tags
    if tags.get(TAG_JOB_END):
        summary = tags[TAG_JOB_END]
        return JobEnd(summary, "", summary.partition(": ")[2].partition(" (")[0])
    end = diagnose_job_end(job_id, job_log_files(tags.get(TAG_JOB_LOGS)))
    tracker.cell_logger(run_id).job_ended(end.summary, end.evidence)
    return end


def diagnose_job_end(job_id: str, log_files: Iterable[Path] = ()) -> JobEnd:
    """Accounting first, then the logs; says so when neither tells."""
    found = from_accounting(job_id) or from_logs(job_id, log_files)
    if found is not None:
        return found
    files = ", ".join(str(path) for path in log_files) or "none recorded"
    return JobEnd(
        f"SLURM job {job_id} ended without a recorded outcome (no accounting, nothing in its logs)",
        f"sacct gave no state for job {job_id}; log files: {files}\n",
    )


def from_accounting(job_id: str, timeout: float = 30.0) -> JobEnd | None:
    """The job's final state from ``sacct``; None where accounting is off or silent."""
    if shutil.which("sacct") is None:
        return None
    command = ["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "JobID,State,ExitCode,NodeList"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    for line in done.stdout.splitlines():
        fields = line.split("|")
        if len(fields) < 4 or fields[0] != job_id:
            continue
        state, exit_code, nodes = fields[1], fields[2], fields[3]
        words = SACCT_STATES.get(state.split()[0], state.lower())
        summary = f"SLURM job {job_id}: {words} ({state}, exit code {exit_code}, node {nodes})"
        return JobEnd(summary, f"$ {' '.join(command)}\n{done.stdout}", words)
    return None


def from_logs(job_id: str, log_files: Iterable[Path]) -> JobEnd | None:
    """The most telling end that the job's logs report since its last requeue."""
    segments: list[tuple[Path, str]] = []
    for path in log_files:
        try:
            text = Path(path).read_text(errors="replace")
        except OSError:
            continue
        requeues = list(REQUEUE_LINE.finditer(text))
        segments.append((Path(path), text[requeues[-1].end() :] if requeues else text))
    for pattern, words in LOG_PATTERNS:
        for path, text in segments:
            match = pattern.search(text)
            if match is None:
                continue
            line_start = text.rfind("\n", 0, match.start()) + 1
            line_end = text.find("\n", match.end())
            line = text[line_start : line_end if line_end >= 0 else len(text)].strip()
            summary = f"SLURM job {job_id}: {words} (its log: {line[:300]})"
            return JobEnd(summary, _tail(path), words)
    return None


def _tail(path: Path, lines: int = 40) -> str:
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return f"last {len(text)} lines of {path}:\n" + "\n".join(text) + "\n"
