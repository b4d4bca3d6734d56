"""Which frames make up the training clip of a frame, and which mask pixels are foreground.

Torch-free, so the planner and tests can reason about clips without the training stack.
"""

from __future__ import annotations

import numpy as np


def check_clip_window(clip_len: int, window: int) -> None:
    """Raise ValueError unless a clip of ``clip_len`` frames fits the window [i − w, i + w)."""
    if clip_len < 1 or window < 1:
        raise ValueError(f"clip_len and window must be ≥ 1, got {clip_len} and {window}")
    if clip_len > 2 * window:
        raise ValueError(
            f"clip_len {clip_len} does not fit the window [i - {window}, i + {window}) of "
            f"{2 * window} frames; use clip_len ≤ 2·window"
        )


def clip_frame_ids(frame: int, length: int, clip_len: int = 8, window: int = 4) -> list[int]:
    """Frame indices of the training clip of ``frame`` in a video of ``length`` frames.

    The clip is the ``clip_len`` consecutive frames of the window [frame − window,
    frame + window) centred on ``frame`` (for clip_len = 2·window: the whole window, with
    ``frame`` at position ``window``), shifted as a block to stay inside the video. It is
    always in temporal order and always contains ``frame``. A video shorter than ``clip_len``
    gives every frame, each repeated in place (0, 0, 1, 1, 2, …), never out of order.
    """
    check_clip_window(clip_len, window)
    if length < 1:
        raise ValueError(f"video length must be ≥ 1, got {length}")
    if not 0 <= frame < length:
        raise ValueError(f"frame {frame} outside a video of {length} frames")
    if length < clip_len:
        return [index * length // clip_len for index in range(clip_len)]
    start = min(max(frame - clip_len // 2, 0), length - clip_len)
    return list(range(start, start + clip_len))


def foreground(ids: np.ndarray) -> np.ndarray:
    """Binary foreground (uint8 0/1) of palette ids: any object 1..254; 255 (void) is background."""
    return ((ids >= 1) & (ids <= 254)).astype(np.uint8)
