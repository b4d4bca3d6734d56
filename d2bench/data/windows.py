"""Which frames make up the training clip of a frame, and which mask pixels are foreground.

Torch-free, so the planner and tests can reason about clips without the training stack.

Two ways to cut the training clip of frame i from the window [i − w, i + w):

- ``random-sorted`` (the original's): ``clip_len`` frames drawn at random WITH
  replacement from the window truncated at the video's ends, then sorted; frames can repeat and
  the clip need not contain frame i. :func:`draw_random_sorted_clips` draws all of them once.
- ``consecutive``: the ``clip_len`` consecutive frames of the window, shifted as a block to stay
  inside the video (:func:`clip_frame_ids`); deterministic, no repeats in a long enough video.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import get_args

import numpy as np

from ..core.config import ClipSampling

#: The allowed ``data.clip_sampling`` values, the original's first.
CLIP_SAMPLINGS: tuple[str, ...] = get_args(ClipSampling)


def check_clip_window(clip_len: int, window: int) -> None:
    """Raise ValueError unless a clip of ``clip_len`` frames fits the window [i − w, i + w)."""
    if clip_len < 1 or window < 1:
        raise ValueError(f"clip_len and window must be ≥ 1, got {clip_len} and {window}")
    if clip_len > 2 * window:
        raise ValueError(
            f"clip_len {clip_len} does not fit the window [i - {window}, i + {window}) of "
            f"{2 * window} frames; use clip_len ≤ 2·window"
        )


def _check_frame(frame: int, length: int) -> None:
    if length < 1:
        raise ValueError(f"video length must be ≥ 1, got {length}")
    if not 0 <= frame < length:
        raise ValueError(f"frame {frame} outside a video of {length} frames")


def clip_frame_ids(frame: int, length: int, clip_len: int = 8, window: int = 4) -> list[int]:
    """Frame indices of the ``consecutive`` training clip of ``frame`` in a video of ``length``.

    The clip is the ``clip_len`` consecutive frames of the window [frame − window,
    frame + window) centred on ``frame`` (for clip_len = 2·window: the whole window, with
    ``frame`` at position ``window``), shifted as a block to stay inside the video. It is
    always in temporal order and always contains ``frame``. A video shorter than ``clip_len``
    gives every frame, each repeated in place (0, 0, 1, 1, 2, …), never out of order.
    """
    check_clip_window(clip_len, window)
    _check_frame(frame, length)
    if length < clip_len:
        return [index * length // clip_len for index in range(clip_len)]
    start = min(max(frame - clip_len // 2, 0), length - clip_len)
    return list(range(start, start + clip_len))


def truncated_window(frame: int, length: int, window: int = 4) -> range:
    """The frames [max(0, i − w), min(length, i + w)): the window cut (not shifted) at the ends."""
    _check_frame(frame, length)
    return range(max(0, frame - window), min(length, frame + window))


def random_sorted_clip_ids(
    frame: int, length: int, rng: random.Random, clip_len: int = 8, window: int = 4
) -> list[int]:
    """The original's clip of ``frame``: ``sorted(rng.choices(window, k=clip_len))``."""
    check_clip_window(clip_len, window)
    return sorted(rng.choices(truncated_window(frame, length, window), k=clip_len))


def clip_sampling_seed(seed: int, rank: int = 0) -> str:
    """The seed of one dataset build's draw: the cell's seed and the DDP rank, so that ranks
    draw differently and a rebuild (a resumed run) draws the same clips again."""
    return f"d2bench/train-clips/seed={seed}/rank={rank}"


def draw_random_sorted_clips(
    lengths: Sequence[int], seed: int, rank: int = 0, clip_len: int = 8, window: int = 4
) -> list[tuple[int, ...]]:
    """Every ``random-sorted`` clip of a dataset, drawn once: one per frame of every video, in
    video order then frame order (the sample order of :class:`~.train_clips.TrainClips`)."""
    rng = random.Random(clip_sampling_seed(seed, rank))
    return [
        tuple(random_sorted_clip_ids(frame, length, rng, clip_len, window))
        for length in lengths
        for frame in range(length)
    ]


def draw_clips(
    lengths: Sequence[int],
    sampling: ClipSampling | str,
    seed: int = 0,
    rank: int = 0,
    clip_len: int = 8,
    window: int = 4,
) -> list[tuple[int, ...]]:
    """The frame ids of every training sample under ``sampling`` (see the module docstring)."""
    check_clip_window(clip_len, window)
    if sampling == "random-sorted":
        return draw_random_sorted_clips(lengths, seed, rank, clip_len, window)
    if sampling == "consecutive":
        return [
            tuple(clip_frame_ids(frame, length, clip_len, window))
            for length in lengths
            for frame in range(length)
        ]
    raise ValueError(
        f"data.clip_sampling: unknown value {sampling!r}; allowed: {', '.join(CLIP_SAMPLINGS)}"
    )


def foreground(ids: np.ndarray) -> np.ndarray:
    """Binary foreground (uint8 0/1) of palette ids: any object 1..254; 255 (void) is background."""
    return ((ids >= 1) & (ids <= 254)).astype(np.uint8)


def nonzero_foreground(ids: np.ndarray) -> np.ndarray:
    """Binary foreground (uint8 0/1) of palette ids: any non-zero id, void (255) included.

    The original's rule for its training labels (``Annotations_unsupervised``).
    """
    return (ids != 0).astype(np.uint8)
