"""The spec of a synthetic DAVIS set: stdlib only, so the CLI can show its defaults cheaply."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class SynthSpec:
    """Sizes, counts and seed of a synthetic DAVIS set (defaults: a CPU-sized study).

    ``sequences`` videos in all, the last ``val_sequences`` of them for validation; each video
    has between ``frames - frame_jitter`` and ``frames`` frames of ``height``×``width``. Within
    each split, every ``pair_every``-th video has two annotated objects (0 = never) and every
    ``occluder_every``-th has an occluder passing in front (0 = never); each video has 1 to
    ``distractors`` unannotated distractor shapes.
    """

    sequences: int = 14
    val_sequences: int = 4
    frames: int = 20
    frame_jitter: int = 4
    height: int = 64
    width: int = 112
    seed: int = 0
    pair_every: int = 3
    occluder_every: int = 2
    distractors: int = 2
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        problems = []
        if self.sequences < 2:
            problems.append(f"sequences must be ≥ 2 (one train, one val), got {self.sequences}")
        if not 1 <= self.val_sequences < max(self.sequences, 2):
            problems.append(
                f"val_sequences must be in 1..sequences-1 = 1..{self.sequences - 1}, "
                f"got {self.val_sequences}"
            )
        if self.frames < 2:
            problems.append(f"frames must be ≥ 2, got {self.frames}")
        if self.frames >= 2 and not 0 <= self.frame_jitter <= self.frames - 2:
            problems.append(
                f"frame_jitter must be in 0..frames-2 = 0..{self.frames - 2}, "
                f"got {self.frame_jitter}"
            )
        if self.height < 16 or self.width < 16:
            problems.append(f"height and width must be ≥ 16, got {self.height}×{self.width}")
        for name in ("pair_every", "occluder_every", "distractors", "seed"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be ≥ 0, got {getattr(self, name)}")
        if not 1 <= self.jpeg_quality <= 100:
            problems.append(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if problems:
            raise ValueError("invalid synthetic DAVIS spec: " + "; ".join(problems))

    @property
    def train_sequences(self) -> int:
        return self.sequences - self.val_sequences

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)
