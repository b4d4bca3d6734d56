"""The MLflow adapter against real stores: SQLite under concurrent writers, and a server."""

from __future__ import annotations

import math
import multiprocessing
import os
from pathlib import Path

import pytest

from d2bench.core.config import CellConfig
from d2bench.study.cells import Cell, cell_key
from d2bench.study.signature import CellInputs
from d2bench.tracking import FINAL_METRICS, Tracker

CURVE_STEPS = 25


def _cell(study: str, row: str, seed: int = 0) -> Cell:
    config = CellConfig.model_validate(
        {"data": {"root": "data"}, "model": {"variant": "dcnv2"}, "train": {"seed": seed}}
    )
    inputs = CellInputs(data=f"davis-{row}", weights="none")
    return Cell(study, row, seed, config, cell_key(config, inputs), "table1", inputs)


def _finish_one(uri: str, run_id: str, index: int, cell_dir: str, barrier) -> None:
    """A worker's whole write path, started at the same instant as the others."""
    os.environ.pop("PYTEST_CURRENT_TEST", None)
    logger = Tracker(uri).cell_logger(run_id)
    barrier.wait(timeout=120)
    logger.started(job_id=f"job-{index}")
    for step in range(CURVE_STEPS):
        logger.log_metrics({"train/loss": 1.0 / (step + 1), "train/lr": 1e-4}, step)
    metrics = {name: float(index) + 0.5 for name in FINAL_METRICS}
    logger.finished({"metrics": metrics}, Path(cell_dir))


def test_eight_cells_finishing_at_once_on_sqlite_lose_and_duplicate_nothing(
    tmp_path: Path,
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    tracker = Tracker(uri)
    parent = tracker.ensure_study_run("concurrent", "name: concurrent\n", "local", {"git": "x"})
    cells = [_cell("concurrent", f"row{i}") for i in range(8)]
    run_ids = []
    for cell in cells:
        cell_dir = tmp_path / cell.key
        cell_dir.mkdir()
        (cell_dir / "result.json").write_text("{}")
        run_ids.append(tracker.create_cell_run("concurrent", parent, cell, "local", cell_dir, "x"))

    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(8)
    workers = [
        context.Process(
            target=_finish_one, args=(uri, run_id, i, str(tmp_path / cells[i].key), barrier)
        )
        for i, run_id in enumerate(run_ids)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=240)
    assert [worker.exitcode for worker in workers] == [0] * 8

    frame = tracker.study_runs("concurrent")
    assert len(frame) == 8 and set(frame["status"]) == {"FINISHED"}
    assert sorted(frame["row"]) == sorted(cell.row for cell in cells)
    by_row = frame.set_index("row")
    for index in range(8):
        for name in FINAL_METRICS:
            assert by_row.loc[f"row{index}", name] == pytest.approx(index + 0.5)
    history = tracker.metric_history(run_ids, "train/loss")
    counts = history.groupby("run_id").size()
    assert len(counts) == 8 and set(counts) == {CURVE_STEPS}
    assert set(history.groupby("run_id")["step"].nunique()) == {CURVE_STEPS}
    artifact = tracker.download_artifact(run_ids[3], "result.json", tmp_path / "dl")
    assert artifact.read_text() == "{}"


def test_study_runs_columns_latest_attempt_and_failures(tmp_path: Path) -> None:
    tracker = Tracker(f"sqlite:///{tmp_path / 'store.db'}")
    assert tracker.study_runs("nothing-yet").empty
    parent = tracker.ensure_study_run("cols", "name: cols\n", "ray", {"git": "abc"})
    done, failing = _cell("cols", "a"), _cell("cols", "b")
    first = tracker.create_cell_run("cols", parent, failing, "ray", tmp_path, "abc")
    tracker.cell_logger(first).failed("Traceback ...\nValueError: boom\n", None)
    retry = tracker.create_cell_run("cols", parent, failing, "ray", tmp_path, "abc")
    run = tracker.create_cell_run("cols", parent, done, "ray", tmp_path, "abc")
    tracker.cell_logger(run).finished({"metrics": {"jf_mean": 0.8, "fps": 4.5}}, tmp_path)

    frame = tracker.study_runs("cols")
    expected_start = ["run_id", "study", "row", "seed", "cell_key", "status", "variant"]
    assert list(frame.columns[: len(expected_start)]) == expected_start
    assert {"activation", "start_time", "end_time", *FINAL_METRICS} <= set(frame.columns)
    rows = frame.set_index("row")
    assert rows.loc["a", "jf_mean"] == pytest.approx(0.8)
    assert math.isnan(rows.loc["a", "oob_full"])
    assert rows.loc["b", "run_id"] == retry and rows.loc["b", "status"] == "RUNNING"
    text = tracker.download_artifact(first, "traceback.txt").read_text()
    assert "ValueError: boom" in text
    info = tracker.study_info("cols")
    assert info["spec"] == "name: cols\n" and info["backend"] == "ray"
    assert info["environment"]["git"] == "abc"
    with pytest.raises(LookupError):
        tracker.study_info("no-such-study")


def test_default_store_is_sqlite_under_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracker = Tracker()
    assert tracker.uri == f"sqlite:///{tmp_path.resolve() / 'mlruns' / 'mlflow.db'}"
    tracker.ensure_study_run("default-store", "name: x\n", "local", {"git": "g"})
    assert (tmp_path / "mlruns" / "mlflow.db").is_file()
    assert any((tmp_path / "mlruns" / "artifacts").rglob("study.yaml"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    assert Tracker().uri == "http://127.0.0.1:9"


def test_tracking_server_path(mlflow_server: str, tmp_path: Path) -> None:
    tracker = Tracker(mlflow_server)
    parent = tracker.ensure_study_run("served", "name: served\n", "slurm", {"git": "g"})
    cell = _cell("served", "only")
    cell_dir = tmp_path / "cell"
    cell_dir.mkdir()
    (cell_dir / "cell.log").write_text("log line\n")
    run_id = tracker.create_cell_run("served", parent, cell, "slurm", cell_dir, "g")
    logger = tracker.cell_logger(run_id)
    logger.started("123_0")
    logger.log_metrics({"train/loss": 0.5}, 1)
    logger.finished({"metrics": {"jf_mean": 0.7}}, cell_dir)
    frame = Tracker(mlflow_server).study_runs("served")
    assert frame.loc[0, "status"] == "FINISHED" and frame.loc[0, "jf_mean"] == pytest.approx(0.7)
    assert tracker.metric_history([run_id], "train/loss")["value"].tolist() == [0.5]
    assert tracker.download_artifact(run_id, "cell.log").read_text() == "log line\n"
