"""A synthetic DAVIS: small deterministic videos written in exactly the DAVIS folder layout.

It lets the whole pipeline (training, clip inference, the DAVIS metric, studies, reports) run
where the real DAVIS is not available, at a size a CPU trains on in minutes. The set is built
in a hidden sibling folder and moved into place when complete, and ``meta.json`` (written last)
records the spec, so :func:`ensure_synthetic_davis` can reuse a matching set and several
processes asking for the same set at once do not see a half-written one.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .davis import ANNOTATIONS_DIR, FRAMES_DIR, IMAGESETS_DIR, UNSUPERVISED_DIR
from .errors import DavisError
from .images import write_ids, write_rgb
from .spec import SynthSpec
from .synth_scene import Grid, Scene

#: Bump when the generator's output changes for the same spec: existing sets are then rebuilt.
GENERATOR_VERSION = 1
META_FILE = "meta.json"
GENERATOR_NAME = "d2bench synthetic DAVIS"

Progress = Callable[[str], None]
DEFAULT_SPEC = SynthSpec()


@dataclass(frozen=True)
class SequencePlan:
    """One video of the set: its name, split, length and what appears in it."""

    name: str
    split: str
    index: int
    length: int
    objects: int
    occluded: bool
    distractors: int


def plan_sequences(spec: SynthSpec) -> list[SequencePlan]:
    """The videos a spec describes, train first; deterministic in the spec alone."""
    plans = []
    for split, count in (("train", spec.train_sequences), ("val", spec.val_sequences)):
        for index in range(count):
            rng = _sequence_rng(spec, split, index, purpose=0)
            jitter = int(rng.integers(0, spec.frame_jitter + 1))
            distractors = int(rng.integers(1, spec.distractors + 1)) if spec.distractors else 0
            plans.append(
                SequencePlan(
                    name=f"{split}-{index:02d}",
                    split=split,
                    index=index,
                    length=spec.frames - jitter,
                    objects=2 if _every(spec.pair_every, index) else 1,
                    occluded=_every(spec.occluder_every, index),
                    distractors=distractors,
                )
            )
    return plans


def render_sequence(spec: SynthSpec, plan: SequencePlan) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 T×H×W×3 frames, uint8 T×H×W object ids) of one planned video."""
    rng = _sequence_rng(spec, plan.split, plan.index, purpose=1)
    scene = Scene.sample(
        rng,
        spec.height,
        spec.width,
        plan.length,
        num_objects=plan.objects,
        num_distractors=plan.distractors,
        occluded=plan.occluded,
    )
    grid = Grid.of(spec.height, spec.width)
    rendered = [scene.render(t, grid) for t in range(plan.length)]
    return np.stack([image for image, _ in rendered]), np.stack([ids for _, ids in rendered])


def write_synthetic_davis(
    out: Path | str, spec: SynthSpec = DEFAULT_SPEC, progress: Progress | None = None
) -> Path:
    """Generate the set described by ``spec`` into ``out`` (replacing an earlier synthetic set).

    Refuses to touch a non-empty folder that is not a synthetic set (no ``meta.json`` of ours),
    so a real DAVIS root is never overwritten. Returns ``out``.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DavisError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and read_meta(out) is None:
        raise DavisError(
            f"{out}: folder is not empty and holds no synthetic DAVIS {META_FILE}; "
            "refusing to overwrite it (choose an empty or new folder)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the installed set should not be
    try:
        _generate(staging, spec, progress)
        _install(staging, out, spec)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if progress:
        progress(f"synthetic DAVIS ready at {out}")
    return out


def ensure_synthetic_davis(
    out: Path | str, spec: SynthSpec = DEFAULT_SPEC, progress: Progress | None = None
) -> Path:
    """``out`` holding the set of ``spec``: reused if its ``meta.json`` matches, else generated."""
    out = Path(out)
    if matches_spec(out, spec):
        return out
    return write_synthetic_davis(out, spec, progress)


def read_meta(root: Path | str) -> dict[str, Any] | None:
    """The ``meta.json`` of a synthetic set, or None where there is none (or it is not ours)."""
    path = Path(root) / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("generator") != GENERATOR_NAME:
        return None
    return meta


def matches_spec(root: Path | str, spec: SynthSpec) -> bool:
    """Whether ``root`` holds a complete synthetic set made from ``spec`` by this generator."""
    meta = read_meta(root)
    return (
        meta is not None
        and meta.get("generator_version") == GENERATOR_VERSION
        and meta.get("spec") == spec.to_dict()
    )


def _every(period: int, index: int) -> bool:
    return period > 0 and index % period == period - 1


def _sequence_rng(spec: SynthSpec, split: str, index: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng([spec.seed, 0 if split == "train" else 1, index, purpose])


def _generate(root: Path, spec: SynthSpec, progress: Progress | None) -> None:
    plans = plan_sequences(spec)
    for number, plan in enumerate(plans, start=1):
        frames, ids = render_sequence(spec, plan)
        frame_dir = root / FRAMES_DIR / plan.name
        mask_dirs = [root / ANNOTATIONS_DIR / plan.name, root / UNSUPERVISED_DIR / plan.name]
        for folder in (frame_dir, *mask_dirs):
            folder.mkdir(parents=True)
        for t in range(plan.length):
            write_rgb(frame_dir / f"{t:05d}.jpg", frames[t], quality=spec.jpeg_quality)
            png = io.BytesIO()
            write_ids(png, ids[t])
            for folder in mask_dirs:
                (folder / f"{t:05d}.png").write_bytes(png.getvalue())
        if progress:
            extras = [f"{plan.objects} object{'s' if plan.objects > 1 else ''}"]
            if plan.occluded:
                extras.append("occluder")
            progress(
                f"[{number}/{len(plans)}] {plan.name}: {plan.length} frames "
                f"{spec.height}×{spec.width}, {', '.join(extras)}"
            )
    for year in ("2016", "2017"):
        folder = root / IMAGESETS_DIR / year
        folder.mkdir(parents=True)
        for split in ("train", "val"):
            names = [plan.name for plan in plans if plan.split == split]
            (folder / f"{split}.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    meta = {
        "generator": GENERATOR_NAME,
        "generator_version": GENERATOR_VERSION,
        "spec": spec.to_dict(),
        "sequences": {
            plan.name: {
                "split": plan.split,
                "frames": plan.length,
                "objects": plan.objects,
                "occluded": plan.occluded,
                "distractors": plan.distractors,
            }
            for plan in plans
        },
    }
    (root / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def _install(staging: Path, out: Path, spec: SynthSpec) -> None:
    """Move the finished set into place; an older set at ``out`` is moved aside, then removed."""
    retired: Path | None = None
    if out.exists():
        retired = out.parent / f".{out.name}.old-{uuid.uuid4().hex}"
        try:
            out.rename(retired)
        except FileNotFoundError:  # another process moved it away first
            retired = None
    try:
        staging.rename(out)
    except OSError:
        # Another process installed a set in between: fine if it is the one we wanted.
        if not matches_spec(out, spec):
            raise DavisError(f"{out}: another synthetic set appeared while writing") from None
    finally:
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)
