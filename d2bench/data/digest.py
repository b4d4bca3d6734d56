"""What identifies a data set without opening an image: the names and sizes of what a cell reads.

A cell's key must be the same wherever the data sits (``~/DAVIS`` on a laptop, ``/scratch/DAVIS``
on a cluster) and must change when the data does. :func:`davis_digest` covers the image sets a
cell names (their sequence lists, in order) and, for each listed sequence, the name and size of
every frame (``JPEGImages/480p/*.jpg``) and annotation (``Annotations/480p/*.png``, and
``Annotations_unsupervised/480p/*.png`` where the root has that folder): one listing per folder
and one ``stat`` per file. Files a cell does not read (``.DS_Store``, other resolutions, other
sequences) do not count, so a copy made on another system keeps its digest.

There is no cache on disk: a cached digest could only be trusted after a ``stat`` of every file
(a file rewritten in place changes its size without touching its folder), and that is all the
digest costs. A synthetic set is identified by :func:`synthetic_digest` instead: it is written
after the study is planned, and its spec and the generator's version determine it.

Torch-free: ``d2bench plan`` computes digests on machines without a GPU stack.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .davis import ANNOTATIONS_DIR, FRAMES_DIR, IMAGESETS_DIR, UNSUPERVISED_DIR

#: Bump when what the digest covers changes (every real-data cell key changes with it).
DIGEST_FORMAT = 1

#: (folder under the root, the suffix of the files a cell reads there, required).
SEQUENCE_FOLDERS: tuple[tuple[Path, str, bool], ...] = (
    (FRAMES_DIR, ".jpg", True),
    (ANNOTATIONS_DIR, ".png", True),
    (UNSUPERVISED_DIR, ".png", False),
)


def davis_digest(root: Path | str, imagesets: Iterable[str]) -> str:
    """``davis-<sha256>`` of the image sets ``imagesets`` under the DAVIS folder ``root``.

    Never fails on a damaged layout (a missing set file or sequence folder is part of what is
    hashed): the cell that reads it reports the problem, naming the file.
    """
    base = Path(root)
    sets = {name: imageset_sequences(base, name) for name in dict.fromkeys(imagesets)}
    sequences = sorted({name for names in sets.values() for name in names or () if _plain(name)})
    folders = [
        (folder, suffix)
        for folder, suffix, required in SEQUENCE_FOLDERS
        if required or (base / folder).is_dir()
    ]
    listing = {
        sequence: {folder.as_posix(): _files(base / folder / sequence, suffix)
                   for folder, suffix in folders}
        for sequence in sequences
    }  # fmt: skip
    return "davis-" + _sha256({"format": DIGEST_FORMAT, "sets": sets, "sequences": listing})


def synthetic_digest(spec: Any) -> str:
    """``synthetic-<sha256>`` of a :class:`~d2bench.data.SynthSpec` and the generator version."""
    from .synth import GENERATOR_VERSION

    return "synthetic-" + _sha256({"generator": GENERATOR_VERSION, "spec": spec.to_dict()})


def imageset_sequences(root: Path, imageset: str) -> list[str] | None:
    """The lines of ``ImageSets/<imageset>.txt`` (first field, stripped, each once, in order);
    None when the file is missing or unreadable."""
    path = root / IMAGESETS_DIR / f"{imageset.strip('/')}.txt"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    fields = (line.split() for line in text.splitlines())
    return list(dict.fromkeys(parts[0] for parts in fields if parts))


def _plain(name: str) -> bool:
    """A sequence name (not a frame path of the DAVIS 2016 pair lists, not a way out)."""
    return "/" not in name and name not in (".", "..")


def _files(folder: Path, suffix: str) -> list[tuple[str, int]] | None:
    """Sorted (name, size) of the visible ``*suffix`` files in ``folder``; None if no folder."""
    try:
        with os.scandir(folder) as entries:
            found = [
                (entry.name, entry.stat().st_size)
                for entry in entries
                if not entry.name.startswith(".")
                and entry.name.lower().endswith(suffix)
                and entry.is_file()
            ]
    except OSError:  # missing or unreadable: the cell that reads it names the folder
        return None
    return sorted(found)


def _sha256(payload: dict[str, Any]) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()
