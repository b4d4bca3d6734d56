"""``d2bench measure``: FPS and memory of every finished row on one device, from the cells'
checkpoints, recorded in MLflow and under the runs folder; the report's FPS/Mem columns read the
newest measurement; measuring never retrains nor touches a cell."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from study_helpers import d2bench, write_study

from d2bench.cli import main
from d2bench.core.measurement import evaluated_checkpoint
from d2bench.report import build_table
from d2bench.report.layout import FPS, JF, MEM, LayoutRow, TableLayout
from d2bench.report.measurement import parse_measurement
from d2bench.study import expand_cells, load_study
from d2bench.tracking import Tracker
from d2bench.tracking.measurements import KIND_MEASUREMENT, TAG_DEVICE, latest_measurement
from d2bench.tracking.tracker import TAG_KIND

pytestmark = pytest.mark.slow

#: Two rows without custom operators (quick on a CPU), two seeds: one record per row, not cell.
ROWS = [
    {"name": "baseline", "model": {"variant": "baseline"}},
    {"name": "aspp", "model": {"variant": "aspp"}},
]


def _fingerprint(runs_dir: Path) -> dict[str, tuple[int, str]]:
    """(mtime, sha256) of every file of every cell folder."""
    found = {}
    for path in sorted((runs_dir / "cells").rglob("*")):
        if path.is_file():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            found[str(path.relative_to(runs_dir))] = (path.stat().st_mtime_ns, digest)
    return found


def _cell_runs(uri: str, study: str) -> list[tuple]:
    frame = Tracker(uri).study_runs(study)
    return sorted(zip(frame["run_id"], frame["status"], frame["end_time"], strict=True))


@pytest.fixture(scope="module")
def finished(tmp_path_factory, synthetic_data):
    """A tiny two-row, two-seed study run to the end on the local backend."""
    folder = tmp_path_factory.mktemp("measure")
    study = write_study(folder, "measured", rows=ROWS, seeds=[0, 1])
    uri = f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"
    done = d2bench("run", str(study), "--backend", "local", "--tracking-uri", uri, cwd=folder)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return folder, study, uri


def _records(runs_dir: Path) -> list[Path]:
    """The measurement records (not their task files), oldest first."""
    found = (runs_dir / "measurements").glob("measured-*.json")
    return sorted((p for p in found if not p.name.endswith(".task.json")),
                  key=lambda p: p.stat().st_mtime_ns)  # fmt: skip


def _measure(folder: Path, study: Path, uri: str, *args: str):
    return d2bench("measure", str(study), "--tracking-uri", uri, *args, cwd=folder, timeout=400)


def _report(folder: Path, study: Path, uri: str, name: str) -> str:
    out = folder / name
    d2bench("report", str(study), "--out", str(out), "--tracking-uri", uri, cwd=folder, check=True)
    return (out / "measured.md").read_text()


def _table_cell(markdown: str, row: str, column: str) -> str:
    """The cell of ``row`` under the first header that starts with ``column``."""
    lines = markdown.splitlines()
    header = next(line for line in lines if line.startswith("| ") and column in line)
    titles = [cell.strip() for cell in header.split("|")[1:-1]]
    line = next(line for line in lines if line.startswith(f"| {row} "))
    cells = [cell.strip() for cell in line.split("|")[1:-1]]
    return cells[next(i for i, title in enumerate(titles) if title.startswith(column))]


def test_measure_records_each_row_once_and_the_report_uses_the_newest(finished):
    folder, study, uri = finished
    runs_dir = folder / "runs"
    before_files, before_runs = _fingerprint(runs_dir), _cell_runs(uri, "measured")
    in_run = _report(folder, study, uri, "report-before")
    assert "measured by `d2bench measure`" not in in_run

    first = _measure(folder, study, uri, "--device", "cpu", "--rounds", "2")
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]

    records = _records(runs_dir)
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert record["device"] == "cpu" and record["rounds"] == 2
    assert set(record["rows"]) == {"baseline", "aspp"}  # one per row, not one per cell
    cells = {cell.row: cell for cell in expand_cells(load_study(study)) if cell.seed == 0}
    for row, measured in record["rows"].items():
        assert measured["seed"] == 0 and measured["cell_key"] == cells[row].key
        assert measured["checkpoint"].endswith("checkpoints/ckpt-e0001-b000000.pt")
        assert [r["round"] for r in measured["rounds"]] == [0, 1]
        assert all(r["fps"] > 0 and r["memory_gb"] > 0 for r in measured["rounds"])
        assert measured["memory_source"] == "peak_rss_gb"
    # Rows interleaved: every row once per round, round after round.
    assert record["order"] == [[0, "baseline"], [0, "aspp"], [1, "baseline"], [1, "aspp"]]
    assert record["environment"]["torch_version"]
    # What ran beside it, as far as the measuring process can see: load and running cells.
    for snapshot in (record["beside"]["before"], record["beside"]["after"]):
        assert snapshot["cpu_count"] == os.cpu_count() and snapshot["running_cells"] == 0
        assert len(snapshot["load_average"]) == 3

    tracked = latest_measurement(Tracker(uri), "measured")
    assert tracked is not None and tracked["run_id"] == record["run_id"]
    run = Tracker(uri).client.get_run(record["run_id"])
    assert run.data.tags[TAG_KIND] == KIND_MEASUREMENT and run.data.tags[TAG_DEVICE] == "cpu"
    assert run.data.metrics["fps/aspp"] == pytest.approx(record["rows"]["aspp"]["fps"]["mean"])

    # Nothing retrained, no cell file touched, no cell run changed; the plan is still all done.
    assert _fingerprint(runs_dir) == before_files
    assert _cell_runs(uri, "measured") == before_runs
    plan = d2bench("plan", str(study), "--tracking-uri", uri, cwd=folder, check=True)
    assert plan.stdout.strip().splitlines()[-1] == "4 done"

    measured_table = _report(folder, study, uri, "report-first")
    fps = record["rows"]["baseline"]["fps"]
    assert f"{fps['mean']:.2f} ± {fps['std']:.2f}" in _table_cell(measured_table, "baseline", "FPS")
    assert "(n=2)" in _table_cell(measured_table, "baseline", "FPS")
    assert "on cpu (" in measured_table and "2 round(s)" in measured_table
    assert record["run_id"] in measured_table

    second = _measure(folder, study, uri, "--device", "cpu", "--rounds", "1")
    assert second.returncode == 0, second.stderr[-2000:]
    assert len(_records(runs_dir)) == 2
    newest = json.loads(_records(runs_dir)[-1].read_text())
    assert newest["run_id"] != record["run_id"] and newest["rounds"] == 1
    again = _report(folder, study, uri, "report-second")
    assert newest["run_id"] in again and "1 round(s)" in again
    assert record["run_id"] not in again
    assert _fingerprint(runs_dir) == before_files


def test_measure_bad_input_exits_2_with_one_line(finished, tmp_path, capsys):
    folder, study, uri = finished
    common = ("--tracking-uri", uri)
    cases = [
        ((str(study), "--device", "gpu0"), "--device 'gpu0': unknown device; allowed: auto, cpu"),
        ((str(study), "--rounds", "0"), "--rounds 0: must be at least 1"),
        ((str(study), "--runs-dir", str(tmp_path / "empty")), "no finished cell"),
        ((str(folder / "nope.yaml"),), "nope.yaml"),
        ((str(write_study(tmp_path, "never-run", rows=ROWS)),), "never launched"),
    ]
    for args, message in cases:
        assert main(["measure", *args, *common]) == 2, args
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (args, err)

    import torch

    if not torch.cuda.is_available():  # the device is checked where the measuring runs
        no_gpu = _measure(folder, study, uri, "--device", "cuda:0")
        assert no_gpu.returncode == 2, no_gpu.stderr[-2000:]
        assert "no CUDA GPU is visible" in no_gpu.stderr and "Traceback" not in no_gpu.stderr


def test_measure_as_one_slurm_job(finished, slurm_cluster):
    folder, study, uri = finished
    before = _fingerprint(folder / "runs")
    args = ("--backend", "slurm", "--slurm-profile", slurm_cluster, "--device", "cpu")
    done = _measure(folder, study, uri, *args, "--rounds", "1")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "submitted SLURM job" in done.stdout
    record = latest_measurement(Tracker(uri), "measured")
    assert record is not None and record["backend"] == "slurm"
    assert set(record["rows"]) == {"baseline", "aspp"}
    assert _fingerprint(folder / "runs") == before


def test_measure_as_one_ray_task(finished, ray_address):
    folder, study, uri = finished
    args = ("--backend", "ray", "--ray-address", ray_address, "--device", "cpu")
    done = _measure(folder, study, uri, *args, "--rounds", "1")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    record = latest_measurement(Tracker(uri), "measured")
    assert record is not None and record["backend"] == "ray"
    assert set(record["rows"]) == {"baseline", "aspp"}


def test_the_measure_command_imports_no_torch():
    modules = ("d2bench.commands.measure", "d2bench.launch.measure_backends",
               "d2bench.launch.measure_plan", "d2bench.launch.measure_job",
               "d2bench.tracking.measurements", "d2bench.report.measurement")  # fmt: skip
    code = f"import sys\nfor m in {modules!r}: __import__(m)\nsys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_evaluated_checkpoint_is_the_named_one_else_the_newest(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for name in ("ckpt-e0001-b000009.pt", "ckpt-e0002-b000000.pt", "ckpt-e0001-b000010.pt"):
        (folder / name).write_bytes(b"x")
    assert evaluated_checkpoint(tmp_path, {}) == folder / "ckpt-e0002-b000000.pt"
    (folder / "best.pt").write_bytes(b"x")
    chosen = evaluated_checkpoint(tmp_path, {"checkpoint": "checkpoints/best.pt"})
    assert chosen == folder / "best.pt"
    assert evaluated_checkpoint(tmp_path / "untrained", {}) is None


def _layout() -> TableLayout:
    rows = (
        LayoutRow("A", {"cell_key": ("ka0", "ka1")}),
        LayoutRow("B", {"cell_key": ("kb0",)}),
    )
    return TableLayout("t", "T", "Row", (JF, FPS, MEM), rows, show_paper=False)


def test_table_fps_from_the_measurement_else_in_run_labelled():
    frame = pd.DataFrame(
        [
            {"run_id": "a0", "cell_key": "ka0", "status": "FINISHED", "variant": "baseline",
             "jf_mean": 0.5, "fps": 100.0, "peak_rss_gb": 9.0},
            {"run_id": "a1", "cell_key": "ka1", "status": "FINISHED", "variant": "baseline",
             "jf_mean": 0.6, "fps": 300.0, "peak_rss_gb": 9.0},
            {"run_id": "b0", "cell_key": "kb0", "status": "FINISHED", "variant": "aspp",
             "jf_mean": 0.7, "fps": 50.0, "peak_rss_gb": 9.0},
        ]
    )  # fmt: skip
    in_run = build_table(frame, _layout())
    assert in_run.rows[0].cells[1].mean == pytest.approx(200.0)
    assert "in-run figures" in in_run.caption and "not comparable" in in_run.caption

    record = {
        "run_id": "m1", "device": "cuda:0", "device_name": "Test GPU", "rounds": 3,
        "finished_utc": "2026-01-01T00:00:00+00:00",
        "rows": {
            "a": {"row_keys": ["ka0", "ka1"], "memory_source": "mem_alloc_gb",
                  "rounds": [{"fps": f, "memory_gb": 1.5} for f in (10.0, 11.0, 12.0)]},
        },
    }  # fmt: skip
    table = build_table(frame, _layout(), measurement=parse_measurement(record))
    fps_a, mem_a = table.rows[0].cells[1], table.rows[0].cells[2]
    assert (fps_a.mean, fps_a.std, fps_a.n) == (pytest.approx(11.0), pytest.approx(1.0), 3)
    assert fps_a.p_value is None and mem_a.mean == pytest.approx(1.5)
    assert table.rows[1].cells[1].mean is None  # not in the measurement: no in-run fallback
    assert "on cuda:0 (Test GPU)" in table.caption and "3 round(s)" in table.caption
    assert "in-run" not in table.caption
    assert table.sources[2] == "mem_alloc_gb"
