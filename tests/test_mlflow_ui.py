"""What the MLflow UI shows of a study, read back through a real ``mlflow server``'s REST API
(the same calls the UI makes): the experiment's kind and description, the parent and its child
runs, their names, params and metrics in table units, a start that is the cell's own, and on
the parent run the rows' aggregates and the report's tables and figures."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mlflow")

from d2bench.cli import main
from d2bench.study import expand_cells, load_study
from d2bench.study.cells import varying_keys
from d2bench.tracking import Tracker
from d2bench.tracking.tracker import study_description

STUDY = """
name: ui-rest
description: Two Table 1 rows and a learning-rate axis, on synthetic data.
synthetic_data: true
base:
  data: {root: data/synthetic-davis}
  model: {backbone: tiny}
  train: {epochs: 2, precision: fp32}
  device: cpu
seeds: [0, 1]
rows:
  - {name: baseline, table: table1, model: {variant: baseline}}
  - {name: d2conv3d_iv, table: table1, model: {variant: d2conv3d_iv}}
  - {name: iv-fast, table: table1, model: {variant: d2conv3d_iv}, train: {lr: 1.0e-4}}
"""

#: J&F (fraction) per row and seed.
JF = {"baseline": [0.60, 0.62], "d2conv3d_iv": [0.70, 0.71], "iv-fast": [0.50, 0.54]}
QUEUE_SECONDS = 1.5


def _get(uri: str, endpoint: str, **query: str) -> dict[str, Any]:
    url = f"{uri}/api/2.0/mlflow/{endpoint}?{urllib.parse.urlencode(query)}"
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def _post(uri: str, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{uri}/api/2.0/mlflow/{endpoint}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _tags(entity: dict[str, Any]) -> dict[str, str]:
    return {tag["key"]: tag["value"] for tag in entity.get("tags", [])}


@pytest.fixture(scope="module")
def served_study(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory):
    """A study tracked on the server as the driver and workers track it, then reported."""
    root = tmp_path_factory.mktemp("ui-rest")
    study_path = root / "ui-rest.yaml"
    study_path.write_text(STUDY)
    study = load_study(study_path)
    cells = expand_cells(study)
    tracker = Tracker(mlflow_server)
    description = study_description(study.name, study.spec.description, str(study_path))
    parent = tracker.ensure_study_run(
        study.name, study.text, "local", {"git": "0" * 40}, description
    )
    varying = varying_keys(cells)
    scheduled = {}
    for cell in cells:
        cell_dir = root / "cells" / cell.key
        cell_dir.mkdir(parents=True)
        scheduled[cell.key] = tracker.create_cell_run(
            study.name, parent, cell, "local", cell_dir, "0" * 40, varying
        )
    time.sleep(QUEUE_SECONDS)  # the cells wait in the queue
    started_after = int(time.time() * 1000)
    for cell in cells:
        logger = tracker.cell_logger(scheduled[cell.key])
        logger.started()
        jf = JF[cell.row][cell.seed]
        for epoch in (1, 2):
            logger.log_metrics({"val/jf_mean": jf - 0.1 / epoch}, epoch)
        metrics = {"jf_mean": jf, "j_mean": jf - 0.01, "f_mean": jf + 0.01, "fps": 3.0 + cell.seed,
                   "peak_rss_gb": 1.25, "train_seconds": 90.0}  # fmt: skip
        cell_dir = root / "cells" / cell.key
        (cell_dir / "result.json").write_text(json.dumps({"metrics": metrics}))
        logger.finished({"metrics": metrics}, cell_dir)
    out = root / "report"
    assert main(["report", str(study_path), "--out", str(out), "--tracking-uri",
                 mlflow_server]) == 0  # fmt: skip
    return mlflow_server, study, cells, parent, scheduled, started_after, out


def test_the_experiment_opens_as_model_training_with_the_study_description(served_study):
    uri, study, *_ = served_study
    experiment = _get(uri, "experiments/get-by-name", experiment_name=study.name)["experiment"]
    tags = _tags(experiment)
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    note = tags["mlflow.note.content"]
    assert study.spec.description in note
    assert f"d2bench report {study.path.resolve()}" in note


def _runs(uri: str, study_name: str) -> list[dict[str, Any]]:
    experiment = _get(uri, "experiments/get-by-name", experiment_name=study_name)["experiment"]
    found = _post(uri, "runs/search", {"experiment_ids": [experiment["experiment_id"]],
                                        "max_results": 1000})  # fmt: skip
    return found["runs"]


def test_child_runs_read_like_the_table(served_study):
    uri, study, cells, parent, scheduled, started_after, _ = served_study
    runs = _runs(uri, study.name)
    children = [run for run in runs if _tags(run["data"]).get("d2bench.kind") == "cell"]
    assert len(children) == len(cells)  # the scheduled runs were handed over, not duplicated
    assert not {run["info"]["run_id"] for run in children} & set(scheduled.values())
    names = {run["info"]["run_name"] for run in children}
    assert "d2conv3d_iv · 1+elu · seed 0" in names and "baseline · seed 1" in names
    for run in children:
        tags = _tags(run["data"])
        assert tags["mlflow.parentRunId"] == parent
        assert tags["mlflow.source.git.commit"] == "0" * 40
        assert int(run["info"]["start_time"]) >= started_after  # the cell's start, not the queue's
        assert float(tags["d2bench.queued_seconds"]) >= QUEUE_SECONDS - 0.5
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        row = tags["d2bench.row"]
        assert params["row"] == row and params["seed"] == tags["d2bench.seed"]
        assert params["variant"] == ("baseline" if row == "baseline" else "d2conv3d_iv")
        assert params["activation"] == "1+elu"
        # the learning-rate axis: in every cell, the default value included
        assert params["train.lr"] == ("0.0001" if row == "iv-fast" else "1e-05")
        assert "data.root" not in params  # the same in every cell: config.yaml has it
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        jf = JF[row][int(tags["d2bench.seed"])]
        assert metrics["JF"] == pytest.approx(100 * jf) and metrics["jf_mean"] == pytest.approx(jf)
        assert metrics["FPS"] == metrics["fps"] and metrics["memory_GB"] == pytest.approx(1.25)
        history = _get(
            uri, "metrics/get-history", run_id=run["info"]["run_id"], metric_key="val/JF"
        )
        assert [round(m["value"], 6) for m in history["metrics"]] == [
            round(100 * (jf - 0.1), 6),
            round(100 * (jf - 0.05), 6),
        ]


def test_the_parent_run_carries_the_rows_and_the_report(served_study):
    uri, study, _, parent, _, _, out = served_study
    run = _get(uri, "runs/get", run_id=parent)["run"]
    tags = _tags(run["data"])
    assert tags["mlflow.runName"] == study.name and "d2bench report" in tags["mlflow.note.content"]
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["rows"] == "3" and params["seeds"] == "[0, 1]"
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert metrics["d2conv3d_iv/JF"] == pytest.approx(70.5)
    assert metrics["d2conv3d_iv/JF_std"] == pytest.approx(0.7071, abs=1e-3)
    assert metrics["d2conv3d_iv/JF_n"] == 2
    assert metrics["iv-fast/JF"] == pytest.approx(52.0) and metrics["baseline/FPS"] == 3.5

    listed = _get(uri, "artifacts/list", run_id=parent)
    assert {"report", "rows.json", "study.yaml"} <= {f["path"] for f in listed["files"]}
    report = {f["path"] for f in _get(uri, "artifacts/list", run_id=parent, path="report")["files"]}
    assert {"report/table1.md", "report/table1.tex", "report/table1.csv", "report/README.md",
            "report/figures"} <= report  # fmt: skip
    figures = _get(uri, "artifacts/list", run_id=parent, path="report/figures")["files"]
    assert "report/figures/jf_fps.png" in {f["path"] for f in figures}
    table1 = _download(uri, parent, "report/table1.md")
    assert table1 == (out / "table1.md").read_text() and "70.5" in table1
    rows = json.loads(_download(uri, parent, "rows.json"))
    frame = {line[0]: dict(zip(rows["columns"], line, strict=True)) for line in rows["data"]}
    assert frame["baseline"]["JF mean"] == pytest.approx(61.0) and frame["baseline"]["JF n"] == 2


def _download(uri: str, run_id: str, path: str) -> str:
    query = urllib.parse.urlencode({"run_uuid": run_id, "path": path})
    with urllib.request.urlopen(f"{uri}/get-artifact?{query}", timeout=30) as response:
        return response.read().decode()


def test_a_second_report_refreshes_the_parent(served_study, tmp_path: Path):
    uri, study, _, parent, *_ = served_study
    assert main(["report", str(study.path), "--out", str(tmp_path), "--tracking-uri", uri]) == 0
    history = _get(uri, "metrics/get-history", run_id=parent, metric_key="d2conv3d_iv/JF")
    assert [m["value"] for m in history["metrics"]] == pytest.approx([70.5, 70.5])
    assert _download(uri, parent, "report/table1.md") == (tmp_path / "table1.md").read_text()
    rows = json.loads(_download(uri, parent, "rows.json"))
    assert [line[0] for line in rows["data"]] == ["baseline", "d2conv3d_iv", "iv-fast"]  # replaced


def _descendants(pid: int) -> list[str]:
    """Command lines of every process below ``pid`` (read from /proc)."""
    children: dict[int, list[int]] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            commands[int(entry.name)] = (
                (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            )
        except OSError:  # ended while we looked
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(commands.get(child, ""))
            stack.append(child)
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_d2bench_ui_serves_the_store_without_mlflows_job_runner(tmp_path: Path) -> None:
    """MLflow 3's server starts GenAI job runners (huey consumers that outlive a stopped UI);
    `d2bench ui` switches them off, so browsing a study costs one server process."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"}
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    process = subprocess.Popen(
        [sys.executable, "-m", "d2bench.cli", "ui", "--tracking-uri", uri, "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                assert process.poll() is None, "d2bench ui ended before serving"
                assert time.monotonic() < deadline, "d2bench ui did not answer within 300 s"
                time.sleep(0.5)
        time.sleep(3)  # MLflow starts its job runner right after the server answers
        below = _descendants(process.pid)
        assert not [c for c in below if "huey" in c or "_job_runner" in c], below
    finally:
        process.terminate()
        process.wait(timeout=60)
