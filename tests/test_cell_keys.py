"""Portable cell keys: the same experiment has one key wherever its data and weights are.

A key leaves out where things are on this machine (data root, weights path, loader workers,
device index) and holds digests of the data split and the weights instead; any change to what
the experiment reads or does changes it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from study_helpers import TINY_SYNTH, d2bench, write_study

from d2bench.core.config import CellConfig
from d2bench.study import MACHINE_LOCAL_KEYS, expand_cells, load_study, parse_study
from d2bench.study.file_digest import CACHE_ENV, RACY_NS, cache_path, file_sha256
from d2bench.study.signature import CellInputs, experiment_signature
from d2bench.tracking import Tracker

SEQUENCES = {"2017/train": ["bear", "boat"], "2016/val": ["cows"]}


def _make_davis(root: Path, frames: int = 3) -> Path:
    """A DAVIS-layout folder whose files have sizes but no image content (the digest reads
    names and sizes only)."""
    for imageset, names in SEQUENCES.items():
        listing = root / "ImageSets" / f"{imageset}.txt"
        listing.parent.mkdir(parents=True, exist_ok=True)
        listing.write_text("\n".join(names) + "\n")
        for name in names:
            for folder, suffix in (("JPEGImages", "jpg"), ("Annotations", "png")):
                sequence = root / folder / "480p" / name
                sequence.mkdir(parents=True, exist_ok=True)
                for index in range(frames):
                    (sequence / f"{index:05d}.{suffix}").write_bytes(b"x" * (100 + index))
    return root


def _study(data_root: Path | str, synthetic_data: Any = False, **sections: Any) -> dict[str, Any]:
    """A two-row, two-seed study on ``data_root``; ``sections`` update the base's sections."""
    base: dict[str, Any] = {
        "model": {"backbone": "tiny"},
        "data": {"root": str(data_root), "num_workers": 2},
        "train": {"lr": 1e-4},
    }
    for section, values in sections.items():
        base.setdefault(section, {}).update(values)
    return {
        "name": "keys",
        "synthetic_data": synthetic_data,
        "base": {**base, "device": "cuda:0"},
        "rows": [{"name": "baseline"}, {"name": "dcnv1", "model": {"variant": "dcnv1"}}],
        "seeds": [0, 1],
    }


def _keys(tree: dict[str, Any]) -> list[str]:
    return [cell.key for cell in expand_cells(parse_study(tree))]


@pytest.fixture
def davis(tmp_path: Path) -> Path:
    return _make_davis(tmp_path / "DAVIS")


@pytest.fixture
def weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    path = tmp_path / "weights" / "csn.pth"
    path.parent.mkdir()
    path.write_bytes(b"pretrained" * 1000)
    return path


def test_the_key_ignores_where_things_are_and_how_many_workers_read_them(
    tmp_path: Path, davis: Path, weights: Path
) -> None:
    reference = _keys(_study(davis, model={"weights": str(weights)}))
    assert len(set(reference)) == 4

    moved_data = shutil.move(davis, tmp_path / "elsewhere" / "DAVIS-copy")
    renamed_weights = shutil.move(weights, tmp_path / "renamed.pth")
    moved = _study(moved_data, model={"weights": str(renamed_weights)})
    assert _keys(moved) == reference
    for local in (
        {"data": {"num_workers": 0}},
        {"device": "cuda:3"},
        {"data": {"root": f"{moved_data}/"}},  # another spelling of the same folder
    ):
        tree = _study(moved_data, model={"weights": str(renamed_weights)})
        for section, value in local.items():
            if isinstance(value, dict):
                tree["base"][section].update(value)
            else:
                tree["base"][section] = value
        assert _keys(tree) == reference, local


@pytest.mark.parametrize(
    "change",
    ["add-frame", "remove-frame", "resize-frame", "resize-annotation", "imageset-order", "lr",
     "device-kind"],
)  # fmt: skip
def test_the_key_changes_with_what_the_experiment_reads_or_does(davis: Path, change: str) -> None:
    before = _keys(_study(davis))
    frames = davis / "JPEGImages" / "480p" / "bear"
    tree = _study(davis)
    if change == "add-frame":
        (frames / "00003.jpg").write_bytes(b"x" * 10)
    elif change == "remove-frame":
        (frames / "00002.jpg").unlink()
    elif change == "resize-frame":
        with open(frames / "00001.jpg", "ab") as handle:  # in place: the folder's mtime stays
            handle.write(b"y")
    elif change == "resize-annotation":
        (davis / "Annotations" / "480p" / "cows" / "00000.png").write_bytes(b"z")
    elif change == "imageset-order":
        (davis / "ImageSets" / "2017" / "train.txt").write_text("boat\nbear\n")
    elif change == "lr":
        tree["base"]["train"]["lr"] = 2e-4
    elif change == "device-kind":
        tree["base"]["device"] = "cpu"
    after = _keys(tree)  # the same process: nothing remembered from the first computation
    assert not set(after) & set(before)


def test_files_a_cell_does_not_read_leave_the_key_alone(davis: Path) -> None:
    before = _keys(_study(davis))
    (davis / "JPEGImages" / "480p" / "bear" / ".DS_Store").write_bytes(b"finder")
    (davis / "JPEGImages" / "1080p" / "bear").mkdir(parents=True)
    (davis / "JPEGImages" / "1080p" / "bear" / "00000.jpg").write_bytes(b"big")
    _make_davis(davis / ".." / "unrelated")
    assert _keys(_study(davis)) == before


def test_unsupervised_annotations_count_where_present(davis: Path) -> None:
    before = _keys(_study(davis))
    extra = davis / "Annotations_unsupervised" / "480p" / "bear"
    extra.mkdir(parents=True)
    (extra / "00000.png").write_bytes(b"u")
    with_folder = _keys(_study(davis))
    assert not set(with_folder) & set(before)
    (extra / "00000.png").write_bytes(b"uu")
    assert not set(_keys(_study(davis))) & set(with_folder)


def test_weights_enter_the_key_by_content(weights: Path) -> None:
    tree = _study(Path("unused"), synthetic_data=True, model={"weights": str(weights)})
    before = _keys(tree)
    assert _keys({**tree, "base": {**tree["base"], "model": {"weights": "none"}}}) != before
    weights.write_bytes(b"finetuned!" * 1000)  # same size, other content
    assert not set(_keys(tree)) & set(before)


def test_synthetic_data_is_identified_by_its_spec_without_a_folder(tmp_path: Path) -> None:
    missing = tmp_path / "not-generated-yet"
    spec = dict(TINY_SYNTH)
    first = _keys(_study(missing, synthetic_data=spec))
    assert not missing.exists()
    assert _keys(_study(tmp_path / "other-place", synthetic_data=spec)) == first
    changed = _keys(_study(missing, synthetic_data={**spec, "frames": spec["frames"] + 1}))
    assert not set(changed) & set(first)
    assert not set(_keys(_study(missing, synthetic_data=True))) & set(first)


def test_the_weights_digest_cache_never_returns_a_stale_digest(weights: Path) -> None:
    import hashlib

    time.sleep(RACY_NS / 1e9 + 0.2)  # only files at rest longer than a timestamp tick are cached
    first = file_sha256(weights)
    assert first == hashlib.sha256(weights.read_bytes()).hexdigest()
    cache = cache_path()
    entries = json.loads(cache.read_text())
    assert list(entries) == [str(weights.resolve())]

    entries[str(weights.resolve())]["sha256"] = "cached"  # a hit returns what the cache holds
    cache.write_text(json.dumps(entries))
    assert file_sha256(weights) == "cached"

    stat = weights.stat()
    weights.write_bytes(b"other cont" * 1000)  # same size; its mtime is then put back
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert weights.stat().st_size == stat.st_size
    assert file_sha256(weights) == hashlib.sha256(weights.read_bytes()).hexdigest() != first

    cache.write_text("{not json")  # a damaged cache is only a missed shortcut
    assert file_sha256(weights) == hashlib.sha256(weights.read_bytes()).hexdigest()


def test_every_machine_local_key_is_a_config_key_and_leaves_the_signature() -> None:
    config = CellConfig.model_validate(
        {"data": {"root": "/somewhere/DAVIS"}, "model": {"weights": "/w.pth"}, "device": "cuda:1"}
    )
    signature = experiment_signature(config, CellInputs("davis-abc", "sha256-def"))
    text = json.dumps(signature)
    assert "/somewhere" not in text and "/w.pth" not in text and "cuda:1" not in text
    assert signature["data"]["root"] == "davis-abc" and "num_workers" not in signature["data"]
    assert signature["model"]["weights"] == "sha256-def" and signature["device"] == "cuda"
    for local in MACHINE_LOCAL_KEYS:
        assert local.why
        section, _, leaf = local.path.rpartition(".")
        fields = type(getattr(config, section)).model_fields if section else CellConfig.model_fields
        assert leaf in fields, local.path


# --- the command line: a study that cannot be identified; a moved data folder --------------


def _non_synthetic_study(folder: Path, name: str, **overrides: Any) -> Path:
    rows = [{"name": "baseline", "model": {"variant": "baseline"}}]
    return write_study(folder, name, rows=rows, synthetic_data=False, **overrides)


@pytest.mark.parametrize("command", ["plan", "run", "status"])
def test_a_missing_data_root_is_a_one_line_usage_error(tmp_path: Path, command: str) -> None:
    study = _non_synthetic_study(tmp_path, "no-data")
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    env = {"D2BENCH_TEST_DATA": str(tmp_path / "no-such-folder")}
    done = d2bench(command, str(study), "--tracking-uri", uri, cwd=tmp_path, env=env)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "rows[baseline].data.root:" in done.stderr and "does not exist" in done.stderr
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "runs").exists()


def test_a_missing_weights_file_is_a_one_line_usage_error(
    tmp_path: Path, synthetic_data: Path
) -> None:
    study = write_study(tmp_path, "no-weights")
    tree = yaml.safe_load(study.read_text())
    tree["base"]["model"]["weights"] = str(tmp_path / "missing.pth")
    study.write_text(yaml.safe_dump(tree, sort_keys=False))
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    done = d2bench("plan", str(study), "--tracking-uri", uri, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "rows[baseline].model.weights" in done.stderr and "missing.pth" in done.stderr


def test_plan_digests_real_data_without_torch(tmp_path: Path, synthetic_data: Path) -> None:
    study = _non_synthetic_study(tmp_path, "torch-free")
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    code = (
        "import sys; from d2bench.cli import main; "
        f"rc = main(['plan', {str(study)!r}, '--tracking-uri', {uri!r}]); "
        "sys.exit(rc or (3 if 'torch' in sys.modules else 0))"
    )
    env = {**os.environ, "D2BENCH_TEST_DATA": str(synthetic_data)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "1 missing" in done.stdout


@pytest.mark.slow
def test_a_study_finished_then_its_data_moved_schedules_nothing(
    tmp_path: Path, synthetic_data: Path
) -> None:
    """A laptop's study finished on a cluster: the data folder is elsewhere, the keys are not."""
    first_root = tmp_path / "laptop" / "DAVIS"
    shutil.copytree(synthetic_data, first_root)
    study = _non_synthetic_study(tmp_path, "moved")
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    args = ("--tracking-uri", uri)
    first = {"D2BENCH_TEST_DATA": str(first_root)}
    d2bench("run", str(study), *args, cwd=tmp_path, env=first, check=True)
    keys_before = {cell.key for cell in expand_cells(load_study(study, environ=first))}

    second_root = Path(shutil.move(first_root, tmp_path / "cluster" / "scratch" / "DAVIS"))
    moved = {"D2BENCH_TEST_DATA": str(second_root)}
    again = d2bench("run", str(study), *args, cwd=tmp_path, env=moved, check=True)
    assert "nothing to do" in again.stdout, again.stdout
    plan = d2bench("plan", str(study), *args, cwd=tmp_path, env=moved, check=True)
    assert plan.stdout.strip().splitlines()[-1] == "1 done", plan.stdout

    records = Tracker(uri).cell_records("moved")
    assert [r.status for r in records] == ["FINISHED"]
    assert (
        {r.key for r in records}
        == keys_before
        == {cell.key for cell in expand_cells(load_study(study, environ=moved))}
    )

    # A worker handed the cell again (its run lost, its folder kept) returns the finished result
    # although the config it gets names the new data root: the key is the same.
    from d2bench.runner.cell import run_cell

    (cell,) = expand_cells(load_study(study, environ=moved))
    cell_dir = cell.cell_dir(tmp_path / "runs")
    finished = json.loads((cell_dir / "result.json").read_text())
    assert finished["key"] == cell.key
    assert finished["config"]["data"]["root"] == str(first_root.resolve()) != cell.config.data.root
    assert run_cell(cell.config, cell_dir, key=cell.key, show_progress=False) == finished

    (second_root / "JPEGImages" / "480p" / "train-00" / "00000.jpg").unlink()  # other data now
    assert not {cell.key for cell in expand_cells(load_study(study, environ=moved))} & keys_before
