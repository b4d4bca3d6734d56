"""The local backend end to end with real cells: failures, retries, a killed driver."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from study_helpers import d2bench, write_study

from d2bench.launch.task import FAULT_ROWS_ENV, FAULT_TRAIN_SET
from d2bench.study import expand_cells, load_study
from d2bench.tracking import Tracker

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
    assert "nothing to do" in again.stdout

    retry = d2bench("run", str(study), "--retry-failed", *args, cwd=tmp_path, check=True)
    assert "scheduling 1 cell(s)" in retry.stdout and "dcnv1 (seed 0): FINISHED" in retry.stdout
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
