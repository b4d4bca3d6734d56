"""Synthetic DAVIS-format masks with imperfect results, for the tests and ``bench eval``.

Only masks: J&F reads no images. Each sequence has 1..3 objects, wobbly ellipses moving
across the frame (later ones occlude earlier ones), sometimes with a void band around an
object. Results are the ground truth made imperfect: shifted, shrunk or grown, jittered,
with stray blobs, dropped objects and a few empty frames. Unsupervised results renumber the
objects as proposals and add false positives.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .layout import RESOLUTION

#: DAVIS 2016 val: sequence → number of frames (1376 in all).
DAVIS16_VAL_FRAMES: dict[str, int] = {
    "blackswan": 50,
    "bmx-trees": 80,
    "breakdance": 84,
    "camel": 90,
    "car-roundabout": 75,
    "car-shadow": 40,
    "cows": 104,
    "dance-twirl": 90,
    "dog": 60,
    "drift-chicane": 52,
    "drift-straight": 50,
    "goat": 90,
    "horsejump-high": 50,
    "kite-surf": 50,
    "libby": 49,
    "motocross-jump": 40,
    "paragliding-launch": 80,
    "parkour": 100,
    "scooter-black": 43,
    "soapbox": 99,
}


def _palette() -> list[int]:
    """The DAVIS colour palette layout: 0 black, then distinct colours, 255 white (void)."""
    rng = np.random.default_rng(1)
    colours = rng.integers(40, 256, size=(256, 3))
    colours[0] = 0
    colours[255] = 255
    return [int(c) for c in colours.ravel()]


_PALETTE = _palette()


def save_ids(path: Path, ids: np.ndarray, *, greyscale: bool = False) -> None:
    """Write a uint8 id image as a palette PNG (or a greyscale one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if greyscale:
        Image.fromarray(ids, mode="L").save(path)
        return
    image = Image.fromarray(ids, mode="P")
    image.putpalette(_PALETTE)
    image.save(path)


@dataclass(frozen=True)
class _Track:
    """An object's path: centre, radii and boundary wobble as functions of time."""

    centre: np.ndarray  # (2,) at t = 0, in pixels
    velocity: np.ndarray  # (2,) pixels per frame
    radii: np.ndarray  # (2,)
    wobble: np.ndarray  # (3,) harmonic amplitudes (fractions of the radius)
    phase: float

    def shape_at(self, t: int, scale: float = 1.0, shift: tuple[float, float] = (0.0, 0.0)):
        sway = np.array([np.sin(0.11 * t + self.phase), np.cos(0.07 * t + self.phase)])
        centre = self.centre + self.velocity * t + 6.0 * sway + np.asarray(shift)
        radii = self.radii * scale * (1.0 + 0.1 * np.sin(0.05 * t + self.phase))
        return centre, radii


def _paint(
    canvas: np.ndarray,
    value: int,
    centre: np.ndarray,
    radii: np.ndarray,
    wobble: np.ndarray,
    phase: float,
    only: np.ndarray | None = None,
) -> None:
    """Set the pixels of a wobbly ellipse to ``value`` (on its bounding box only)."""
    height, width = canvas.shape
    reach = radii * (1.0 + float(np.abs(wobble).sum())) + 1.0
    y0, y1 = int(max(centre[0] - reach[0], 0)), int(min(centre[0] + reach[0] + 1, height))
    x0, x1 = int(max(centre[1] - reach[1], 0)), int(min(centre[1] + reach[1] + 1, width))
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    dy, dx = (yy - centre[0]) / radii[0], (xx - centre[1]) / radii[1]
    angle = np.arctan2(dy, dx)
    limit = 1.0 + sum(a * np.sin((i + 2) * angle + phase) for i, a in enumerate(wobble))
    inside = dy * dy + dx * dx < limit * limit
    if only is not None:
        inside &= only[y0:y1, x0:x1]
    canvas[y0:y1, x0:x1][inside] = value


def _tracks(rng: np.random.Generator, count: int, height: int, width: int) -> list[_Track]:
    tracks = []
    for _ in range(count):
        radii = np.array([rng.uniform(0.12, 0.3) * height, rng.uniform(0.08, 0.22) * width])
        tracks.append(
            _Track(
                centre=np.array([rng.uniform(0.3, 0.7) * height, rng.uniform(0.2, 0.8) * width]),
                velocity=rng.normal(0.0, 0.004, size=2) * np.array([height, width]),
                radii=radii,
                wobble=rng.uniform(-0.08, 0.08, size=3),
                phase=float(rng.uniform(0, 2 * np.pi)),
            )
        )
    return tracks


def _ground_truth(tracks: list[_Track], t: int, shape: tuple[int, int], void_band: bool):
    labels = np.zeros(shape, dtype=np.uint8)
    for index, track in enumerate(tracks, start=1):
        centre, radii = track.shape_at(t)
        if void_band and index == 1:  # a void ring: the object grown by a few pixels
            _paint(labels, 255, centre, radii + 3.0, track.wobble, track.phase)
        _paint(labels, index, centre, radii, track.wobble, track.phase)
    return labels


def _imperfect(
    rng: np.random.Generator,
    tracks: list[_Track],
    t: int,
    shape: tuple[int, int],
    ids: list[int],
    errors: dict[str, np.ndarray],
    strays: int,
) -> np.ndarray:
    """A result frame: object i painted with id ``ids[i]``, distorted; plus stray blobs."""
    labels = np.zeros(shape, dtype=np.uint8)
    if rng.random() < 0.03:  # a frame the method lost entirely
        return labels
    for index, track in enumerate(tracks):
        if rng.random() < 0.04:  # this object missed in this frame
            continue
        drift = errors["shift"][index] * (1.0 + 0.02 * t)
        centre, radii = track.shape_at(t, scale=errors["scale"][index], shift=tuple(drift))
        jitter = track.wobble + rng.normal(0.0, 0.01, size=3)
        _paint(labels, ids[index], centre, radii, jitter, track.phase + 0.1)
    height, width = shape
    for _ in range(strays):
        if rng.random() < 0.5:
            centre = np.array([rng.uniform(0, height), rng.uniform(0, width)])
            radii = np.array([rng.uniform(3, 25), rng.uniform(3, 25)])
            value = int(rng.choice(ids + errors["extra_ids"].tolist()))
            _paint(labels, value, centre, radii, np.zeros(3), 0.0)
    return labels


def write_mask_set(
    folder: Path,
    sequences: Mapping[str, int],
    *,
    height: int = 480,
    width: int = 854,
    seed: int = 0,
    max_objects: int = 3,
    extra_proposals: int = 3,
    greyscale_sequences: tuple[str, ...] = (),
) -> dict[str, Path]:
    """Write a DAVIS root and two result folders for ``sequences`` (name → frame count).

    Returns the paths: ``root`` (``ImageSets/2016/val.txt`` and ``2017/val.txt`` list all
    sequences; ``Annotations`` and ``Annotations_unsupervised`` hold the same palette masks),
    ``semi`` (results with ids 1..K, also fine for ``davis16``) and ``unsupervised`` (up to
    K + ``extra_proposals`` proposals). Sequences in ``greyscale_sequences`` get DAVIS 2016
    style greyscale 0/255 annotations (one object) instead.
    """
    folder = Path(folder)
    root = folder / "DAVIS"
    paths = {
        "root": root,
        "semi": folder / "results-semi",
        "unsupervised": folder / "results-unsup",
    }
    for imageset in ("2016/val", "2017/val"):
        listing = root / "ImageSets" / f"{imageset}.txt"
        listing.parent.mkdir(parents=True, exist_ok=True)
        listing.write_text("".join(f"{name}\n" for name in sequences), encoding="utf-8")
    rng = np.random.default_rng(seed)
    shape = (height, width)
    for name, length in sequences.items():
        greyscale = name in greyscale_sequences
        count = 1 if greyscale else int(rng.integers(1, max_objects + 1))
        tracks = _tracks(rng, count, height, width)
        void_band = not greyscale and rng.random() < 0.5
        errors = {
            "shift": rng.normal(0.0, 0.015, size=(count, 2)) * np.array([height, width]),
            "scale": rng.uniform(0.85, 1.1, size=count),
            "extra_ids": np.arange(count + 1, count + 1 + extra_proposals),
        }
        proposal_ids = [int(v) for v in rng.permutation(count + extra_proposals)[:count] + 1]
        for t in range(length):
            frame = f"{t:05d}.png"
            gt = _ground_truth(tracks, t, shape, void_band)
            if greyscale:
                save_ids(
                    root / "Annotations" / RESOLUTION / name / frame,
                    (gt != 0).astype(np.uint8) * 255,
                    greyscale=True,
                )
            else:
                for annotations in ("Annotations", "Annotations_unsupervised"):
                    save_ids(root / annotations / RESOLUTION / name / frame, gt)
            semi_ids = list(range(1, count + 1))
            semi = _imperfect(
                rng, tracks, t, shape, semi_ids, {**errors, "extra_ids": np.zeros(0, int)}, 2
            )
            save_ids(paths["semi"] / name / frame, semi)
            unsup = _imperfect(rng, tracks, t, shape, proposal_ids, errors, 4)
            save_ids(paths["unsupervised"] / name / frame, unsup)
    return paths
