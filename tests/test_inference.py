"""Clip planning and stitching: gap 5 and 1, short videos, tail clips at every multiple of the
gap, padding repeats that must not vote, logits averaged, centred padding cropped back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from d2bench.core.config import InferConfig
from d2bench.engine.inference import plan_clips, predict_video, stitch_scores, write_masks


def test_gap_five_is_the_papers_overlap_three() -> None:
    clips = plan_clips(10, clip_len=8, gap=5)
    assert [c.frames for c in clips] == [
        (0, 1, 2, 3, 4, 5, 6, 7),
        (5, 6, 7, 8, 9, 9, 9, 9),
    ]
    assert clips[1].votes == (True,) * 5 + (False,) * 3


def test_dense_gap_one_covers_every_frame_in_order() -> None:
    clips = plan_clips(10, clip_len=8, gap=1)
    assert [c.frames[0] for c in clips] == list(range(10))  # every start below the length
    assert all(list(c.frames) == sorted(c.frames) for c in clips)
    assert all(all(c.votes) for c in clips[:3])
    assert clips[9].frames == (9,) * 8 and clips[9].votes == (True,) + (False,) * 7
    until_end = plan_clips(10, clip_len=8, gap=1, starts="until-end")
    assert [c.frames[0] for c in until_end] == [0, 1, 2]
    assert all(all(c.votes) for c in until_end)


def test_clips_start_at_every_multiple_of_the_gap_below_the_length() -> None:
    clips = plan_clips(12, clip_len=8, gap=5)
    assert [c.frames for c in clips] == [
        (0, 1, 2, 3, 4, 5, 6, 7),
        (5, 6, 7, 8, 9, 10, 11, 11),
        (10, 11, 11, 11, 11, 11, 11, 11),
    ]
    assert clips[2].votes == (True, True) + (False,) * 6
    assert len(plan_clips(12, clip_len=8, gap=5, starts="until-end")) == 2
    voting = plan_clips(12, clip_len=8, gap=5, padded_frames_vote=True)
    assert all(all(c.votes) for c in voting)  # the original: the repeats vote too
    with pytest.raises(ValueError, match="clip_starts"):
        plan_clips(12, clip_len=8, gap=5, starts="sometimes")


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
    stitched = stitch_scores(volumes, clips, 10)
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
    # frame f gets position f from clip 0 (f < 8) and f - 5 from clip 1 (f >= 5); the logits
    # are averaged, then the sigmoid
    expected = []
    for frame in range(10):
        votes = [frame] if frame < 8 else []
        votes += [frame - 5] if frame >= 5 else []
        expected.append(_sigmoid(np.mean(votes)))
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


# --- a short synthetic video with a known answer ---------------------------------------------

#: Logit at each position of the clip starting at frame s (clip_len 6, gap 2, 7 frames): clips
#: start at 0, 2, 4, 6 and read (0..5), (2..6, 6), (4, 5, 6, 6, 6, 6), (6, 6, 6, 6, 6, 6).
_CLIP_LOGITS = {
    0: [-3, -3, -3, -3, -2, -3],
    2: [-3, -3, -2, -3, 5, 9],
    4: [10, -3, -4, -20, -20, -20],
    6: [2, -20, -20, -20, -20, -20],
}


class _StartLogits(nn.Module):
    """Reads the clip's first frame index from its intensity (frame t is 20·t) and answers
    :data:`_CLIP_LOGITS` of that start, the same at every pixel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, length, height, width = x.shape
        starts = torch.round(x[:, 0, 0, height // 2, width // 2] * 255 / 20).long().tolist()
        logits = torch.tensor([_CLIP_LOGITS[s] for s in starts], dtype=torch.float32)
        return logits.view(batch, 1, length, 1, 1).expand(batch, 1, length, height, width)


def _masks(**settings) -> list[int]:
    frames = np.repeat((np.arange(7, dtype=np.uint8) * 20)[:, None, None, None], 3, axis=3)
    frames = np.ascontiguousarray(np.broadcast_to(frames, (7, 32, 32, 3)))
    cfg = InferConfig(clip_len=6, gap=2, precision="fp32", batch_size=2, **settings)
    probabilities = predict_video(_StartLogits(), frames, cfg, "cpu")
    assert (probabilities == probabilities[:, :1, :1]).all()
    return (probabilities[:, 0, 0] > cfg.threshold).astype(int).tolist()


def test_tail_clips_and_logit_averaging_give_the_known_masks() -> None:
    # frame 4: logits -2 (clip 0), -2 (clip 2), 10 (clip 4): mean logit 2 → foreground, though
    # the mean probability (0.119 + 0.119 + 1.000) / 3 = 0.41 is below 0.5;
    # frame 6: 5 (clip 2), -4 (clip 4), 2 (clip 6 starting at the last frame): mean 1 → fg.
    assert _masks() == [0, 0, 0, 0, 1, 0, 1]
    assert _masks(average="probabilities") == [0, 0, 0, 0, 0, 0, 1]
    # the original's voting repeats pull frame 6 down: (5 + 9 - 4 - 60 + 2 - 100) / 11 < 0
    assert _masks(padded_frames_vote=True) == [0, 0, 0, 0, 1, 0, 0]
    # stopping at the first clip that reaches the end drops clips 4 and 6: frames 4 (-2) and 6 (5)
    assert _masks(clip_starts="until-end") == [0, 0, 0, 0, 0, 0, 1]


class _EchoLogits(nn.Module):
    """Logit = the red channel, so the output lines up with the input pixel for pixel; keeps the
    last padded input to look at."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.clone()
        return x[:, :1] * 10 - 5


def test_frames_are_padded_centred_and_cropped_back() -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(1, 256, size=(3, 50, 70, 3), dtype=np.uint8)
    model = _EchoLogits()
    cfg = InferConfig(clip_len=3, gap=3, precision="fp32")
    probabilities = predict_video(model, frames, cfg, "cpu")
    assert model.seen.shape[-2:] == (64, 96)
    # 14 rows and 26 columns of zeros, split evenly: 7 above, 7 below, 13 left, 13 right
    nonzero_rows = torch.nonzero(model.seen[0, 0, 0].abs().sum(1)).flatten()
    nonzero_cols = torch.nonzero(model.seen[0, 0, 0].abs().sum(0)).flatten()
    assert (nonzero_rows.min().item(), nonzero_rows.max().item()) == (7, 56)
    assert (nonzero_cols.min().item(), nonzero_cols.max().item()) == (13, 82)
    expected = 1 / (1 + np.exp(-(frames[..., 0].astype(np.float64) / 255 * 10 - 5)))
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5)
