"""The spec of a synthetic DAVIS set: stdlib only, so the CLI can show its defaults cheaply."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

#: Upper bounds past which a synthetic set is surely a typo (it would fill the disk or never end).
_UPPER_BOUNDS = {
    "sequences": 1000,
    "frames": 1000,
    "height": 2048,
    "width": 2048,
    "pair_every": 1000,
    "occluder_every": 1000,
    "distractors": 100,
    "seed": 2**63 - 1,
}


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
        problems = self.problems(dataclasses.asdict(self))
        if problems:
            raise ValueError(
                "invalid synthetic DAVIS spec: " + "; ".join(text for _, text in problems)
            )

    @staticmethod
    def problems(values: Mapping[str, object]) -> list[tuple[str, str]]:
        """(field, what is wrong) for every problem of these field values (the rest: defaults).

        A study validates its ``synthetic_data`` with this before anything is generated, so a
        bad size is an error naming its key, not a traceback after the plan is printed.
        """
        given = {**{f.name: f.default for f in dataclasses.fields(SynthSpec)}, **values}
        wrong_type = [
            (name, f"{name} must be an integer, got {value!r}")
            for name, value in given.items()
            if isinstance(value, bool) or not isinstance(value, int)
        ]
        if wrong_type:
            return wrong_type
        problems: list[tuple[str, str]] = []
        sequences, frames = given["sequences"], given["frames"]
        if sequences < 2:
            problems.append(
                ("sequences", f"sequences must be ≥ 2 (one train, one val), got {sequences}")
            )
        if not 1 <= given["val_sequences"] < max(sequences, 2):
            problems.append(
                ("val_sequences", f"val_sequences must be in 1..sequences-1 = "
                                  f"1..{sequences - 1}, got {given['val_sequences']}")
            )  # fmt: skip
        if frames < 2:
            problems.append(("frames", f"frames must be ≥ 2, got {frames}"))
        if frames >= 2 and not 0 <= given["frame_jitter"] <= frames - 2:
            problems.append(
                ("frame_jitter", f"frame_jitter must be in 0..frames-2 = 0..{frames - 2}, "
                                 f"got {given['frame_jitter']}")
            )  # fmt: skip
        if given["height"] < 16 or given["width"] < 16:
            problems.append(
                ("height" if given["height"] < 16 else "width",
                 f"height and width must be ≥ 16, got {given['height']}×{given['width']}")
            )  # fmt: skip
        for name in ("pair_every", "occluder_every", "distractors", "seed"):
            if given[name] < 0:
                problems.append((name, f"{name} must be ≥ 0, got {given[name]}"))
        for name, most in _UPPER_BOUNDS.items():
            if given[name] > most:
                problems.append((name, f"{name} must be ≤ {most}, got {given[name]}"))
        if not 1 <= given["jpeg_quality"] <= 100:
            problems.append(
                ("jpeg_quality", f"jpeg_quality must be in 1..100, got {given['jpeg_quality']}")
            )
        return problems

    @property
    def train_sequences(self) -> int:
        return self.sequences - self.val_sequences

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)
