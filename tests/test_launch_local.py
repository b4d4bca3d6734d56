"""The local backend end to end with real cells: failures, retries, a killed driver."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
from kill_helpers import only_cell_dir, slow_study, wait_for, worker_pid
from study_helpers import d2bench, write_study

from d2bench.engine.checkpoint import list_checkpoints
from d2bench.launch.task import FAULT_ROWS_ENV, FAULT_TRAIN_SET
from d2bench.study import expand_cells, load_study
from d2bench.tracking import Tracker
from d2bench.tracking.tracker import TAG_ERROR, TAG_ROW, TAG_WORKER

pytestmark = pytest.mark.slow


def test_failure_is_recorded_the_rest_finish_and_retry_failed_reruns_only_it(
    tmp_path: Path, synthetic_data: Path
) -> None:
    study = write_study(tmp_path, "local-fail")
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    args = ("--tracking-uri", uri)

    first = d2bench("run", str(study), *args, cwd=tmp_path, env={FAULT_ROWS_ENV: "dcnv1"})
    assert first.returncode == 1, first.stderr
    tracker = Tracker(uri)
    runs = tracker.study_runs("local-fail").set_index("row")
    assert runs.loc["baseline", "status"] == "FINISHED"
    assert runs.loc["dcnv1", "status"] == "FAILED"
    assert 0.0 <= runs.loc["baseline", "jf_mean"] <= 1.0
    failed_run = runs.loc["dcnv1", "run_id"]
    assert FAULT_TRAIN_SET in tracker.download_artifact(failed_run, "traceback.txt").read_text()
    assert len(tracker.metric_history([runs.loc["baseline", "run_id"]], "train/loss")) >= 1

    again = d2bench("run", str(study), *args, cwd=tmp_path, check=True)
    assert (
        "nothing to do: 1 done, 1 failed (rerun failed cells with --retry-failed)" in again.stdout
    )

    retry = d2bench(
        "run", str(study), "--retry-failed", "--system-metrics", "0.2", *args, cwd=tmp_path,
        check=True,
    )  # fmt: skip
    assert "scheduling 1 cell(s)" in retry.stdout and "dcnv1 (seed 0): FINISHED" in retry.stdout
    # Redirected output (a log): the cell's training steps as plain lines, the run's timing,
    # no escape codes.
    assert re.search(r"\[1/1\] dcnv1 \(seed 0\): FINISHED \(\S+ elapsed\)", retry.stdout)
    assert re.search(r"^epoch 1/1  2/2  loss \S+ .* elapsed$", retry.stderr, re.M), retry.stderr
    assert "\x1b[" not in retry.stdout + retry.stderr and "\r" not in retry.stderr
    # --system-metrics: the machine's use sampled into the cell's run while it trained, and
    # stopped before inference (so never while FPS is timed).
    retried = tracker.study_runs("local-fail").set_index("row").loc["dcnv1", "run_id"]
    cpu = tracker.client.get_metric_history(retried, "system/cpu_utilization_percentage")
    assert cpu, "no system metrics in the run"
    log = tracker.download_artifact(retried, "cell.log").read_text()
    stamp = re.search(r"^(\S+ \S+) INFO inference on", log, re.M)
    assert stamp, log
    inference_ms = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() * 1000
    assert max(metric.timestamp for metric in cpu) <= inference_ms + 1
    first_run = runs.loc["baseline", "run_id"]  # run without the flag: no sampler
    assert not tracker.client.get_metric_history(first_run, "system/cpu_utilization_percentage")
    records = tracker.cell_records("local-fail")
    assert Counter(r.status for r in records) == Counter({"FINISHED": 2, "FAILED": 1})
    assert set(tracker.study_runs("local-fail")["status"]) == {"FINISHED"}
    assert "nothing to do" in d2bench("run", str(study), *args, cwd=tmp_path).stdout


def test_killing_the_driver_then_running_again_finishes_every_cell_exactly_once(
    tmp_path: Path, synthetic_data: Path
) -> None:
    rows = [{"name": name, "model": {"variant": name}} for name in ("baseline", "aspp", "dcnv1")]
    study = write_study(tmp_path, "local-kill", rows=rows)
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    driver = subprocess.Popen(
        [sys.executable, "-m", "d2bench.cli", "run", str(study), "--tracking-uri", uri],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    tracker = Tracker(uri)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # kill it while the second cell runs
        statuses = Counter(r.status for r in tracker.cell_records("local-kill"))
        if statuses["FINISHED"] >= 1 and statuses["RUNNING"] >= 1:
            break
        assert driver.poll() is None, "the driver ended before it could be killed"
        time.sleep(0.5)
    else:
        driver.kill()
        pytest.fail("the study never reached its second cell")
    driver.send_signal(signal.SIGKILL)
    driver.wait()

    d2bench("run", str(study), "--tracking-uri", uri, cwd=tmp_path, check=True)

    keys = {cell.key for cell in expand_cells(load_study(study))}
    finished = Counter(r.key for r in tracker.cell_records("local-kill") if r.status == "FINISHED")
    assert finished == Counter({key: 1 for key in keys})
    assert not [r for r in tracker.cell_records("local-kill") if r.status == "RUNNING"]
    assert "nothing to do" in d2bench("run", str(study), "--tracking-uri", uri, cwd=tmp_path).stdout


def test_two_drivers_started_together_run_each_cell_once(
    tmp_path: Path, synthetic_data: Path
) -> None:
    study = write_study(tmp_path, "local-twice")
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    command = [sys.executable, "-m", "d2bench.cli", "run", str(study), "--tracking-uri", uri]
    drivers = [
        subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outputs = [driver.communicate(timeout=300)[0] for driver in drivers]
    assert [driver.returncode for driver in drivers] == [0, 0], outputs
    records = Tracker(uri).cell_records("local-twice")
    keys = {cell.key for cell in expand_cells(load_study(study))}
    assert Counter(r.key for r in records) == Counter({key: 1 for key in keys})
    assert {r.status for r in records} == {"FINISHED"}
    assert sum("nothing to do" in output for output in outputs) == 1


def test_a_truncated_newest_checkpoint_is_skipped_and_the_cell_resumes_from_the_older_one(
    tmp_path: Path,
) -> None:
    """The worker dies (SIGKILL) in its third epoch and its newest checkpoint is then cut short:
    a plain re-run names --retry-failed, which resumes from the checkpoint before the damaged
    one, names the skipped file in cell.log and moves it aside."""
    study = slow_study(tmp_path, "local-truncated", epochs=3)
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    args = ("--tracking-uri", uri)
    d2bench("plan", str(study), *args, cwd=tmp_path, check=True)  # the store, before polling it
    checkpoints = only_cell_dir(study) / "checkpoints"
    command = [sys.executable, "-m", "d2bench.cli", "run", str(study), *args]
    driver = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)  # fmt: skip
    tracker = Tracker(uri)
    try:
        pid = wait_for(lambda: worker_pid(tracker, "local-truncated"), 240, "the cell", driver)
        wait_for(lambda: len(list_checkpoints(checkpoints)) >= 2, 240, "two checkpoints", driver)
        os.kill(pid, signal.SIGKILL)
        output = driver.communicate(timeout=120)[0]
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 1, output
    (failed,) = tracker.cell_records("local-truncated")
    assert failed.status == "FAILED"

    again = d2bench("run", str(study), *args, cwd=tmp_path, check=True)
    assert "nothing to do: 1 failed (rerun failed cells with --retry-failed)" in again.stdout

    *_, older, newest = list_checkpoints(checkpoints)
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    retry = d2bench(
        "run", str(study), "--retry-failed", "--system-metrics", "0.2", *args, cwd=tmp_path,
        check=True,
    )  # fmt: skip
    assert "baseline (seed 0): FINISHED" in retry.stdout
    log = (checkpoints.parent / "cell.log").read_text()
    assert f"skipped checkpoint {newest.name}: it does not load" in log
    assert f"resumed from {older.name}" in log
    assert newest.with_name(newest.name + ".corrupt").exists()
    statuses = Counter(r.status for r in tracker.cell_records("local-truncated"))
    assert statuses == Counter({"FAILED": 1, "FINISHED": 1})


def test_plan_shows_the_never_started_cells_of_a_killed_driver_as_stale_and_run_closes_them(
    tmp_path: Path, synthetic_data: Path
) -> None:
    study = write_study(tmp_path, "local-stale")
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    args = ("--tracking-uri", uri)
    d2bench("plan", str(study), *args, cwd=tmp_path, check=True)  # the store, before polling it
    command = [sys.executable, "-m", "d2bench.cli", "run", str(study), *args]
    driver = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)  # fmt: skip
    tracker = Tracker(uri)
    try:
        wait_for(lambda: worker_pid(tracker, "local-stale"), 240, "the first cell", driver)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    never_started = [r for r in tracker.cell_records("local-stale") if not r.tag(TAG_WORKER)]
    assert len(never_started) == 1 and never_started[0].status == "RUNNING"
    stale_row = never_started[0].tag(TAG_ROW)

    plan = d2bench("plan", str(study), *args, cwd=tmp_path, check=True).stdout
    states = {line.split()[0]: line.split()[-1] for line in plan.splitlines()[1:-1]}
    assert states[stale_row] == "stale", plan
    status = d2bench("status", str(study), *args, cwd=tmp_path).stdout
    assert f"{stale_row}" in status and "stale" in status

    d2bench("run", str(study), *args, cwd=tmp_path, check=True)
    closed = tracker.client.get_run(never_started[0].run_id)
    assert closed.info.status == "KILLED" and "stale" in closed.data.tags[TAG_ERROR]
    keys = {cell.key for cell in expand_cells(load_study(study))}
    finished = Counter(r.key for r in tracker.cell_records("local-stale") if r.status == "FINISHED")
    assert finished == Counter({key: 1 for key in keys})
