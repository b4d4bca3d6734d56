"""The Ray backend end to end on a local Ray instance, with real cells."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from kill_helpers import (
    STEPS_PER_EPOCH,
    mid_epoch_checkpoint_in_first_half,
    only_cell_dir,
    pid_alive,
    slow_study,
    wait_for,
    worker_pid,
)
from study_helpers import d2bench, write_study

from d2bench.engine.trainer import CHECKPOINT_EVERY_ENV
from d2bench.tracking import Tracker
from d2bench.tracking.tracker import TAG_WORKER

pytestmark = pytest.mark.slow


def test_ray_runs_a_study_and_a_second_run_schedules_nothing(
    tmp_path: Path, synthetic_data: Path, ray_address: str
) -> None:
    study = write_study(tmp_path, "ray-study")
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    args = ("--backend", "ray", "--ray-address", ray_address, "--tracking-uri", uri)

    first = d2bench("run", str(study), *args, cwd=tmp_path, timeout=400)
    assert first.returncode == 0, first.stdout + first.stderr
    runs = Tracker(uri).study_runs("ray-study")
    assert sorted(runs["row"]) == ["baseline", "dcnv1"]
    assert set(runs["status"]) == {"FINISHED"}
    assert runs["jf_mean"].between(0, 1).all()
    assert {job.split(":")[0] for job in _job_tags(uri, "ray-study")} == {"ray"}
    assert Tracker(uri).study_info("ray-study")["backend"] == "ray"
    _assert_quiet_and_ordered(first.stdout + first.stderr)

    second = d2bench("run", str(study), *args, cwd=tmp_path)
    assert second.returncode == 0 and "nothing to do" in second.stdout


def test_cells_reserving_a_gpu_each_run_side_by_side_each_on_its_own_gpu(
    tmp_path: Path, synthetic_data: Path, ray_address: str
) -> None:
    """One cell per GPU, as on a multi-GPU node: the test instance declares two (logical) GPUs,
    the study reserves one per cell, so its two cells run at once and Ray hands each its own
    device (``CUDA_VISIBLE_DEVICES``, recorded in each cell's environment)."""
    resources = {"gpus": 1, "cpus": 1, "memory_gb": 1, "time_min": 10}
    study = write_study(tmp_path, "ray-gpus", resources=resources)
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    done = d2bench("run", str(study), "--backend", "ray", "--ray-address", ray_address,
                   "--tracking-uri", uri, cwd=tmp_path, timeout=400)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    cells = (tmp_path / "runs" / "cells").glob("*/result.json")
    results = [json.loads(path.read_text()) for path in cells]
    visible = sorted(r["environment"]["env_vars"].get("CUDA_VISIBLE_DEVICES") for r in results)
    assert visible == ["0", "1"], visible
    runs = Tracker(uri).study_runs("ray-gpus")
    assert set(runs["status"]) == {"FINISHED"} and len(runs) == 2
    first, second = sorted(zip(runs["start_time"], runs["end_time"], strict=True))
    assert second[0] < first[1]  # the second started before the first ended: side by side


def test_a_ray_worker_killed_mid_epoch_is_retried_and_resumes_from_its_checkpoint(
    tmp_path: Path, ray_address: str
) -> None:
    """SIGKILL the process running the trial in the first half of the second epoch: Tune
    retries the trial, the retry resumes mid-epoch from the cell's newest checkpoint (written
    every 0.1 s here, a setting the driver forwards to Ray's workers), and the cell ends
    FINISHED once."""
    study = slow_study(tmp_path, "ray-kill", epochs=2)
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    d2bench("plan", str(study), "--tracking-uri", uri, cwd=tmp_path, check=True)  # the store
    cell_dir = only_cell_dir(study)
    command = [sys.executable, "-m", "d2bench.cli", "run", str(study), "--backend", "ray",
               "--ray-address", ray_address, "--tracking-uri", uri]  # fmt: skip
    env = {**os.environ, CHECKPOINT_EVERY_ENV: "0.1"}
    driver = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=env)  # fmt: skip
    tracker = Tracker(uri)
    try:
        pid = wait_for(lambda: worker_pid(tracker, "ray-kill"), 240, "the trial to start", driver)
        wait_for(
            lambda: mid_epoch_checkpoint_in_first_half(cell_dir, epoch=1),
            240,
            "a checkpoint in the first half of the second epoch",
            driver,
            poll=0.01,
        )
        os.kill(pid, signal.SIGKILL)
        output = driver.communicate(timeout=400)[0]
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 0, output
    assert not pid_alive(pid)
    log = (cell_dir / "cell.log").read_text()
    resumed = re.search(r"resumed from ckpt-e(\d{4})-b(\d{6})", log)
    assert resumed is not None and resumed.group(1) == "0001", log
    assert int(resumed.group(2)) > 0, log  # mid-epoch: the forwarded interval took effect
    (record,) = tracker.cell_records("ray-kill")
    assert record.status == "FINISHED"
    assert record.tag(TAG_WORKER).rpartition(":")[2] != str(pid)  # the retry ran elsewhere
    steps = [json.loads(line)["step"] for line in (cell_dir / "metrics.jsonl").read_text()
             .splitlines() if "train/loss" in line]  # fmt: skip
    assert steps == list(range(1, 2 * STEPS_PER_EPOCH + 1))  # each step once


def _assert_quiet_and_ordered(output: str) -> None:
    """What a newcomer reads: the cells' own lines, in order, with their training progress and
    the run's timing; none of Ray's noise, no colour codes in redirected output."""
    noise = ("SystemExit", "sigterm_handler", "Traceback", "tensorboard", "TensorBoard",
             "Token authentication", "Configuration for experiment", "\x1b[")  # fmt: skip
    assert not [word for word in noise if word in output], output
    assert re.search(r"epoch 1/1  2/2  loss \S+ .* elapsed", output), output
    assert re.search(r"\[2/2\] \S+ \(seed 0\): FINISHED \(\S+ elapsed\)", output), output
    assert re.search(r"summary: 2 finished in \S+", output), output
    for pid in set(re.findall(r"\(_trial pid=(\d+)\)", output)):
        lines = [line for line in output.splitlines() if f"pid={pid})" in line]
        order = ("[cell] cell ", "epoch 1/1", "[cell] inference on", "[cell] done in")
        steps = [next(i for i, line in enumerate(lines) if text in line) for text in order]
        assert steps == sorted(steps), "\n".join(lines)


def _job_tags(uri: str, study: str) -> list[str]:
    from d2bench.tracking.tracker import TAG_JOB

    return [record.tag(TAG_JOB) for record in Tracker(uri).cell_records(study)]
