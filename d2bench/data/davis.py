"""The DAVIS folder layout: sequence lists, frame names, whole-sequence frames and masks.

A DAVIS root holds ``JPEGImages/480p/<seq>/00000.jpg``, ``Annotations/480p/<seq>/00000.png``
(palette ids), optionally ``Annotations_unsupervised/480p/...`` and ``ImageSets/<year>/<split>.txt``
(one sequence name per line). Every problem is reported as a :class:`DavisError` naming the
file or folder, checked before any decoding where that is cheap.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import DavisError
from .images import image_size, read_ids, read_rgb

RESOLUTION = "480p"
FRAMES_DIR = Path("JPEGImages") / RESOLUTION
ANNOTATIONS_DIR = Path("Annotations") / RESOLUTION
UNSUPERVISED_DIR = Path("Annotations_unsupervised") / RESOLUTION
IMAGESETS_DIR = Path("ImageSets")

#: Short names accepted for ``read_masks(folder=...)``, besides "auto" and relative paths.
MASK_FOLDERS = {"Annotations": ANNOTATIONS_DIR, "Annotations_unsupervised": UNSUPERVISED_DIR}


def check_root(root: Path | str) -> Path:
    """The root as a Path, or a DavisError if it is not an existing folder."""
    path = Path(root)
    if not path.is_dir():
        raise DavisError(f"{path}: DAVIS root folder not found")
    return path


def imageset_path(root: Path | str, imageset: str) -> Path:
    """``ImageSets/<year>/<split>.txt`` for an image set named like ``"2016/val"``."""
    parts = imageset.strip("/").split("/")
    if len(parts) != 2 or not all(parts):
        raise DavisError(
            f"image set {imageset!r}: expected '<year>/<split>', e.g. '2016/val' or '2017/train'"
        )
    return Path(root) / IMAGESETS_DIR / parts[0] / f"{parts[1]}.txt"


def list_sequences(root: Path | str, imageset: str) -> list[str]:
    """Sequence names listed in ``ImageSets/<imageset>.txt``, in file order, duplicates dropped."""
    path = imageset_path(check_root(root), imageset)
    if not path.is_file():
        raise DavisError(f"{path}: image set file not found")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DavisError(f"{path}: unreadable image set file ({error})") from None
    names = list(dict.fromkeys(line.strip() for line in lines if line.strip()))
    if not names:
        raise DavisError(f"{path}: image set file lists no sequences")
    for name in names:
        if len(name.split()) != 1 or "/" in name:
            raise DavisError(
                f"{path}: line {name!r} is not a sequence name (one name per line; the DAVIS "
                "2016 frame-pair lists of ImageSets/480p are not supported)"
            )
    return names


def sequence_dir(root: Path | str, sequence: str) -> Path:
    """The frame folder of a sequence; DavisError if missing."""
    folder = check_root(root) / FRAMES_DIR / sequence
    if not folder.is_dir():
        raise DavisError(f"{folder}: sequence folder not found")
    return folder


def frame_names(root: Path | str, sequence: str) -> list[str]:
    """Sorted frame names (file stems, e.g. ``"00000"``) of a sequence's JPEGs."""
    folder = sequence_dir(root, sequence)
    names = sorted(path.stem for path in folder.iterdir() if path.suffix.lower() == ".jpg")
    if not names:
        raise DavisError(f"{folder}: no frames (*.jpg) in sequence folder")
    return names


def mask_dir(root: Path | str, sequence: str, folder: str = "auto") -> Path:
    """The annotation folder of a sequence.

    ``folder="auto"`` takes ``Annotations_unsupervised/480p`` where the root has it (what the
    original training read) and ``Annotations/480p`` otherwise. Otherwise ``folder`` is
    ``"Annotations"``, ``"Annotations_unsupervised"`` or a folder relative to the root.
    """
    base = check_root(root)
    if folder == "auto":
        relative = UNSUPERVISED_DIR if (base / UNSUPERVISED_DIR).is_dir() else ANNOTATIONS_DIR
    else:
        relative = MASK_FOLDERS.get(folder, Path(folder))
        if relative.is_absolute() or ".." in relative.parts:
            raise DavisError(
                f"mask folder {folder!r}: expected 'auto', 'Annotations', "
                "'Annotations_unsupervised' or a folder inside the DAVIS root"
            )
    path = base / relative / sequence
    if not path.is_dir():
        raise DavisError(f"{path}: annotation folder not found")
    return path


def mask_paths(root: Path | str, sequence: str, folder: str = "auto") -> list[Path]:
    """One annotation path per frame, in frame order; checks that every frame has one."""
    names = frame_names(root, sequence)
    directory = mask_dir(root, sequence, folder)
    present = {path.stem for path in directory.iterdir() if path.suffix.lower() == ".png"}
    if len(present) != len(names):
        raise DavisError(
            f"{directory}: {len(present)} annotations (*.png) for {len(names)} frames in "
            f"{sequence_dir(root, sequence)}"
        )
    for name in names:
        if name not in present:
            raise DavisError(f"{directory / (name + '.png')}: annotation of frame {name} not found")
    return [directory / f"{name}.png" for name in names]


def frame_paths(root: Path | str, sequence: str) -> list[Path]:
    """The sequence's JPEG paths in frame order."""
    folder = sequence_dir(root, sequence)
    return [folder / f"{name}.jpg" for name in frame_names(root, sequence)]


def read_frames(root: Path | str, sequence: str) -> np.ndarray:
    """All frames of a sequence: uint8 T×H×W×3, sorted by name; sizes must agree."""
    paths = frame_paths(root, sequence)
    frames = [read_rgb(path) for path in paths]
    _check_same_size(frames, paths, frames[0].shape[:2], f"first frame {paths[0].name}")
    return np.stack(frames)


def read_masks(root: Path | str, sequence: str, folder: str = "auto") -> np.ndarray:
    """All annotations of a sequence as palette ids: uint8 T×H×W.

    Each annotation must exist for every frame and have the frame's size (read from the first
    frame's header, without decoding it).
    """
    paths = mask_paths(root, sequence, folder)
    first_frame = frame_paths(root, sequence)[0]
    masks = [read_ids(path) for path in paths]
    _check_same_size(masks, paths, image_size(first_frame), f"frame {first_frame}")
    return np.stack(masks)


def _check_same_size(
    arrays: list[np.ndarray], paths: list[Path], size: tuple[int, int], reference: str
) -> None:
    for array, path in zip(arrays, paths, strict=True):
        if array.shape[:2] != tuple(size):
            height, width = array.shape[:2]
            raise DavisError(
                f"{path}: size {height}×{width} differs from {size[0]}×{size[1]} of {reference}"
            )
