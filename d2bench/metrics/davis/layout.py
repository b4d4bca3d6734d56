"""Where things are on disk: DAVIS root, image sets, annotation frames, result PNGs.

A DAVIS root holds ``ImageSets/`` and ``Annotations/480p/<sequence>/<frame>.png`` (plus
``Annotations_unsupervised/480p`` for the unsupervised protocol). Results follow the DAVIS
convention ``<results>/<sequence>/<frame>.png`` with the annotation's frame names.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .errors import EvalError

RESOLUTION = "480p"

#: PNG modes whose pixel values are object ids: palette, greyscale, 1-bit.
LABEL_MODES = ("P", "L", "1")


def resolve_root(davis_root: str | Path) -> Path:
    """The folder holding ``ImageSets`` and ``Annotations`` (``ROOT`` or ``ROOT/DAVIS``)."""
    root = Path(davis_root)
    if not root.is_dir():
        raise EvalError(f"DAVIS root {root} is not a folder")
    for candidate in (root, root / "DAVIS"):
        if (candidate / "ImageSets").is_dir() and (candidate / "Annotations").is_dir():
            return candidate
    raise EvalError(
        f"{root} is not a DAVIS root: expected the folders ImageSets/ and Annotations/ in it "
        f"(or in {root / 'DAVIS'})"
    )


def available_imagesets(root: Path) -> list[str]:
    """Image-set names (``2016/val``, ...) found under ``root/ImageSets``."""
    base = root / "ImageSets"
    return sorted(path.relative_to(base).with_suffix("").as_posix() for path in base.rglob("*.txt"))


def read_imageset(root: Path, imageset: str) -> list[str]:
    """Sequence names of ``ImageSets/<imageset>.txt`` in file order, each once.

    A line is a sequence name (DAVIS 2017 layout) or, in the original DAVIS 2016 release
    (``480p/val``), an image path and an annotation path, whose folder names the sequence.
    """
    path = root / "ImageSets" / f"{imageset}.txt"
    if not path.is_file():
        known = ", ".join(available_imagesets(root)) or "none"
        raise EvalError(f"image set {imageset!r} not found ({path}); available: {known}")
    sequences: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if not fields:
            continue
        name = Path(fields[0]).parent.name if "/" in fields[0] else fields[0]
        if name and name not in sequences:
            sequences.append(name)
    if not sequences:
        raise EvalError(f"image set {path} lists no sequences")
    return sequences


def annotation_folder(root: Path, annotations: str, sequence: str) -> Path:
    return root / annotations / RESOLUTION / sequence


def list_frames(root: Path, annotations: str, sequence: str) -> list[str]:
    """Frame names (file stems, sorted) of a sequence's ground truth."""
    folder = annotation_folder(root, annotations, sequence)
    if not folder.is_dir():
        raise EvalError(f"sequence {sequence}: no ground-truth folder {folder}")
    frames = sorted(path.stem for path in folder.glob("*.png"))
    if not frames:
        raise EvalError(f"sequence {sequence}: no PNG annotations in {folder}")
    return frames


def read_label_png(path: Path, *, sequence: str, frame: str, what: str) -> tuple[np.ndarray, str]:
    """A PNG's pixel values as a uint8 H×W array of ids (palette indices, not colours), and
    its mode (``P``, ``L`` or ``1``).

    ``what`` ("result" or "annotation") goes into the error messages, which name the sequence
    and the frame: a missing file, an unreadable one, or one in a colour mode.
    """
    where = f"sequence {sequence}, frame {frame}"
    if not path.is_file():
        raise EvalError(f"{where}: missing {what} PNG {path}")
    try:
        with Image.open(path) as image:
            mode = image.mode
            if mode not in LABEL_MODES:
                raise EvalError(
                    f"{where}: {what} PNG {path} has mode {mode!r}; expected object ids as a "
                    f"palette ('P') or greyscale ('L') PNG, not colours"
                )
            array = np.asarray(image)
    except EvalError:
        raise
    except Exception as error:  # Pillow raises several types for a broken file
        raise EvalError(f"{where}: cannot read {what} PNG {path}: {error}") from error
    if array.dtype != np.uint8:
        array = array.astype(np.uint8)
    return array, mode
