"""The one atomic writer: a reader sees the old file or the whole new one, never half of one."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from d2bench.core.atomic_io import (
    atomic_open,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)


def test_writes_text_bytes_and_json_and_replaces_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "result.json"  # missing folders are created
    atomic_write_text(path, "old")
    assert path.read_text(encoding="utf-8") == "old"
    atomic_write_json(path, {"j&f": 0.85, "name": "D²Conv3D"}, ensure_ascii=False)
    assert json.loads(path.read_text(encoding="utf-8")) == {"j&f": 0.85, "name": "D²Conv3D"}
    atomic_write_bytes(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in path.parent.iterdir()) == ["result.json"]  # no temporaries


def test_an_error_mid_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="mid-write"), atomic_open(path) as handle:
        handle.write("half of the new")
        raise RuntimeError("mid-write")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_a_process_killed_mid_write_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    path.write_text("old")
    script = (
        "import os, sys\n"
        "from d2bench.core.atomic_io import atomic_open\n"
        "with atomic_open(sys.argv[1]) as handle:\n"
        "    handle.write('half of the new')\n"
        "    handle.flush()\n"
        "    os._exit(9)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(path)], check=False)
    assert done.returncode == 9
    assert path.read_text() == "old"


def test_a_failing_serialiser_touches_nothing(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    atomic_write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"a": object()})
    with pytest.raises(ValueError):
        atomic_write_json(path, {"a": float("nan")}, allow_nan=False)
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_the_data_is_fsynced_before_the_rename(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "result.json"
    synced: list[tuple[bool, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        real_fsync(fd)
        # What the temporary file holds when it is synced, and whether the target exists yet.
        (temporary,) = (p for p in tmp_path.iterdir() if p != path)
        synced.append((path.exists(), temporary.read_text()))

    def replace(source, target) -> None:
        assert synced, "renamed before the data was fsynced"
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic_write_text(path, "new")
    assert synced == [(False, "new")]
    assert path.read_text() == "new"


def test_the_file_gets_the_permissions_of_a_plain_write(tmp_path: Path) -> None:
    plain, atomic = tmp_path / "plain.txt", tmp_path / "atomic.txt"
    plain.write_text("x")
    atomic_write_text(atomic, "x")
    assert stat.S_IMODE(atomic.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
