"""Resuming past damaged checkpoints: the newest one that loads wins, the others are named and
moved aside."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from d2bench.engine.checkpoint import (
    CORRUPT_SUFFIX,
    list_checkpoints,
    load_newest_intact,
    save_checkpoint,
)


@pytest.fixture
def cell_log(caplog: pytest.LogCaptureFixture):
    """What reaches the cell runner's logger (which does not propagate once a cell has run)."""
    logger = logging.getLogger("d2bench.cell")
    logger.addHandler(caplog.handler)
    with caplog.at_level(logging.WARNING, logger="d2bench.cell"):
        yield caplog
    logger.removeHandler(caplog.handler)


def _two_checkpoints(folder: Path) -> tuple[Path, Path]:
    for epoch in (1, 2):
        save_checkpoint(folder, {"epoch": epoch, "model": {"w": torch.ones(3) * epoch}}, epoch, 0)
    older, newest = list_checkpoints(folder)
    return older, newest


def test_a_truncated_newest_checkpoint_falls_back_to_the_older_one_and_is_moved_aside(
    tmp_path: Path, cell_log: pytest.LogCaptureFixture
) -> None:
    older, newest = _two_checkpoints(tmp_path)
    newest.write_bytes(newest.read_bytes()[:100])
    found = load_newest_intact(tmp_path, required=("epoch", "model"))
    assert found is not None
    path, state = found
    assert path == older and state["epoch"] == 1
    assert not newest.exists() and newest.with_name(newest.name + CORRUPT_SUFFIX).exists()
    assert f"skipped checkpoint {newest.name}: it does not load" in cell_log.text
    assert list_checkpoints(tmp_path) == [older]  # a later resume does not try it again


def test_a_checkpoint_without_the_state_a_resume_needs_is_skipped(tmp_path: Path) -> None:
    older, newest = _two_checkpoints(tmp_path)
    torch.save({"epoch": 2}, newest)
    found = load_newest_intact(tmp_path, required=("epoch", "model"))
    assert found is not None and found[0] == older


def test_when_none_loads_training_starts_over_with_a_warning_naming_every_file(
    tmp_path: Path, cell_log: pytest.LogCaptureFixture
) -> None:
    older, newest = _two_checkpoints(tmp_path)
    for path in (older, newest):
        path.write_bytes(b"not a checkpoint")
    assert load_newest_intact(tmp_path) is None
    assert "training starts from the beginning" in cell_log.text
    assert older.name in cell_log.text and newest.name in cell_log.text
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name + CORRUPT_SUFFIX for p in (older, newest)
    )


def test_without_quarantine_a_damaged_file_stays_where_it_is(tmp_path: Path) -> None:
    """Ranks other than the first of a data-parallel run skip it but leave the renaming to one."""
    older, newest = _two_checkpoints(tmp_path)
    newest.write_bytes(b"garbage")
    found = load_newest_intact(tmp_path, quarantine=False)
    assert found is not None and found[0] == older and newest.exists()
