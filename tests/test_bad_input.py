"""Malformed studies and command lines: exit 2, one line naming the key and what is allowed.

Each case is a mistake a user makes (a typo, a value no one means, a file that is not text,
an option for another backend). Every one must be refused before anything is written: no
``mlruns/``, no ``runs/``, no generated data, and never a traceback. Most cases run through the
CLI in-process (fast); a few go through a real ``d2bench`` process for plan, run and dry run.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from study_helpers import d2bench

from d2bench.cli import main

Tree = dict[str, Any]


def _valid_tree(root: Path) -> Tree:
    return {
        "name": "bad-input",
        "base": {"model": {"backbone": "tiny"}, "data": {"root": str(root / "data")}},
        "rows": [
            {"name": "baseline", "model": {"variant": "baseline"}},
            {"name": "dcnv2", "model": {"variant": "dcnv2"}},
        ],
        "seeds": [0, 1],
    }


def _at(tree: Tree, dotted: str, value: Any) -> None:
    """Set ``a.b.0.c`` in the tree, creating mappings on the way."""
    node: Any = tree
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    last = parts[-1]
    node[int(last) if last.isdigit() else last] = value


@dataclass(frozen=True)
class Case:
    id: str
    #: What the user wrote: a change to the valid tree, or the whole file's bytes.
    change: Callable[[Tree, Path], None] | None = None
    raw: Callable[[Path], bytes] | None = None
    #: Texts the one-line message must hold: the key path, then the allowed values or bound.
    expected: tuple[str, ...] = ()
    args: tuple[str, ...] = ("run", "--dry-run")


def _set(dotted: str, value: Any) -> Callable[[Tree, Path], None]:
    return lambda tree, _: _at(tree, dotted, value)


def _text(text: str) -> Callable[[Path], bytes]:
    return lambda _: text.encode()


def _valid_yaml_with(replace: str, by: str) -> Callable[[Path], bytes]:
    def make(root: Path) -> bytes:
        text = yaml.safe_dump(_valid_tree(root), sort_keys=False)
        assert replace in text
        return text.replace(replace, by, 1).encode()

    return make


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02"
ALLOWED_TOP = "allowed: name, description, reference, base, rows"

CASES: list[Case] = [
    # unknown keys: the allowed keys where the key stands, and the closest one
    Case("top-seed-for-seeds", _set("seed", [0]), expected=("seed: unknown key",
         "did you mean 'seeds'?", ALLOWED_TOP)),
    Case("base-train-lrr", _set("base.train.lrr", 1e-4), expected=("base.train.lrr",
         "did you mean 'lr'?", "allowed: epochs, batch_size, lr")),
    Case("base-section-typo", _set("base.modle", {}), expected=("base.modle",
         "did you mean 'model'?", "allowed: model, data, train")),
    Case("row-train-epoch", _set("rows.0.train", {"epoch": 3}), expected=(
         "rows[0].train.epoch", "did you mean 'epochs'?", "allowed: epochs")),
    Case("row-field-labl", _set("rows.1.labl", "x"), expected=("rows[1].labl",
         "did you mean 'label'?", "allowed: name, table, label, model")),
    Case("resources-gpu", _set("resources.gpu", 1), expected=("resources.gpu",
         "did you mean 'gpus'?", "allowed: gpus, cpus, memory_gb, time_min")),
    Case("backend-profile", _set("backend.profile", "x"), expected=("backend.profile",
         "did you mean 'slurm_profile'?", "allowed: name, slurm_profile")),
    Case("axis-train-epoch", _set("axes", {"train.epoch": [1, 2]}), expected=(
         "axes.train.epoch", "did you mean 'train.epochs'?", "section one of model, data")),
    Case("synth-sequence", _set("synthetic_data", {"sequence": 4}), expected=(
         "synthetic_data.sequence", "did you mean 'sequences'?", "allowed: sequences")),
    # values no one means: strict ints and bools, finite floats, bounds said in the message
    Case("epochs-1e12", _set("base.train.epochs", 1.0e12), expected=(
         "base.train.epochs", "must be an integer", "got 1000000000000.0")),
    Case("epochs-true", _set("rows.0.train", {"epochs": True}), expected=(
         "rows[0].train.epochs", "must be an integer", "got True")),
    Case("epochs-past-bound", _set("base.train.epochs", 100_000), expected=(
         "base.train.epochs", "must be ≥ 0 and ≤ 10000")),
    Case("lr-infinite", _set("base.train.lr", float("inf")), expected=(
         "base.train.lr", "must be a finite number")),
    Case("lr-nan", _set("rows.1.train", {"lr": float("nan")}), expected=(
         "rows[1].train.lr", "must be a finite number")),
    Case("lr-boolean", _set("base.train.lr", True), expected=(
         "base.train.lr", "must be a number, not true")),
    Case("lr-past-bound", _set("base.train.lr", 100.0), expected=(
         "base.train.lr", "must be > 0 and ≤ 10")),
    Case("clip-grad-infinite", _set("base.train.clip_grad_norm", float("-inf")), expected=(
         "base.train.clip_grad_norm", "must be a finite number")),
    Case("threshold-one", _set("base.infer.threshold", 1.0), expected=(
         "base.infer.threshold", "must be > 0 and < 1")),
    Case("batch-size-huge", _set("base.train.batch_size", 10**6), expected=(
         "base.train.batch_size", "≤ 4096")),
    Case("clip-len-huge", _set("base.data.clip_len", 10_000), expected=(
         "base.data.clip_len", "must be ≥ 1 and ≤ 256")),
    Case("num-workers-negative", _set("base.data.num_workers", -1), expected=(
         "base.data.num_workers", "must be ≥ 0 and ≤ 256")),
    Case("train-size-zero", _set("base.data.train_size", [0, 64]), expected=(
         "base.data.train_size.0", "must be ≥ 1")),
    Case("measure-flag-int", _set("base.measure.jf", 1), expected=(
         "base.measure.jf", "must be true or false")),
    Case("seed-negative", _set("seeds", [0, -1]), expected=(
         "seeds.1", "must be ≥ 0 and ≤ 2**63-1")),
    Case("seed-past-64-bits", _set("seeds", [2**64]), expected=(
         "seeds.0", "must be ≥ 0 and ≤ 2**63-1")),
    Case("seed-float", _set("seeds", [1.5]), expected=("seeds.0", "must be an integer")),
    Case("train-seed-past-64-bits", _set("base.train.seed", 2**70), expected=(
         "base.train.seed", "2**63-1")),
    Case("too-many-seeds", _set("seeds", list(range(1001))), expected=(
         "seeds", "at most 1000 items")),
    Case("device-gpu", _set("base.device", "gpu"), expected=(
         "base.device", "unknown device 'gpu'", "allowed: auto, cpu, mps, cuda, cuda:N")),
    Case("device-bad-index", _set("rows.0.device", "cuda:first"), expected=(
         "rows[0].device", "allowed: auto, cpu")),
    Case("memory-infinite", _set("resources.memory_gb", float("inf")), expected=(
         "resources.memory_gb", "must be a finite number")),
    Case("time-past-bound", _set("resources.time_min", 10**6), expected=(
         "resources.time_min", "must be ≥ 1 and ≤ 43200")),
    Case("replace-block-rf4", _set("rows.0.model.replace_blocks", ["rf3", "rf4"]), expected=(
         "rows[0].model.replace_blocks", "unknown decoder block 'rf4'; allowed: rf3, rf2, rf1")),
    Case("max-failures-bool", _set("backend.max_failures", True), expected=(
         "backend.max_failures", "must be an integer")),
    # values that used to validate and crash the run after the plan
    Case("name-too-long", _set("name", "x" * 101), expected=(
         "name", "must be 1 to 100 characters", "got 101")),
    Case("synth-negative-height", _set("synthetic_data", {"height": -5}), expected=(
         "synthetic_data.height", "must be ≥ 16")),
    Case("synth-huge-frames", _set("synthetic_data", {"frames": 10**6}), expected=(
         "synthetic_data.frames", "must be ≤ 1000")),
    Case("synth-float-sequences", _set("synthetic_data", {"sequences": 3.0}), expected=(
         "synthetic_data.sequences", "must be an integer")),
    Case("synth-not-a-mapping", _set("synthetic_data", "yes please"), expected=(
         "synthetic_data", "must be true, false or a mapping of sequences")),
    Case("runs-dir-under-a-file", lambda t, tmp: _at(t, "runs_dir", str(tmp / "blocker" / "r")),
         expected=("runs_dir", "blocker is a file, not a folder")),
    Case("runs-dir-empty", _set("runs_dir", ""), expected=("runs_dir", "at least 1 character")),
    Case("synthetic-root-under-a-file", lambda t, tmp: (
         _at(t, "synthetic_data", True), _at(t, "base.data.root", str(tmp / "blocker" / "d"))),
         expected=("rows[baseline].data.root", "is a file", "synthetic data")),
    # empty data roots, and which variable to set
    Case("data-root-empty-variable", _set("base.data.root", "${D2BENCH_SURELY_UNSET_Y:-}"),
         expected=("base.data.root", "empty", "set D2BENCH_SURELY_UNSET_Y")),
    Case("data-root-blank", _set("rows.0.data", {"root": "  "}), expected=(
         "rows[0].data.root", "must name the data folder")),
    # report tables
    Case("table-tabel1", _set("rows.0.table", "tabel1"), expected=(
         "rows[0].table", "did you mean 'table1'?", "allowed: table1, table2")),
    Case("table-capital", _set("rows.1.table", ["table1", "Table2"]), expected=(
         "rows[1].table", "did you mean 'table2'?", "allowed: table1, table2")),
    Case("table-3", _set("rows.0.table", "table3"), expected=(
         "rows[0].table", "allowed: table1, table2")),
    Case("table-number", _set("rows.0.table", 5), expected=(
         "rows[0].table", "must be a table name", "allowed: table1, table2")),
    # two rows that are one cell
    Case("twin-rows", _set("rows.1.model", {"variant": "baseline"}), expected=(
         "rows[1]", "row 'dcnv2' has the same configuration as row 'baseline' (rows[0])",
         "table: [table1, table2]")),
    Case("twin-rows-by-alias", lambda t, _: t["rows"].append(
         {"name": "again", "label": "x", "model": {"variant": "DCNv2"}}), expected=(
         "rows[2]", "row 'again' has the same configuration as row 'dcnv2'")),
    # files that are not a study
    Case("duplicate-top-key", raw=_valid_yaml_with("name: bad-input\n",
         "name: bad-input\nname: other\n"), expected=(
         "name: duplicate key 'name' (lines 1 and 2)", "write each key once")),
    Case("duplicate-nested-key", raw=_valid_yaml_with("    backbone: tiny\n",
         "    backbone: tiny\n    backbone: csn152\n"), expected=(
         "base.model.backbone: duplicate key 'backbone' (lines 4 and 5)",)),
    Case("png-file", raw=lambda _: PNG, expected=(
         "not a text file (byte 0x89 at offset 0 is not UTF-8)",), args=("plan",)),
    Case("random-bytes", raw=lambda _: bytes(range(256)) * 4, expected=(
         "not a text file",)),
    Case("nul-bytes", raw=_text("name: x\x00\n"), expected=("NUL bytes",)),
    Case("not-valid-yaml", raw=_text("name: [x\nrows: {\n"), expected=(
         "not valid YAML", "line ")),
    # the command line's own mistakes
    Case("unknown-slurm-profile", args=("run", "--backend", "slurm", "--slurm-profile",
         "nowhere"), expected=("--slurm-profile", "no SLURM profile 'nowhere'",
         "known profiles: ")),
    Case("slurm-profile-for-local", args=("run", "--slurm-profile", "test-cluster"),
         expected=("--slurm-profile", "slurm backend only", "--backend slurm")),
    Case("ray-address-for-local", args=("run", "--dry-run", "--ray-address", "auto"),
         expected=("--ray-address", "ray backend only", "--backend ray")),
    Case("ray-address-empty", args=("run", "--backend", "ray", "--ray-address", ""),
         expected=("--ray-address", "is empty", "host:port")),
    Case("detach-for-ray", args=("run", "--backend", "ray", "--detach"), expected=(
         "--detach", "slurm backend only")),
    Case("runs-dir-flag-under-a-file", args=("run", "--runs-dir", "blocker/runs"),
         expected=("--runs-dir", "blocker is a file, not a folder")),
    Case("force-unknown-row", args=("run", "--force", "dcnv3"), expected=(
         "--force", "no row 'dcnv3'", "rows: baseline, dcnv2")),
]  # fmt: skip


def _case(name: str) -> Case:
    return next(case for case in CASES if case.id == name)


def _write_case(case: Case, tmp: Path) -> Path:
    """The study file of a case, in a folder that also holds the data and a stray file."""
    (tmp / "data").mkdir()
    (tmp / "blocker").write_text("a file where a folder is expected")
    path = tmp / "study.yaml"
    if case.raw is not None:
        path.write_bytes(case.raw(tmp))
    else:
        tree = copy.deepcopy(_valid_tree(tmp))
        if case.change is not None:
            case.change(tree, tmp)
        path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def _snapshot(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime for p in folder.rglob("*")}


def _check_refusal(code: int, err: str, case: Case, before: dict, tmp: Path) -> None:
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"d2bench {case.args[0]}: error: "), err
    for text in case.expected:
        assert text in err, f"{text!r} not in: {err}"
    assert _snapshot(tmp) == before, "a refused call wrote files"
    assert not (tmp / "mlruns").exists() and not (tmp / "runs").exists()


def test_there_are_at_least_40_cases_with_distinct_ids() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) >= 40 and len(set(ids)) == len(ids)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_bad_input_is_refused_in_one_line_writing_nothing(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    path = _write_case(case, tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("D2BENCH_SURELY_UNSET_Y", raising=False)
    before = _snapshot(tmp_path)

    command, *options = case.args
    code = main([command, str(path), *options])

    _check_refusal(code, capsys.readouterr().err, case, before, tmp_path)


def test_the_valid_tree_passes_every_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Guards the cases: each is refused because of its own change, not the tree around it."""
    path = _write_case(Case("valid"), tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")
    assert main(["run", str(path), "--dry-run"]) == 0, capsys.readouterr().err
    assert "would schedule 4 cell(s)" in capsys.readouterr().out
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "name", ["base-train-lrr", "png-file", "twin-rows", "name-too-long", "epochs-true"]
)
def test_plan_run_and_dry_run_refuse_alike_in_a_real_process(name: str, tmp_path: Path) -> None:
    """The same refusal from a fresh ``d2bench`` process, for each of the three commands."""
    case = _case(name)
    path = _write_case(case, tmp_path)
    before = _snapshot(tmp_path)
    env = {"MLFLOW_TRACKING_URI": ""}
    for args in (("plan",), ("run",), ("run", "--dry-run")):
        command, *options = args
        done = d2bench(command, str(path), *options, cwd=tmp_path, env=env, timeout=120)
        _check_refusal(done.returncode, done.stderr, Case(name, expected=case.expected,
                       args=args), before, tmp_path)  # fmt: skip
        assert done.stdout == ""


def test_dry_run_checks_the_data_root_like_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A missing data root used to make the dry run promise cells that the run then refused."""
    path = _write_case(Case("valid"), tmp_path)
    (tmp_path / "data").rmdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = _snapshot(tmp_path)
    for args in (["run", str(path)], ["run", str(path), "--dry-run"]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "rows[baseline].data.root" in err and "does not exist" in err, err
        assert "DAVIS_ROOT" in err and "synthetic_data: true" in err
    assert _snapshot(tmp_path) == before


def test_a_duplicate_key_in_a_profile_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    path = _write_case(Case("valid"), tmp_path)
    profile = tmp_path / "site.yaml"
    profile.write_text("partition: gpu\nqos: normal\npartition: cpu\n")
    monkeypatch.chdir(tmp_path)
    before = _snapshot(tmp_path)
    args = ["run", str(path), "--backend", "slurm", "--slurm-profile", str(profile), "--dry-run"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "site.yaml: partition: duplicate key 'partition' (lines 1 and 3)" in err, err
    assert _snapshot(tmp_path) == before
