"""The cell-result contract: one maps.npz schema for the writer and both readers, one set of
names for the runner, the tracker and the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from d2bench.core.contract import (
    CELL_ARTIFACTS,
    FINAL_METRICS,
    MAPS_FILE,
    MAPS_FRAMES_KEY,
    MAPS_METADATA_KEY,
    OOB_KEYS,
    read_maps_file,
    write_maps_file,
)

LAYERS = {
    "decoder.rf2.0": {
        "dilation": np.ones((2, 3, 4, 5, 6)),
        "modulation_mean": np.zeros((2, 4, 5, 6)),
    },
    "decoder.rf3.0": {"dilation": np.ones((2, 3, 2, 3, 4))},
}
FRAMES = np.zeros((8, 12, 16, 3), np.uint8)


def _maps_with_frames(path: Path) -> Path:
    """A maps file as a cell stores it: two layers, the frames and the metadata."""
    flat = {
        f"{layer}/{name}": value
        for layer, arrays in LAYERS.items()
        for name, value in arrays.items()
    }
    np.savez_compressed(
        path,
        **flat,
        **{
            MAPS_FRAMES_KEY: FRAMES,
            MAPS_METADATA_KEY: np.asarray(json.dumps({"sequence": "blob"})),
        },
    )
    return path


def test_frames_and_metadata_are_not_layers(tmp_path: Path) -> None:
    maps = read_maps_file(_maps_with_frames(tmp_path / MAPS_FILE))
    assert set(maps.layers) == set(LAYERS)
    assert set(maps.layers["decoder.rf2.0"]) == {"dilation", "modulation_mean"}
    assert maps.frames is not None and maps.frames.shape == FRAMES.shape
    assert maps.metadata == {"sequence": "blob"}


def test_the_recorders_loader_yields_only_the_layers(tmp_path: Path) -> None:
    load_maps = pytest.importorskip("d2bench.metrics.sampling_maps").load_maps
    layers, metadata = load_maps(_maps_with_frames(tmp_path / MAPS_FILE))
    assert set(layers) == set(LAYERS)
    assert metadata == {"sequence": "blob"}


def test_writer_and_reader_agree(tmp_path: Path) -> None:
    path = write_maps_file(tmp_path / "maps", LAYERS, {"variant": "d2conv3d_iv"}, frames=FRAMES)
    assert path.name == MAPS_FILE
    maps = read_maps_file(path)
    assert set(maps.layers) == set(LAYERS)
    assert maps.layers["decoder.rf2.0"]["dilation"].dtype == np.float32
    np.testing.assert_array_equal(maps.frames, FRAMES)
    assert maps.metadata == {"variant": "d2conv3d_iv"}


def test_the_tracker_logs_every_reported_key_and_file() -> None:
    from d2bench.tracking import tracker

    assert tracker.FINAL_METRICS == FINAL_METRICS
    assert tracker.CELL_ARTIFACTS == CELL_ARTIFACTS
    assert set(OOB_KEYS) <= set(FINAL_METRICS)
    assert len(set(FINAL_METRICS)) == len(FINAL_METRICS)
