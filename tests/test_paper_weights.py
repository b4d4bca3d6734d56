"""No silent random backbone: the paper studies need D2BENCH_CSN_WEIGHTS, or an explicit none.

``studies/paper-base.yaml`` reads the weights as ``${D2BENCH_CSN_WEIGHTS:?hint}``: unset, every
command on a study that keeps the base's weights stops before anything is scheduled or written,
naming the variable and the way out; ``weights: none`` in the study (or the variable set to
``none``) runs from random weights on purpose; a path that does not exist keeps its own error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from study_helpers import TINY_BASE, TINY_SYNTH

from d2bench.cli import main
from d2bench.study import StudyError, load_study
from d2bench.study.interpolate import InterpolationError, interpolate
from d2bench.tracking import Tracker

REPO = Path(__file__).resolve().parents[1]
VARIABLE = "D2BENCH_CSN_WEIGHTS"


def _paper_study(folder: Path, weights: str | None, data_root: str) -> Path:
    """One tiny row extending the shipped ``paper-base.yaml``; ``weights`` None keeps the base's."""
    shutil.copy(REPO / "studies" / "paper-base.yaml", folder / "paper-base.yaml")
    model: dict[str, Any] = {"backbone": "tiny", "tiny_width": 4, "decoder_channels": 8}
    if weights is not None:
        model["weights"] = weights
    base = {**TINY_BASE, "model": model, "data": {**TINY_BASE["data"], "root": data_root}}
    base["infer"] = {**TINY_BASE["infer"], "save_maps_for": None}
    spec = {
        "extends": "paper-base.yaml",
        "name": "paper-weights",
        "synthetic_data": TINY_SYNTH,
        "base": base,
        "rows": [{"name": "baseline", "model": {"variant": "baseline"}}],
        "seeds": [0],
        "measure": ["jf"],
        "resources": {"gpus": 0, "cpus": 1, "memory_gb": 2, "time_min": 10},
        "backend": {"name": "local"},
        "runs_dir": str(folder / "runs"),
    }
    path = folder / "paper-weights.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_the_shipped_paper_studies_refuse_an_unset_weights_variable() -> None:
    for name in ("table1", "table2"):
        with pytest.raises(StudyError) as refused:
            load_study(REPO / "studies" / f"{name}.yaml", environ={"DAVIS_ROOT": "/data"})
        message = str(refused.value)
        assert "base.model.weights" in message and f"{VARIABLE} is not set" in message
        assert "to none" in message and "weights: none" in message
    # The one opt-out by variable; the studies' other content is as before.
    table1 = load_study(REPO / "studies" / "table1.yaml", environ={VARIABLE: "none"})
    assert table1.row_config("d2conv3d_iv").model.weights == "none"


@pytest.mark.parametrize("args", [("run",), ("run", "--dry-run"), ("plan",)])
def test_unset_weights_variable_exits_2_before_scheduling(
    args: tuple[str, ...],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    path = _paper_study(tmp_path, weights=None, data_root=str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(VARIABLE, raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = _files(tmp_path)

    command, *options = args
    assert main([command, str(path), *options]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"d2bench {command}: error: ")
    assert f"base.model.weights: environment variable {VARIABLE} is not set" in err
    assert "weights: none" in err and "to none" in err
    assert _files(tmp_path) == before  # nothing scheduled, no store, no runs folder


def test_weights_set_to_a_missing_file_keeps_its_own_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    path = _paper_study(tmp_path, weights=None, data_root=str(tmp_path / "data"))
    missing = tmp_path / "weights" / "csn152.pth"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(VARIABLE, str(missing))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = _files(tmp_path)
    for args in (["run", str(path), "--dry-run"], ["run", str(path)]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
        assert f"weights file {missing} does not exist" in err and VARIABLE in err, err
    assert _files(tmp_path) == before


def test_the_variable_set_to_none_opts_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    path = _paper_study(tmp_path, weights=None, data_root=str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(VARIABLE, "none")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")
    assert main(["run", str(path), "--dry-run"]) == 0, capsys.readouterr().err
    assert "would schedule 1 cell(s)" in capsys.readouterr().out


@pytest.mark.slow
def test_explicit_weights_none_in_the_study_runs_without_the_variable(
    tmp_path: Path, synthetic_data: Path
) -> None:
    path = _paper_study(tmp_path, weights="none", data_root=str(synthetic_data))
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    env = {key: value for key, value in os.environ.items() if key != VARIABLE}
    env.pop("PYTEST_CURRENT_TEST", None)
    done = subprocess.run(
        [sys.executable, "-m", "d2bench.cli", "run", str(path), "--tracking-uri", uri],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    runs = Tracker(uri).study_runs("paper-weights")
    assert list(runs["status"]) == ["FINISHED"]
    assert 0.0 <= float(runs["jf_mean"].iloc[0]) <= 1.0


def test_the_required_form_resolves_or_names_the_variable_and_hint() -> None:
    tree = {"model": {"weights": "${W_VAR:?point it to the file}"}}
    assert interpolate(tree, {"W_VAR": "/w.pth"}) == {"model": {"weights": "/w.pth"}}
    for environ in ({}, {"W_VAR": ""}):
        with pytest.raises(InterpolationError) as refused:
            interpolate(tree, environ)
        expected = "model.weights: environment variable W_VAR is not set: point it to the file"
        assert str(refused.value) == expected
    with pytest.raises(InterpolationError, match=r"W_VAR is not set \(set it"):
        interpolate({"a": "${W_VAR:?}"}, {})  # no hint: the generic line
