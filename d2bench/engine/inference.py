"""Clip inference: overlapping clips, averaged per-frame logits, DAVIS result PNGs.

The original's protocol, with two of its bugs fixed (padded validation windows out of temporal
order, and repeated end frames all voting for the last frame):

- A video of T frames is cut into clips of ``clip_len`` frames starting at every multiple of
  ``gap`` below T (0, gap, 2·gap, … < T; ``InferConfig.clip_starts="every-gap"``, as released).
  ``"until-end"`` stops after the first clip that reaches the last frame instead.
- A clip that runs past the last frame is filled by repeating the last frame, so it stays in
  temporal order (the original padded border windows out of order). Those repeats
  do not vote (the original let them all vote for the last frame); with
  ``padded_frames_vote=True`` they do, as released.
- Each frame's score is the mean of the LOGITS of the clips that vote for it, then the sigmoid
  (``average="logits"``, as released; the paper's text says probabilities, ``"probabilities"``).
  The mask is that probability above the threshold (0.5: a mean logit above 0).
- Frames are zero-padded on both sides (centred) to a multiple of 32 and the prediction is
  cropped back to the native size.
- ``infer.precision`` "fp16" (as released) runs the forward under float16 autocast on CUDA (see
  :mod:`d2bench.engine.amp`); the scores are averaged in float64 either way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from ..core.config import InferConfig
from ..data.padding import pad_to_multiple
from .amp import autocast_context, warn_if_full_precision

#: The DAVIS results palette: 0 black (background), 1 red (the object).
_PALETTE = [0, 0, 0, 128, 0, 0] + [0, 0, 0] * 254

PAD_MULTIPLE = 32

Forward = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Clip:
    """One clip: the frame index read at each of its positions, and which positions vote."""

    frames: tuple[int, ...]
    votes: tuple[bool, ...]


def plan_clips(
    num_frames: int,
    clip_len: int,
    gap: int,
    *,
    starts: str = "every-gap",
    padded_frames_vote: bool = False,
) -> list[Clip]:
    """The clips covering a video of ``num_frames`` frames (see the module docstring).

    ``starts="every-gap"`` (as released) starts a clip at every multiple of ``gap`` below the
    length; ``"until-end"`` stops after the first clip that reaches the end (no clip then
    consists of repeats only). Neither choice is a bug of the original on its own: the extra
    tail clips of ``every-gap`` only matter when ``padded_frames_vote`` lets their repeats vote.
    """
    if starts not in ("every-gap", "until-end"):
        raise ValueError(
            f"infer.clip_starts: unknown value {starts!r}; allowed: every-gap, until-end"
        )
    if num_frames < 1:
        raise ValueError("a video needs at least one frame")
    if clip_len < 1 or gap < 1:
        raise ValueError(f"clip_len and gap must be ≥ 1; got clip_len={clip_len}, gap={gap}")
    if gap > clip_len:
        raise ValueError(
            f"gap {gap} > clip_len {clip_len} would leave frames that no clip covers; "
            f"use a gap between 1 and {clip_len}"
        )
    clips = []
    for start in range(0, num_frames, gap):
        positions = range(start, start + clip_len)
        frames = tuple(min(p, num_frames - 1) for p in positions)
        votes = tuple(padded_frames_vote or p < num_frames for p in positions)
        clips.append(Clip(frames, votes))
        if starts == "until-end" and start + clip_len >= num_frames:
            break
    return clips


def plan_video(num_frames: int, cfg: InferConfig) -> list[Clip]:
    """:func:`plan_clips` under the settings of ``cfg``."""
    return plan_clips(
        num_frames,
        cfg.clip_len,
        cfg.gap,
        starts=cfg.clip_starts,
        padded_frames_vote=cfg.padded_frames_vote,
    )


def stitch_scores(
    clip_scores: Sequence[np.ndarray], clips: Sequence[Clip], num_frames: int
) -> np.ndarray:
    """Mean per-frame score (logit or probability) over the votes of the clips (float64 T×H×W).

    A frame's votes are the positions of the clips that read it and vote (see :class:`Clip`).
    """
    if len(clip_scores) != len(clips):
        raise ValueError("one score volume per clip is needed")
    first = clip_scores[0]
    total = np.zeros((num_frames, *first.shape[1:]), dtype=np.float64)
    count = np.zeros(num_frames, dtype=np.int64)
    for scores, clip in zip(clip_scores, clips, strict=True):
        for position, (frame, votes) in enumerate(zip(clip.frames, clip.votes, strict=True)):
            if votes:
                total[frame] += scores[position]
                count[frame] += 1
    if (count == 0).any():
        missing = np.flatnonzero(count == 0).tolist()
        raise ValueError(f"frames {missing} are covered by no clip")
    return total / count[:, None, None]


def _batches(clips: list[Clip], batch_size: int) -> Iterator[list[Clip]]:
    for start in range(0, len(clips), batch_size):
        yield clips[start : start + batch_size]


@torch.inference_mode()
def predict_video(
    model: nn.Module,
    frames: np.ndarray,
    cfg: InferConfig,
    device: torch.device | str,
    *,
    forward: Forward | None = None,
    channels_last: bool = False,
) -> np.ndarray:
    """Foreground probability per frame (float32 T×H×W) of a uint8 T×H×W×3 video.

    Under ``cfg.average="logits"`` it is the sigmoid of the mean logit (see the module
    docstring). ``forward`` replaces ``model`` as the callable applied to each B×3×L×H×W batch
    (a timing wrapper, for instance); the model is put in eval mode either way.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 T×H×W×3; got {frames.dtype} {frames.shape}")
    device = torch.device(device)
    warn_if_full_precision(device, cfg.precision, "infer.precision")
    model.eval()
    apply = forward or model
    num_frames = frames.shape[0]
    clips = plan_video(num_frames, cfg)
    video = torch.from_numpy(frames).to(device).permute(3, 0, 1, 2)  # 3×T×H×W uint8
    outputs: list[np.ndarray] = []
    for batch in _batches(clips, cfg.batch_size):
        index = torch.tensor([c.frames for c in batch], device=device)  # B×L
        x = video[:, index].permute(1, 0, 2, 3, 4).float().div_(255.0)  # B×3×L×H×W
        x, box = pad_to_multiple(x, PAD_MULTIPLE)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with autocast_context(device, cfg.precision):
            logits = apply(x)
        scores = box.crop(logits.float()[:, 0])
        if cfg.average == "probabilities":
            scores = torch.sigmoid(scores)
        outputs.extend(score.cpu().numpy() for score in scores)
    mean = stitch_scores(outputs, clips, num_frames)
    if cfg.average == "logits":
        mean = torch.sigmoid(torch.from_numpy(mean)).numpy()  # float64, no overflow
    return mean.astype(np.float32)


def write_masks(
    probabilities: np.ndarray, threshold: float, out_dir: Path, frame_names: Sequence[str]
) -> None:
    """Threshold and write 0/1 palette PNGs in the DAVIS results layout (``<name>.png``)."""
    if len(frame_names) != probabilities.shape[0]:
        raise ValueError(
            f"{len(frame_names)} frame names for {probabilities.shape[0]} predicted frames"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, probability in zip(frame_names, probabilities, strict=True):
        image = Image.fromarray((probability > threshold).astype(np.uint8))
        image.putpalette(_PALETTE)  # turns the "L" image into a "P" one with our palette
        image.save(out_dir / f"{name}.png")
