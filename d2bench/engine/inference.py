"""Clip inference: overlapping clips, averaged per-frame probabilities, DAVIS result PNGs.

A video of T frames is cut into clips of ``clip_len`` frames starting every ``gap`` frames
(0, gap, 2·gap, … < T). A clip that runs past the last frame is filled by repeating the last
frame (so the clip stays in temporal order), but those repeats do not vote: each frame's
probability is the mean over the clips that really contain it. This fixes two bugs of the
original (seed-facts §5): out-of-order border windows and repeated end frames all voting for the
last frame. Frames are zero-padded to a multiple of 32 and the prediction is cropped back to the
native size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from ..config import InferConfig

#: The DAVIS results palette: 0 black (background), 1 red (the object).
_PALETTE = [0, 0, 0, 128, 0, 0] + [0, 0, 0] * 254

PAD_MULTIPLE = 32

Forward = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Clip:
    """One clip: the frame index read at each of its positions, and which positions vote."""

    frames: tuple[int, ...]
    votes: tuple[bool, ...]


def plan_clips(num_frames: int, clip_len: int, gap: int) -> list[Clip]:
    """The clips covering a video of ``num_frames`` frames (see the module docstring)."""
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
        votes = tuple(p < num_frames for p in positions)
        clips.append(Clip(frames, votes))
        if start + clip_len >= num_frames:
            break
    return clips


def stitch_probabilities(
    clip_probabilities: Sequence[np.ndarray], clips: Sequence[Clip], num_frames: int
) -> np.ndarray:
    """Average per-frame probabilities over the clips that cover each frame (float32 T×H×W)."""
    if len(clip_probabilities) != len(clips):
        raise ValueError("one probability volume per clip is needed")
    first = clip_probabilities[0]
    total = np.zeros((num_frames, *first.shape[1:]), dtype=np.float64)
    count = np.zeros(num_frames, dtype=np.int64)
    for probabilities, clip in zip(clip_probabilities, clips, strict=True):
        for position, (frame, votes) in enumerate(zip(clip.frames, clip.votes, strict=True)):
            if votes:
                total[frame] += probabilities[position]
                count[frame] += 1
    if (count == 0).any():
        missing = np.flatnonzero(count == 0).tolist()
        raise ValueError(f"frames {missing} are covered by no clip")
    return (total / count[:, None, None]).astype(np.float32)


def autocast_context(device: torch.device, precision: str):
    """Autocast for bf16/fp16 on CUDA; full precision elsewhere (CPU runs fp32)."""
    if device.type == "cuda" and precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return nullcontext()


def _pad(volume: Tensor, multiple: int) -> Tensor:
    height, width = volume.shape[-2:]
    pad_h = (-height) % multiple
    pad_w = (-width) % multiple
    if pad_h == 0 and pad_w == 0:
        return volume
    return torch.nn.functional.pad(volume, (0, pad_w, 0, pad_h))


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

    ``forward`` replaces ``model`` as the callable applied to each B×3×L×H×W batch (a timing
    wrapper, for instance); the model is put in eval mode either way.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 T×H×W×3; got {frames.dtype} {frames.shape}")
    device = torch.device(device)
    model.eval()
    apply = forward or model
    num_frames, height, width = frames.shape[:3]
    clips = plan_clips(num_frames, cfg.clip_len, cfg.gap)
    video = torch.from_numpy(frames).to(device).permute(3, 0, 1, 2)  # 3×T×H×W uint8
    outputs: list[np.ndarray] = []
    for batch in _batches(clips, cfg.batch_size):
        index = torch.tensor([c.frames for c in batch], device=device)  # B×L
        x = video[:, index].permute(1, 0, 2, 3, 4).float().div_(255.0)  # B×3×L×H×W
        x = _pad(x, PAD_MULTIPLE)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with autocast_context(device, cfg.precision):
            logits = apply(x)
        probabilities = torch.sigmoid(logits.float())[:, 0, :, :height, :width]
        outputs.extend(p.cpu().numpy() for p in probabilities)
    return stitch_probabilities(outputs, clips, num_frames)


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
