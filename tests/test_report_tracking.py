"""End to end: runs of known values in a real SQLite MLflow store, then ``d2bench report``."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("mlflow")

from d2bench.cli import main
from d2bench.core.contract import PER_SEQUENCE_TABLE
from d2bench.core.per_sequence import global_jf, records_from_table
from d2bench.study import expand_cells, load_study
from d2bench.tracking import Tracker

STUDY = """
name: mini
description: Three Table 1 rows and two Table 2 rows on synthetic data.
reference: table1
synthetic_data: true
base:
  data: {root: data/synthetic-davis, train_size: [64, 96]}
  model: {backbone: tiny}
  train: {epochs: 2, precision: fp32}
  infer: {precision: fp32, gap: 5}
  device: cpu
seeds: [0, 1]
rows:
  - {name: baseline, model: {variant: baseline}}
  - {name: dcnv2, model: {variant: dcnv2}}
  - {name: iv, model: {variant: d2conv3d_iv}}
  - {name: iv-relu, table: table2, model: {variant: d2conv3d_iv, activation: relu}}
  - {name: iv-none, table: table2, model: {variant: d2conv3d_iv, activation: none}}
"""

#: J&F (fraction) per row and seed; rows absent here fail.
JF = {"baseline": [0.60, 0.62], "iv": [0.70, 0.71], "iv-relu": [0.66, 0.68]}
#: Evaluation sequences of every cell's eval.json (enough for a bootstrap interval).
SEQUENCES = 12


def _write_eval(path: Path, jf: float, salt: int) -> None:
    """An eval.json whose sequences (one object each, J = F) average exactly to ``jf``."""
    spread = np.linspace(-0.1, 0.1, SEQUENCES)
    noise = 0.004 * np.sin(np.arange(SEQUENCES) * (1 + salt))
    values = jf + spread + noise - noise.mean()
    per_object = {
        f"seq{q:02d}_1": {"sequence": f"seq{q:02d}", "object": 1, "J-Mean": v, "F-Mean": v}
        for q, v in enumerate(values.tolist())
    }
    path.write_text(json.dumps({"per_object": per_object, "global": {"J&F-Mean": jf}}))


def _write_maps(path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez_compressed(
        path,
        **{
            "decoder.rf2.0/dilation": 1 + rng.random((2, 3, 4, 6, 8), dtype=np.float32),
            "decoder.rf2.0/modulation_mean": rng.random((2, 4, 6, 8), dtype=np.float32),
            "__metadata__": np.asarray(json.dumps({"sequence": "blob-0"})),
        },
    )


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    study_path = root / "mini.yaml"
    study_path.write_text(STUDY)
    study = load_study(study_path)
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    tracker = Tracker(uri)
    parent = tracker.ensure_study_run(
        study.name, study.text, "local", {"cpu_model": "Test CPU", "git": "abc"}
    )
    for cell in expand_cells(study):
        if cell.row == "iv-none":
            continue  # never launched: "missing"
        cell_dir = root / "cells" / cell.key
        cell_dir.mkdir(parents=True, exist_ok=True)
        run_id = tracker.create_cell_run(study.name, parent, cell, "local", cell_dir, "abc")
        logger = tracker.cell_logger(run_id)
        if cell.row not in JF:
            logger.failed("Traceback (most recent call last):\nRuntimeError: boom", cell_dir)
            continue
        jf = JF[cell.row][cell.seed]
        for step in range(6):
            logger.log_metrics({"train/loss": 1.0 / (1 + step) + jf / 10}, step)
        logger.log_metrics({"epoch/loss": 0.5 + jf / 10}, 0)
        logger.log_metrics({"epoch/loss": 0.3 + jf / 10}, 1)
        metrics = {"jf_mean": jf, "fps": 2.0 + cell.seed, "peak_rss_gb": 1.5}
        if cell.config.model.variant != "baseline":
            metrics |= {f"oob_{k}": 0.1 for k in ("full", "partial")}
            metrics |= {f"oob_{k}_{a}": 0.05 for k in ("full", "partial") for a in "tyx"}
        (cell_dir / "result.json").write_text(
            json.dumps({"metrics": metrics, "environment": {"cpu_model": "Test CPU"}})
        )
        if cell.row == "iv":
            _write_maps(cell_dir / "maps.npz")
        _write_eval(cell_dir / "eval.json", jf, salt=len(cell.row) + cell.seed)
        logger.finished({"metrics": metrics}, cell_dir)
    return study_path, uri, root


def _table_rows(markdown: str) -> dict[str, list[str]]:
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("| ") and "(ours)" not in line:
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            rows[cells[0]] = cells[1:]
    return rows


def test_report_end_to_end_from_a_sqlite_store(tracked, capsys):
    study_path, uri, root = tracked
    out = root / "reports" / "mini"
    started = time.perf_counter()
    assert main(["report", str(study_path), "--out", str(out), "--tracking-uri", uri]) == 0
    elapsed = time.perf_counter() - started
    assert str(out) in capsys.readouterr().out
    assert elapsed < 60

    table1 = _table_rows((out / "table1.md").read_text())
    assert table1["Revised Baseline"][1] == "61.0 ± 1.4 (n=2)"
    # J&F is marked by the paired comparison (its own column), not by Welch's dagger
    assert table1["(IV) S+T (\\|D\\|=3)"][1] == "**70.5 ± 0.7** (n=2)"
    assert table1["(IV) S+T (\\|D\\|=3)"][4].startswith("+9.5 [+")
    assert table1["(IV) S+T (\\|D\\|=3)"][4].endswith("] ▲")
    assert table1["Revised Baseline"][4] == "reference"
    assert "ΔJ&F final vs Revised Baseline [95% CI, Holm]" in (out / "table1.md").read_text()
    assert table1["DCNv2"][1] == "failed"
    assert table1["ASPP"][1] == "not in study"
    table2 = _table_rows((out / "table2.md").read_text())
    assert table2["None"][0] == "missing"
    # Table 2 compares with its own 1 + elu row (70.5), not with Table 1's baseline.
    assert table2["ReLU"][3].startswith("−3.5 [−") and table2["ReLU"][3].endswith("▼")
    assert table2["1 + elu"][3] == "reference"
    assert "Baseline" not in (out / "table2.md").read_text()
    assert table2["ReLU"][0] == "67.0 ± 1.4 (n=2)"
    assert table2["1 + elu"][0].startswith("**70.5 ± 0.7**")  # the same cells as (IV)
    caption = (out / "table1.md").read_text().split("\n\n")[-1]
    for fact in ("train 2017/train", "val 2016/val", "clip gap 5", "fp32", "2 epochs"):
        assert fact in caption
    assert "seeds 0, 1" in caption and "Test CPU" in caption

    csv = pd.read_csv(out / "table1.csv")
    iv = csv[csv["label"] == "(IV) S+T (|D|=3)"].iloc[0]
    assert iv["jf_ref_mark"] == "better" and iv["jf_ref_sequences"] == SEQUENCES
    assert csv.loc[csv["label"] == "Revised Baseline", "mem_mean"].item() == pytest.approx(1.5)
    for stem in ("oob", "jf_fps", "training_curves", "maps"):
        for suffix in ("png", "pdf"):
            assert (out / "figures" / f"{stem}.{suffix}").stat().st_size > 1000

    page = (out / "README.md").read_text()
    assert "## Table 1" in page and "## Table 2" in page
    assert "![Out-of-bounds sampling" in page and "figures/maps.png" in page
    assert "name: mini" in page  # the spec
    assert "| dcnv2 | 1 | FAILED | – | – |" in page  # every run listed, failed ones too
    assert "Maps from run" in page


def test_report_links_runs_to_the_ui(tracked):
    study_path, uri, root = tracked
    out = root / "reports" / "linked"
    ui = "http://127.0.0.1:5000"
    assert main(["report", str(study_path), "--out", str(out), "--tracking-uri", uri,
                 "--ui-url", ui]) == 0  # fmt: skip
    page = (out / "README.md").read_text()
    run_ids = Tracker(uri).study_runs("mini")["run_id"]
    assert len(run_ids) == 8
    for run_id in run_ids:
        assert re.search(rf"\({re.escape(ui)}/#/experiments/\d+/runs/{run_id}\)", page)


def test_report_imports_no_torch(tracked):
    study_path, uri, root = tracked
    code = (
        "import sys; from d2bench.cli import main; "
        f"rc = main(['report', {str(study_path)!r}, '--out', {str(root / 'r3')!r}, "
        f"'--tracking-uri', {uri!r}]); "
        "sys.exit(rc or (3 if 'torch' in sys.modules else 0))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_bad_study_is_a_usage_error(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbase: {}\nrows: []\n")
    assert main(["report", str(bad), "--tracking-uri", f"sqlite:///{tmp_path}/db"]) == 2
    assert "rows" in capsys.readouterr().err


def test_each_finished_cell_logs_its_per_sequence_table(tracked, tmp_path):
    _, uri, _ = tracked
    tracker = Tracker(uri)
    runs = tracker.study_runs("mini")
    finished = runs[runs["status"] == "FINISHED"]
    assert len(finished) == 6
    for _, run in finished.iterrows():
        path = tracker.download_artifact(
            run["run_id"], PER_SEQUENCE_TABLE, tmp_path / run["run_id"]
        )
        records = records_from_table(json.loads(path.read_text()))
        assert len(records) == SEQUENCES and {r["checkpoint"] for r in records} == {"final"}
        assert global_jf(records) == pytest.approx(run["jf_mean"], abs=1e-9)
