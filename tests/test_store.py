"""The SQLite store's one door: concurrent first use, upgrades and damaged files (real MLflow)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from study_helpers import d2bench, write_study

from d2bench.study import expand_cells, load_study
from d2bench.tracking import StoreError, Tracker, open_store

OPEN_AND_WRITE = """
import sys
from d2bench.tracking import Tracker
tracker = Tracker(sys.argv[1])
tracker.experiment_id("race", create=True)
print(len(tracker.cell_records("race")))
"""


def _uri(folder: Path) -> str:
    return f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"


@pytest.mark.parametrize("attempt", range(3))
def test_three_processes_opening_a_new_store_at_once_all_work(tmp_path: Path, attempt: int) -> None:
    uri = _uri(tmp_path)
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_AND_WRITE, uri],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [process.communicate(timeout=180) for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0], outputs
    assert [out.strip() for out, _ in outputs] == ["0", "0", "0"]
    folder = tmp_path / "mlruns"
    assert not [p for p in folder.iterdir() if ".creating-" in p.name]  # no half-built store
    assert Tracker(uri).experiment_id("race") is not None  # usable afterwards


@pytest.mark.slow
@pytest.mark.parametrize("second", ["status", "plan", "run"])
def test_a_driver_and_a_second_command_on_a_new_store(
    tmp_path: Path, synthetic_data: Path, second: str
) -> None:
    """The issue's reproduction: a user's second command while ``run`` creates the store."""
    rows = [{"name": "baseline", "model": {"variant": "baseline"}}]
    study = write_study(tmp_path, f"race-{second}", rows=rows)
    uri = _uri(tmp_path)
    command = [sys.executable, "-m", "d2bench.cli"]
    driver = subprocess.Popen(
        [*command, "run", str(study), "--tracking-uri", uri],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    other = subprocess.run(
        [*command, second, str(study), "--tracking-uri", uri],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    _, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err
    assert other.returncode == 0, other.stderr
    assert "Traceback" not in err + other.stderr
    records = Tracker(uri).cell_records(f"race-{second}")
    keys = {cell.key for cell in expand_cells(load_study(study))}
    finished = Counter(r.key for r in records if r.status == "FINISHED")
    assert finished == Counter({key: 1 for key in keys}), records
    again = d2bench("plan", str(study), "--tracking-uri", uri, cwd=tmp_path, check=True)
    assert "1 done" in again.stdout


def test_reading_a_store_that_does_not_exist_creates_nothing(tmp_path: Path) -> None:
    tracker = Tracker(_uri(tmp_path))
    assert tracker.cell_records("nothing") == []
    assert tracker.study_runs("nothing").empty
    assert not (tmp_path / "mlruns").exists()


def test_an_older_schema_is_upgraded_once(tmp_path: Path) -> None:
    from alembic import command
    from mlflow.store.db.utils import _get_alembic_config, _get_latest_schema_revision

    uri = _uri(tmp_path)
    Tracker(uri).experiment_id("old", create=True)
    config = _get_alembic_config(uri)
    command.downgrade(config, "-1")
    path = tmp_path / "mlruns" / "mlflow.db"
    assert _revision(path) != _get_latest_schema_revision()
    done = subprocess.run(
        [sys.executable, "-c", OPEN_AND_WRITE.replace('"race"', '"old"'), uri],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert _revision(path) == _get_latest_schema_revision()


def _revision(path: Path) -> str:
    import sqlite3

    with sqlite3.connect(path) as connection:
        return connection.execute("SELECT version_num FROM alembic_version").fetchone()[0]


def _damage(path: Path, how: str) -> None:
    if how == "garbage":
        path.write_bytes(os.urandom(5000))
    elif how == "text":
        path.write_text("this is not a database\n")
    elif how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2 + 123])


@pytest.mark.parametrize("how", ["garbage", "text", "truncated"])
def test_a_damaged_store_gives_one_line_naming_it(
    tmp_path: Path, synthetic_data: Path, how: str
) -> None:
    study = write_study(tmp_path, "damaged")
    uri = _uri(tmp_path)
    Tracker(uri).experiment_id("damaged", create=True)
    path = tmp_path / "mlruns" / "mlflow.db"
    _damage(path, how)
    before = path.read_bytes()
    for verb in ("plan", "run") if how == "garbage" else ("status",):
        done = d2bench(verb, str(study), "--tracking-uri", uri, cwd=tmp_path)
        assert done.returncode == 2, (verb, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and str(path) in lines[0], (verb, done.stderr)
        assert "Traceback" not in done.stderr
    assert path.read_bytes() == before  # nothing overwritten
    assert not (tmp_path / "runs" / "cells").exists()


def _read_only_command(folder: Path, command: list[str]) -> list[str] | None:
    """``command`` in a mount namespace where ``folder`` is read-only (root ignores file modes,
    not a read-only mount), or None where this machine does not allow it."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return None
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount --bind {folder} {folder}"], capture_output=True
    )
    if probe.returncode != 0:
        return None
    quoted = " ".join(f"'{part}'" for part in command)
    script = f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder} && {quoted}"
    return ["unshare", "-m", "sh", "-c", script]


def test_a_read_only_store_gives_one_line_naming_it(tmp_path: Path, synthetic_data: Path) -> None:
    study = write_study(tmp_path, "ro")
    uri = _uri(tmp_path)
    Tracker(uri).experiment_id("ro", create=True)
    folder = tmp_path / "mlruns"
    plan = [sys.executable, "-m", "d2bench.cli", "plan", str(study), "--tracking-uri", uri]
    command = _read_only_command(folder, plan)
    if command is None:
        pytest.skip("needs root and unshare to mount the store's folder read-only")
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(folder / "mlflow.db") in lines[0], done.stderr


def test_a_server_uri_needs_no_preparation(tmp_path: Path) -> None:
    open_store("http://127.0.0.1:1")  # nothing to create or lock, nothing contacted
    assert not any(tmp_path.iterdir())


def test_a_folder_that_cannot_hold_the_store_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the store's folder should be")
    with pytest.raises(StoreError, match=str(blocker)):
        open_store(f"sqlite:///{blocker / 'mlflow.db'}")


#: Holds a write transaction open on the store, spilled to disk (so its rollback journal is
#: "hot"), then dies without committing: what a worker killed mid-write leaves behind.
DIE_MID_WRITE = """
import os, sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("PRAGMA cache_size=1")
connection.execute("BEGIN IMMEDIATE")
connection.execute("CREATE TABLE scratch (payload BLOB)")
for _ in range(200):
    connection.execute("INSERT INTO scratch VALUES (zeroblob(4000))")
connection.execute("UPDATE experiments SET name = name || '-uncommitted'")
print("journal" if os.path.exists(sys.argv[1] + "-journal") else "no journal", flush=True)
os._exit(9)
"""


def test_a_store_left_mid_write_by_a_killed_process_opens_and_rolls_back(tmp_path: Path) -> None:
    """A worker killed while MLflow writes leaves a hot journal. The next process must roll it
    back (any read-write connection does), not fail on it: a read-only check of the schema
    would stop every retry of the cell with 'attempt to write a readonly database'."""
    uri = _uri(tmp_path)
    Tracker(uri).experiment_id("kept", create=True)
    path = tmp_path / "mlruns" / "mlflow.db"
    died = subprocess.run([sys.executable, "-c", DIE_MID_WRITE, str(path)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert died.returncode == 9 and died.stdout.strip() == "journal", died.stderr
    done = subprocess.run(
        [sys.executable, "-c", OPEN_AND_WRITE.replace('"race"', '"kept"'), uri],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert not path.with_name(path.name + "-journal").exists()
    assert Tracker(uri).experiment_id("kept") is not None  # the uncommitted rename is gone
