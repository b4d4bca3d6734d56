"""Which checkpoint is evaluated: per-epoch validation keeps the best weights beside the last,
a cell records the J&F of both, the best survives a resume, ``select`` picks the tables' column
without entering the cell key, and the report says which checkpoint each column is."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from study_helpers import TINY_BASE, d2bench, write_study

from d2bench.core.config import parse_cell_config
from d2bench.core.contract import PER_SEQUENCE_TABLE
from d2bench.core.per_sequence import global_jf, records_from_table
from d2bench.data import SynthSpec, TrainClips, ensure_synthetic_davis
from d2bench.engine.checkpoint import list_best, list_checkpoints, load_checkpoint
from d2bench.engine.journal import MetricsJournal
from d2bench.engine.signals import CellInterrupted
from d2bench.engine.trainer import Trainer
from d2bench.report.layout import table1_layout, with_checkpoints
from d2bench.report.render import to_markdown
from d2bench.report.table import build_table
from d2bench.runner.cell import (
    BEST_VAL_EVAL_FILE,
    CHECKPOINT_DIR,
    METRICS_FILE,
    build_seeded_model,
    run_cell,
)
from d2bench.runner.validation import VAL_JF, Validator
from d2bench.study import StudyError, expand_cells, load_study
from d2bench.tracking import Tracker

SPEC = SynthSpec(
    sequences=3, val_sequences=1, frames=8, frame_jitter=0, height=32, width=48, distractors=0
)
EPOCHS = 5
STEPS = 4


@pytest.fixture
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_synthetic_davis(tmp_path_factory.mktemp("select") / "davis", SPEC)


def _config(root: Path):
    """A learning rate high enough that the validation J&F peaks early and falls after (seed 1:
    epoch 1 scores best of 5 by far), so the best and the final checkpoints differ."""
    return parse_cell_config(
        {
            "model": {"backbone": "tiny", "tiny_width": 4, "decoder_channels": 8,
                      "variant": "baseline", "weights": "none"},
            "data": {"root": str(root), "train_size": None, "num_workers": 0, "clip_len": 4,
                     "window": 2, "pad_multiple": 32},
            "train": {"epochs": EPOCHS, "batch_size": 1, "lr": 1e-2, "precision": "fp32",
                      "channels_last": False, "gpus": 0, "max_steps_per_epoch": STEPS,
                      "validate_every_epochs": 1, "seed": 1},
            "infer": {"clip_len": 4, "gap": 4, "precision": "fp32"},
            "measure": {"jf": True, "fps": False, "memory": False, "oob": False},
            "device": "cpu",
        }
    )  # fmt: skip


def _val_curve(cell_dir: Path) -> list[float]:
    events = [json.loads(line) for line in (cell_dir / METRICS_FILE).read_text().splitlines()]
    return [event[VAL_JF] for event in events if VAL_JF in event]


def test_best_val_evaluates_the_best_epochs_weights_and_final_the_last(
    data_root: Path, tmp_path: Path, one_thread: None
) -> None:
    cell_dir = tmp_path / "cell"
    metrics = run_cell(_config(data_root), cell_dir, show_progress=False)["metrics"]

    curve = _val_curve(cell_dir)
    assert len(curve) == EPOCHS  # validated once per epoch
    best_epoch = curve.index(max(curve)) + 1
    assert best_epoch < EPOCHS and max(curve) > curve[-1], f"curve is monotone here: {curve}"
    assert metrics["best_val/epoch"] == best_epoch
    # Validation runs the final evaluation's inference and J&F on the same split, so each
    # checkpoint's final J&F equals its validation J&F exactly: these equalities say which
    # weights each number was computed from.
    assert metrics["best_val/jf_mean"] == curve[best_epoch - 1]
    assert metrics["jf_mean"] == curve[-1]
    saved = json.loads((cell_dir / BEST_VAL_EVAL_FILE).read_text())
    assert saved["global"]["J&F-Mean"] == metrics["best_val/jf_mean"]

    folder = cell_dir / CHECKPOINT_DIR
    assert [path.name for path in list_best(folder)] == [f"best-e{best_epoch:04d}.pt"]
    assert list_checkpoints(folder)[-1].name == f"ckpt-e{EPOCHS:04d}-b000000.pt"
    assert not set(list_best(folder)) & set(list_checkpoints(folder))
    best = load_checkpoint(list_best(folder)[0])
    final = load_checkpoint(list_checkpoints(folder)[-1])
    assert best["epoch"] == best_epoch
    assert any(not torch.equal(best["model"][k], final["model"][k]) for k in best["model"])


class _SignalAtFetch(torch.utils.data.Dataset):
    """The dataset, sending ``signum`` to this process when item number ``at`` is fetched."""

    def __init__(self, dataset: TrainClips, at: int, signum: int) -> None:
        self.dataset, self.at, self.signum, self.fetched = dataset, at, signum, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        self.fetched += 1
        if self.fetched == self.at:
            os.kill(os.getpid(), self.signum)
        return self.dataset[index]


def _trainer(config, dataset, folder: Path) -> Trainer:
    validator = Validator(config, folder / "validation", torch.device("cpu"))
    return Trainer(config, build_seeded_model(config), dataset, folder / CHECKPOINT_DIR,
                   torch.device("cpu"), journal=MetricsJournal(folder / METRICS_FILE),
                   show_progress=False, validator=validator)  # fmt: skip


def test_the_best_checkpoint_survives_a_resume(
    data_root: Path, tmp_path: Path, one_thread: None
) -> None:
    config = _config(data_root)
    clips = TrainClips(data_root, "2017/train", clip_len=4, window=2, size=None, seed=1)
    straight = _trainer(config, clips, tmp_path / "straight").fit()
    assert straight.best_val is not None and straight.best_val["epoch"] < EPOCHS - 1

    folder = tmp_path / "resumed"
    stopping = _SignalAtFetch(clips, at=(EPOCHS - 2) * STEPS + 2, signum=signal.SIGUSR2)
    with pytest.raises(CellInterrupted):
        _trainer(config, stopping, folder).fit()  # stopped mid-way through epoch 4
    # A lost attempt's best, which no checkpoint names, must not be taken for the best.
    stale = folder / CHECKPOINT_DIR / f"best-e{EPOCHS - 1:04d}.pt"
    torch.save({"model": {}, "epoch": EPOCHS - 1}, stale)
    resumed = _trainer(config, clips, folder).fit()

    assert resumed.best_val == straight.best_val
    names = [path.name for path in list_best(folder / CHECKPOINT_DIR)]
    assert names == [straight.best_val["file"]]
    ours = load_checkpoint(folder / CHECKPOINT_DIR / names[0])["model"]
    theirs = load_checkpoint(tmp_path / "straight" / CHECKPOINT_DIR / names[0])["model"]
    assert all(torch.equal(ours[name], theirs[name]) for name in theirs)
    assert _val_curve(folder) == _val_curve(tmp_path / "straight")  # each epoch once


def _validating_study(folder: Path, name: str, select: str) -> Path:
    base = json.loads(json.dumps(TINY_BASE))
    base["train"].update(epochs=2, validate_every_epochs=1)
    rows = [{"name": "baseline", "table": "table1", "model": {"variant": "baseline"}}]
    return write_study(folder, name, base=base, select=select, rows=rows)


def test_select_best_val_needs_validation_and_stays_out_of_the_cell_key(
    tmp_path: Path, synthetic_data: Path
) -> None:
    best = load_study(_validating_study(tmp_path, "sel", "best-val"))
    final = load_study(_validating_study(tmp_path, "sel", "final"))
    assert [c.key for c in expand_cells(best)] == [c.key for c in expand_cells(final)]

    path = write_study(tmp_path, "unvalidated", select="best-val")
    with pytest.raises(StudyError, match=r"rows\[0\]\.train\.validate_every_epochs"):
        load_study(path)
    assert d2bench("plan", str(path), cwd=tmp_path).returncode == 2


def test_a_study_reports_both_checkpoints_and_switching_select_trains_nothing(
    tmp_path: Path, synthetic_data: Path
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    study = _validating_study(tmp_path, "sel-run", "best-val")
    d2bench("run", str(study), "--tracking-uri", uri, cwd=tmp_path, check=True, timeout=600)
    tracker = Tracker(uri)
    runs = tracker.study_runs("sel-run")
    assert set(runs["status"]) == {"FINISHED"}
    curve = tracker.metric_history(list(runs["run_id"]), VAL_JF)
    assert sorted(curve["step"]) == [1, 2]  # the validation curve, one point per epoch
    assert runs["best_val/jf_mean"].notna().all() and runs["jf_mean"].notna().all()
    assert runs["best_val/epoch"].between(1, 2).all()
    assert (runs["best_val/jf_mean"] >= runs["jf_mean"]).all()  # the best includes the last
    run = runs.iloc[0]  # its J&F per sequence, both checkpoints, as an MLflow table
    table = tracker.download_artifact(run["run_id"], PER_SEQUENCE_TABLE, tmp_path / "table")
    records = records_from_table(json.loads(table.read_text()))
    for checkpoint, metric in (("final", "jf_mean"), ("best_val", "best_val/jf_mean")):
        mine = [r for r in records if r["checkpoint"] == checkpoint]
        assert len(mine) == 1  # the tiny set's one validation sequence
        assert global_jf(mine) == pytest.approx(run[metric], abs=1e-9)

    out = tmp_path / "report-best"
    d2bench("report", str(study), "--tracking-uri", uri, "--out", str(out), cwd=tmp_path,
            check=True)  # fmt: skip
    table = (out / "table1.md").read_text()
    header = table.splitlines()[0]
    assert header.index("J&F best-val (ours)") < header.index("| J&F final |")
    assert "ΔJ&F best-val vs Revised Baseline [95% CI, Holm]" in header
    assert "| reference |" in table.splitlines()[2]  # the baseline row is the reference
    assert "selected on the evaluation set" in table

    switched = _validating_study(tmp_path, "sel-run", "final")
    again = d2bench("run", str(switched), "--tracking-uri", uri, cwd=tmp_path, check=True)
    assert "nothing to do" in again.stdout
    out = tmp_path / "report-final"
    d2bench("report", str(switched), "--tracking-uri", uri, "--out", str(out), cwd=tmp_path,
            check=True)  # fmt: skip
    header = (out / "table1.md").read_text().splitlines()[0]
    assert header.index("J&F final (ours)") < header.index("| J&F best-val |")


def test_the_paper_table_puts_the_selected_checkpoint_beside_the_papers_number() -> None:
    frame = pd.DataFrame(
        [{"run_id": "r0", "variant": "baseline", "status": "FINISHED", "jf_mean": 0.80,
          "best_val/jf_mean": 0.83}]
    )  # fmt: skip
    layout = with_checkpoints(table1_layout(), "best-val", both=True)
    table = build_table(frame, layout)
    baseline = table.rows[0]
    by_name = dict(zip((c.name for c in table.columns), baseline.cells, strict=True))
    assert by_name["jf"].mean == pytest.approx(83.0) and by_name["jf"].paper == 83.5
    assert by_name["jf_final"].mean == pytest.approx(80.0) and by_name["jf_final"].paper is None
    text = to_markdown(table)
    assert "| J&F best-val (ours) | J&F best-val (paper) | Δ | J&F final |" in text
    assert "selected on the evaluation set" in table.caption
    only_final = with_checkpoints(table1_layout(), "final", both=False)
    assert [c.header for c in only_final.columns if c.name.startswith("jf")] == ["J&F final"]
    assert "last epoch's weights" in build_table(frame, only_final).caption


def test_smoke_and_paper_studies_validate_every_epoch_and_select_best_val() -> None:
    repo = Path(__file__).resolve().parents[1]
    for name in ("smoke", "table1", "table2"):
        study = load_study(
            repo / "studies" / f"{name}.yaml", environ={"D2BENCH_CSN_WEIGHTS": "none"}
        )
        assert study.select == "best-val" and study.validates
        assert study.row_config(study.rows[0]).train.validate_every_epochs == 1
    smoke = yaml.safe_load((repo / "studies" / "smoke.yaml").read_text())
    assert smoke["base"]["train"]["epochs"] >= 2  # so best and final can differ in the demo
