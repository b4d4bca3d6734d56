"""The Ray backend end to end on a local Ray instance, with real cells."""

from __future__ import annotations

from pathlib import Path

import pytest
from study_helpers import d2bench, write_study

from d2bench.tracking import Tracker

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

    second = d2bench("run", str(study), *args, cwd=tmp_path)
    assert second.returncode == 0 and "nothing to do" in second.stdout


def _job_tags(uri: str, study: str) -> list[str]:
    from d2bench.tracking.tracker import TAG_JOB

    return [record.tag(TAG_JOB) for record in Tracker(uri).cell_records(study)]
