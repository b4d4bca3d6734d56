"""The SLURM backend on a real one-node cluster: job arrays, detach/status, requeue,
preemption mid-epoch, scancel, and why a job that died unobserved ended."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from study_helpers import TINY_BASE, d2bench, write_study

from d2bench.engine.checkpoint import list_checkpoints
from d2bench.engine.trainer import CHECKPOINT_EVERY_ENV
from d2bench.launch.liveness import pid_alive
from d2bench.runner.cell import read_result
from d2bench.study import expand_cells, load_study
from d2bench.tracking import Tracker
from d2bench.tracking.tracker import (
    JOB_END_ARTIFACT,
    TAG_ERROR,
    TAG_JOB,
    TAG_JOB_END,
    TAG_JOB_LOGS,
    TAG_STOP,
    TAG_WORKER,
)

pytestmark = pytest.mark.slow


#: A training set of 24 clips (2 sequences of 12 frames), one step each: a signal lands mid-epoch.
LONG_SYNTH = {"sequences": 3, "val_sequences": 1, "frames": 12, "frame_jitter": 0,
              "height": 32, "width": 48, "distractors": 0}  # fmt: skip
STEPS_PER_EPOCH = 24


def _long_study(folder: Path, name: str, epochs: int = 2) -> Path:
    """One baseline cell with :data:`STEPS_PER_EPOCH` steps per epoch, on its own synthetic set."""
    base = copy.deepcopy(TINY_BASE)
    base["data"]["root"] = str(folder / "davis-long")
    base["train"]["max_steps_per_epoch"] = None
    rows = [{"name": "baseline", "model": {"variant": "baseline"}, "train": {"epochs": epochs}}]
    return write_study(folder, name, rows=rows, base=base, synthetic_data=LONG_SYNTH)


def test_slurm_runs_a_study_as_a_job_array_and_a_second_run_schedules_nothing(
    tmp_path: Path, synthetic_data: Path, slurm_cluster: str
) -> None:
    study = write_study(tmp_path, "slurm-study")
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    args = ("--backend", "slurm", "--slurm-profile", slurm_cluster, "--tracking-uri", uri)

    first = d2bench("run", str(study), *args, cwd=tmp_path, timeout=400)
    assert first.returncode == 0, first.stdout + first.stderr
    tracker = Tracker(uri)
    runs = tracker.study_runs("slurm-study")
    assert set(runs["status"]) == {"FINISHED"} and len(runs) == 2
    jobs = {record.tag(TAG_JOB) for record in tracker.cell_records("slurm-study")}
    assert len({job.split("_")[0] for job in jobs}) == 1, jobs  # one array
    assert all("_" in job for job in jobs)
    # A SLURM log shows how far training got: the steps of the epoch as plain lines.
    folders = {Path(tracker.client.get_run(record.run_id).data.tags[TAG_JOB_LOGS])
               for record in tracker.cell_records("slurm-study")}  # fmt: skip
    logs = "".join(log.read_text() for folder in folders for log in folder.glob("*.err"))
    assert re.search(r"^epoch 1/1  2/2  loss \S+ .* elapsed$", logs, re.M), logs[-3000:]
    assert "\x1b[" not in logs

    second = d2bench("run", str(study), *args, cwd=tmp_path)
    assert second.returncode == 0 and "nothing to do" in second.stdout


def test_requeued_cell_resumes_from_its_checkpoint(
    tmp_path: Path, synthetic_data: Path, slurm_cluster: str
) -> None:
    study = _long_study(tmp_path, "slurm-requeue", epochs=3)
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    args = ("--slurm-profile", slurm_cluster, "--tracking-uri", uri)
    submitted = d2bench("run", str(study), "--backend", "slurm", "--detach", *args, cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stderr
    assert "SUBMITTED" in submitted.stdout

    cell = expand_cells(load_study(study))[0]
    checkpoints = cell.cell_dir(tmp_path / "runs") / "checkpoints"
    tracker = Tracker(uri)
    job = tracker.cell_records("slurm-requeue")[0].tag(TAG_JOB)
    deadline = time.monotonic() + 240
    while not list(checkpoints.glob("*.pt")):
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.5)
    # Freeze the job while checking that it has not finished: on a fast machine a tiny cell can
    # end between the checkpoint's appearance and the requeue, and then has nothing to resume.
    # Resume it before the requeue: SLURM holds a requeued suspended job, and can start it again
    # while the old processes still exit.
    _scontrol("suspend", job)
    assert read_result(cell.cell_dir(tmp_path / "runs")) is None, (
        "the cell finished before it could be suspended; give it more epochs"
    )
    _scontrol("resume", job)
    _scontrol("requeue", job)
    # SLURM delays a requeued job by two minutes (BeginTime) once it is pending: start it now.
    while _job_state(job) != "PENDING":
        assert time.monotonic() < deadline, f"job {job} never went back to PENDING"
        time.sleep(0.5)
    _start_pending(job, deadline=time.monotonic() + 180)

    status = d2bench("status", str(study), "--wait", "--poll", "2", "--tracking-uri", uri,
                     cwd=tmp_path, timeout=400)  # fmt: skip
    assert status.returncode == 0, status.stdout + status.stderr
    records = tracker.cell_records("slurm-requeue")
    assert [record.status for record in records] == ["FINISHED"], status.stdout
    log = (cell.cell_dir(tmp_path / "runs") / "cell.log").read_text()
    assert "resumed from" in log
    assert "nothing to do" in d2bench("run", str(study), "--backend", "slurm", *args,
                                      cwd=tmp_path).stdout  # fmt: skip


def _scontrol(*args: str) -> None:
    done = subprocess.run(["scontrol", *args], capture_output=True, text=True)
    assert done.returncode == 0, f"scontrol {' '.join(args)}: {done.stderr}"


def _job_state(job: str) -> str:
    done = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True)
    return done.stdout.strip()


def _pending_reason(job: str) -> str:
    done = subprocess.run(["squeue", "-h", "-j", job, "-o", "%r"], capture_output=True, text=True)
    return done.stdout.strip()


def _start_pending(job: str, deadline: float) -> None:
    """Starts the requeued job now, until it leaves PENDING.

    The StartTime update can land while the requeue is still being processed and be replaced by
    the requeue's own begin time, and SLURM sometimes holds the requeued job (seen once in a full
    test run: the job never ran again). So the update is repeated, and a hold is released.
    """
    while _job_state(job) == "PENDING":
        assert time.monotonic() < deadline, f"job {job} stayed PENDING ({_pending_reason(job)})"
        commands = [["release", job]] if "Held" in _pending_reason(job) else []
        for command in [*commands, ["update", f"JobId={job}", "StartTime=now"]]:
            done = subprocess.run(["scontrol", *command], capture_output=True, text=True)
            # Refused only if the job started in between, which is what is wanted.
            assert done.returncode == 0 or _job_state(job) != "PENDING", (
                f"scontrol {' '.join(command)}: {done.stderr}"
            )
        time.sleep(3)


def _submit(study: Path, tmp_path: Path, uri: str, profile: str) -> tuple[Path, str]:
    """Submit the study's one cell detached, checkpointing every 0.1 s mid-epoch (to see where
    training is): its folder and its job id."""
    args = ("--slurm-profile", profile, "--tracking-uri", uri)
    submitted = d2bench("run", str(study), "--backend", "slurm", "--detach", *args, cwd=tmp_path,
                        env={CHECKPOINT_EVERY_ENV: "0.1"})  # fmt: skip
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    cell = expand_cells(load_study(study))[0]
    name = load_study(study).name
    return cell.cell_dir(tmp_path / "runs"), Tracker(uri).cell_records(name)[0].tag(TAG_JOB)


def _wait_for_first_half_of_an_epoch(cell_dir: Path, job: str, deadline: float) -> None:
    """Until a mid-epoch checkpoint in the first half of an epoch appears: a signal sent now
    stops the cell mid-epoch, however fast or slow this machine trains."""
    half = STEPS_PER_EPOCH // 2
    while True:
        names = [path.name for path in list_checkpoints(cell_dir / "checkpoints")]
        if any(1 <= int(name[-9:-3]) <= half for name in names[-1:]):
            return
        assert read_result(cell_dir) is None, "the cell finished before it could be stopped"
        assert time.monotonic() < deadline, f"no mid-epoch checkpoint; job {job}: {_job_state(job)}"
        time.sleep(0.02)


def _wait_until_gone(job: str, deadline: float) -> None:
    while _job_state(job) in ("RUNNING", "PENDING", "COMPLETING", "CONFIGURING"):
        assert time.monotonic() < deadline, f"job {job} is still {_job_state(job)}"
        time.sleep(0.5)


@pytest.mark.parametrize(
    ("how", "stop_says"),
    [
        # What SLURM sends signal_delay_s before the time limit (--signal=USR2@delay) to the
        # job's steps; the cell checkpoints, then submitit requeues it.
        (("scancel", "--signal=USR2"), "SIGUSR2"),
        # SLURM requeueing the job itself (as a preemption in requeue mode does): SIGTERM.
        (("scontrol", "requeue"), "requeued by SLURM"),
    ],
    ids=["warning-signal", "scontrol-requeue"],
)
def test_a_cell_preempted_mid_epoch_is_requeued_and_logs_each_step_once(
    tmp_path: Path, synthetic_data: Path, slurm_cluster: str, how: tuple[str, str], stop_says: str
) -> None:
    study = _long_study(tmp_path, "slurm-preempt")
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    cell_dir, job = _submit(study, tmp_path, uri, slurm_cluster)
    deadline = time.monotonic() + 240
    _wait_for_first_half_of_an_epoch(cell_dir, job, deadline)
    worker = Tracker(uri).cell_records("slurm-preempt")[0].tag(TAG_WORKER)
    done = subprocess.run([*how, job], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    while _job_state(job) != "PENDING":  # checkpointed, then requeued
        assert time.monotonic() < deadline, f"job {job} was not requeued ({_job_state(job)})"
        time.sleep(0.5)
    # Started again before the old process is gone, SLURM kills the job ("credential revoked").
    while pid_alive(int(worker.rpartition(":")[2])):
        assert time.monotonic() < deadline, f"the first attempt of job {job} did not exit"
        time.sleep(0.5)
    time.sleep(3)
    _start_pending(job, deadline=time.monotonic() + 180)

    status = d2bench("status", str(study), "--wait", "--poll", "2", "--tracking-uri", uri,
                     cwd=tmp_path, timeout=400)  # fmt: skip
    assert status.returncode == 0, status.stdout + status.stderr
    tracker = Tracker(uri)
    records = tracker.cell_records("slurm-preempt")
    assert [record.status for record in records] == ["FINISHED"], status.stdout  # one run
    run = tracker.client.get_run(records[0].run_id)
    assert stop_says in run.data.tags[TAG_STOP]
    log = (cell_dir / "cell.log").read_text()
    resumed = re.search(r"resumed from ckpt-e(\d{4})-b(\d{6})", log)
    assert resumed is not None and int(resumed.group(2)) > 0, log  # mid-epoch

    curve = [json.loads(line) for line in (cell_dir / "metrics.jsonl").read_text().splitlines()]
    train = [(event["step"], event["train/loss"]) for event in curve if "train/loss" in event]
    assert [step for step, _ in train] == list(range(1, 2 * STEPS_PER_EPOCH + 1))
    history = tracker.client.get_metric_history(records[0].run_id, "train/loss")
    assert sorted((metric.step, metric.value) for metric in history) == train


def test_scancel_stops_a_training_cell_killed_and_the_next_run_resumes_it(
    tmp_path: Path, synthetic_data: Path, slurm_cluster: str
) -> None:
    study = _long_study(tmp_path, "slurm-scancel")
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    cell_dir, job = _submit(study, tmp_path, uri, slurm_cluster)
    deadline = time.monotonic() + 240
    _wait_for_first_half_of_an_epoch(cell_dir, job, deadline)
    _scancel(job)
    _wait_until_gone(job, deadline)
    tracker = Tracker(uri)
    record = tracker.cell_records("slurm-scancel")[0]
    run = tracker.client.get_run(record.run_id)
    assert run.info.status == "KILLED", run.data.tags.get(TAG_ERROR)
    assert "SIGTERM" in run.data.tags[TAG_ERROR]
    assert list_checkpoints(cell_dir / "checkpoints")
    assert read_result(cell_dir) is None

    again = d2bench("run", str(study), "--backend", "slurm", "--slurm-profile", slurm_cluster,
                    "--tracking-uri", uri, cwd=tmp_path, timeout=400)  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    statuses = sorted(record.status for record in tracker.cell_records("slurm-scancel"))
    assert statuses == ["FINISHED", "KILLED"]
    assert "resumed from ckpt-e" in (cell_dir / "cell.log").read_text()


def test_a_job_cancelled_before_its_cell_starts_gets_its_cause_recorded(
    tmp_path: Path, synthetic_data: Path, slurm_cluster: str
) -> None:
    """The cell never ran, so it recorded nothing: `status` finds out why from the job's logs
    (the test cluster has no accounting), and the next `run` closes the attempt with it."""
    profile = tmp_path / "slow-start.yaml"
    profile.write_text(yaml.safe_dump({"partition": "debug", "setup": ["sleep 120"]}))
    study = write_study(tmp_path, "slurm-dead", rows=[{"name": "baseline"}])
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    _, job = _submit(study, tmp_path, uri, str(profile))
    deadline = time.monotonic() + 120
    while _job_state(job) != "RUNNING":
        assert time.monotonic() < deadline, f"job {job} did not start ({_job_state(job)})"
        time.sleep(0.5)
    _scancel(job)
    _wait_until_gone(job, deadline)

    status = d2bench("status", str(study), "--tracking-uri", uri, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert f"SLURM job {job}: cancelled" in status.stdout, status.stdout
    tracker = Tracker(uri)
    record = tracker.cell_records("slurm-dead")[0]
    run = tracker.client.get_run(record.run_id)
    assert run.info.status == "RUNNING"  # status records why; the next driver closes it
    assert run.data.tags[TAG_JOB_END].startswith(f"SLURM job {job}: cancelled")
    assert run.data.tags[TAG_ERROR] == run.data.tags[TAG_JOB_END]
    evidence = tracker.download_artifact(record.run_id, JOB_END_ARTIFACT, tmp_path / "evidence")
    assert "CANCELLED AT" in evidence.read_text()

    again = d2bench("run", str(study), "--backend", "local", "--tracking-uri", uri, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    closed = tracker.client.get_run(record.run_id)
    assert closed.info.status == "KILLED"
    assert closed.data.tags[TAG_ERROR].startswith(f"stale: SLURM job {job}: cancelled")


def _scancel(*args: str) -> None:
    done = subprocess.run(["scancel", *args], capture_output=True, text=True)
    assert done.returncode == 0, f"scancel {' '.join(args)}: {done.stderr}"
