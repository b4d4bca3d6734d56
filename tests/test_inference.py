"""Clip planning and stitching: gap 5 and 1, short videos, padding repeats that must not vote."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from d2bench.config import InferConfig
from d2bench.engine.inference import plan_clips, predict_video, stitch_probabilities, write_masks


def test_gap_five_is_the_papers_overlap_three() -> None:
    clips = plan_clips(10, clip_len=8, gap=5)
    assert [c.frames for c in clips] == [
        (0, 1, 2, 3, 4, 5, 6, 7),
        (5, 6, 7, 8, 9, 9, 9, 9),
    ]
    assert clips[1].votes == (True,) * 5 + (False,) * 3


def test_dense_gap_one_covers_every_frame_in_order() -> None:
    clips = plan_clips(10, clip_len=8, gap=1)
    assert [c.frames[0] for c in clips] == [0, 1, 2]
    assert all(list(c.frames) == sorted(c.frames) for c in clips)
    assert all(all(c.votes) for c in clips)


def test_video_shorter_than_a_clip_repeats_its_last_frame_without_votes() -> None:
    (clip,) = plan_clips(3, clip_len=8, gap=5)
    assert clip.frames == (0, 1, 2, 2, 2, 2, 2, 2)
    assert clip.votes == (True, True, True, False, False, False, False, False)


def test_gap_larger_than_clip_is_refused() -> None:
    with pytest.raises(ValueError, match="no clip covers"):
        plan_clips(20, clip_len=4, gap=5)


def test_stitching_averages_only_real_votes() -> None:
    clips = plan_clips(10, clip_len=8, gap=5)
    # clip 0 says 0.2 everywhere, clip 1 says 0.8 (its repeats would say 0.8 for frame 9 thrice)
    volumes = [np.full((8, 2, 3), 0.2, np.float32), np.full((8, 2, 3), 0.8, np.float32)]
    stitched = stitch_probabilities(volumes, clips, 10)
    expected = [0.2] * 5 + [0.5] * 3 + [0.8] * 2
    np.testing.assert_allclose(stitched[:, 0, 0], expected, rtol=1e-6)


class _PositionLogits(nn.Module):
    """Logit = position of the frame inside its clip (0..L-1), the same at every pixel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, length, height, width = x.shape
        assert height % 32 == 0 and width % 32 == 0, "input must be padded to 32"
        positions = torch.arange(length, dtype=x.dtype).view(1, 1, length, 1, 1)
        return positions.expand(batch, 1, length, height, width).clone()


def _sigmoid(value: float) -> float:
    return 1.0 / (1.0 + np.exp(-value))


@pytest.mark.parametrize("batch_size", [1, 3])
def test_predict_video_crops_back_and_ignores_padding_repeats(batch_size: int) -> None:
    frames = np.zeros((10, 50, 70, 3), np.uint8)
    cfg = InferConfig(clip_len=8, gap=5, precision="fp32", batch_size=batch_size)
    probabilities = predict_video(_PositionLogits(), frames, cfg, "cpu")
    assert probabilities.shape == (10, 50, 70)
    # frame f gets position f from clip 0 (f < 8) and f - 5 from clip 1 (f >= 5)
    expected = []
    for frame in range(10):
        votes = [frame] if frame < 8 else []
        votes += [frame - 5] if frame >= 5 else []
        expected.append(np.mean([_sigmoid(v) for v in votes]))
    np.testing.assert_allclose(probabilities[:, 0, 0], expected, rtol=1e-5)
    # frame 9 with voting repeats would have averaged positions 4..7; it must be position 4 only
    assert probabilities[9, 10, 10] == pytest.approx(_sigmoid(4), rel=1e-5)


def test_masks_are_written_as_davis_palette_pngs(tmp_path) -> None:
    probabilities = np.array([[[0.2, 0.7]], [[0.5, 0.51]]], np.float32)
    write_masks(probabilities, 0.5, tmp_path / "seq", ["00000", "00001"])
    first = Image.open(tmp_path / "seq" / "00000.png")
    assert first.mode == "P"
    assert np.array(first).tolist() == [[0, 1]]
    assert np.array(Image.open(tmp_path / "seq" / "00001.png")).tolist() == [[0, 1]]
