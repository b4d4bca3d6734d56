"""Training clips of a DAVIS image set, as the original: one sample per (sequence, frame)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .davis import UNSUPERVISED_DIR, check_root, frame_paths, list_sequences, mask_paths
from .errors import DavisError
from .images import read_ids, read_rgb
from .padding import pad_to_multiple
from .windows import check_clip_window, draw_clips, foreground, nonzero_foreground

#: Default budget of the decoded-frame cache of one dataset instance (one per loader worker).
DEFAULT_CACHE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class _Sequence:
    name: str
    frames: tuple[Path, ...]
    masks: tuple[Path, ...]
    #: Labels read from ``Annotations_unsupervised``: any non-zero id is foreground there.
    unsupervised: bool


class _FrameCache:
    """A least-recently-used cache of decoded (frame, foreground) pairs, bounded in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def get(self, key: tuple[int, int]) -> tuple[np.ndarray, np.ndarray] | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: tuple[int, int], item: tuple[np.ndarray, np.ndarray]) -> None:
        size = item[0].nbytes + item[1].nbytes
        if size > self.max_bytes:
            return
        self._items[key] = item
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (frame, mask) = self._items.popitem(last=False)
            self.bytes -= frame.nbytes + mask.nbytes


class TrainClips(Dataset):
    """Clips of ``clip_len`` frames with binary masks, one per frame of every listed sequence.

    The clip of frame i comes from the window [i − window, i + window) as ``clip_sampling``
    says (:mod:`.windows`): ``random-sorted`` (the original's: drawn with replacement from the
    window truncated at the video's ends, sorted) or ``consecutive`` (the window shifted inside
    the video). Random clips are drawn once, here, from ``seed`` and the DDP ``rank``, so every
    epoch and every rebuild (a resumed run) sees the same clips, and ranks draw differently.
    Frames are resized to ``size`` = (H, W) (bilinear; masks nearest; None keeps the native
    size) and zero-padded on both sides (centred) to a multiple of ``pad_multiple``. Masks are
    binarised: labels from ``Annotations_unsupervised`` (what the original trained on) count
    any non-zero id as foreground, void (255) included, as the original does; labels from
    ``Annotations`` count objects 1..254 (void is background, as the DAVIS metric reads them).

    A sample is a dict: ``frames`` float32 3×T×H×W in [0, 1], ``masks`` float32 1×T×H×W in
    {0, 1}, ``sequence`` (str) and ``frame_ids`` (list of int). The order of samples is not
    random: shuffling is the DataLoader's job. Decoded frames are kept in a bounded
    per-instance cache, so small (synthetic) sets are decoded once.
    """

    def __init__(
        self,
        root: Path | str,
        imageset: str = "2017/train",
        clip_len: int = 8,
        window: int = 4,
        size: tuple[int, int] | None = (480, 854),
        pad_multiple: int = 32,
        mask_folder: str = "auto",
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        clip_sampling: str = "random-sorted",
        seed: int = 0,
        rank: int = 0,
    ) -> None:
        check_clip_window(clip_len, window)
        if size is not None and (len(size) != 2 or min(size) < 1):
            raise ValueError(f"size must be (H, W) with positive sides or None, got {size!r}")
        if pad_multiple < 1:
            raise ValueError(f"pad_multiple must be ≥ 1, got {pad_multiple}")
        self.root = check_root(root)
        self.imageset = imageset
        self.clip_len = clip_len
        self.window = window
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.pad_multiple = pad_multiple
        self.clip_sampling = clip_sampling
        self._sequences = [
            self._sequence(name, mask_folder) for name in list_sequences(self.root, imageset)
        ]
        self._samples = [
            (seq_index, frame)
            for seq_index, sequence in enumerate(self._sequences)
            for frame in range(len(sequence.frames))
        ]
        lengths = [len(sequence.frames) for sequence in self._sequences]
        self._clips = draw_clips(lengths, clip_sampling, seed, rank, clip_len, window)
        self._cache = _FrameCache(cache_bytes)

    def _sequence(self, name: str, mask_folder: str) -> _Sequence:
        masks = tuple(mask_paths(self.root, name, mask_folder))
        unsupervised = masks[0].parent.parent == self.root / UNSUPERVISED_DIR
        return _Sequence(name, tuple(frame_paths(self.root, name)), masks, unsupervised)

    def frame_ids(self, index: int) -> list[int]:
        """The frames of sample ``index``'s clip, without decoding anything."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        return list(self._clips[index])

    @property
    def sequences(self) -> list[str]:
        """Sequence names in image-set order."""
        return [sequence.name for sequence in self._sequences]

    @property
    def lengths(self) -> dict[str, int]:
        """Number of frames of each sequence."""
        return {sequence.name: len(sequence.frames) for sequence in self._sequences}

    def __len__(self) -> int:
        return len(self._samples)

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        seq_index, _ = self._samples[index]
        sequence = self._sequences[seq_index]
        ids = list(self._clips[index])
        pairs = [self._load(seq_index, frame_id) for frame_id in ids]
        frames = torch.from_numpy(np.stack([rgb for rgb, _ in pairs]))  # T×H×W×3 uint8
        masks = torch.from_numpy(np.stack([mask for _, mask in pairs]))  # T×H×W uint8
        frames = frames.permute(3, 0, 1, 2).to(torch.float32).div_(255.0)
        masks = masks.unsqueeze(0).to(torch.float32)
        frames, _ = pad_to_multiple(frames, self.pad_multiple)
        masks, _ = pad_to_multiple(masks, self.pad_multiple)
        return {
            "frames": frames.contiguous(),
            "masks": masks.contiguous(),
            "sequence": sequence.name,
            "frame_ids": ids,
        }

    def _load(self, seq_index: int, frame: int) -> tuple[np.ndarray, np.ndarray]:
        key = (seq_index, frame)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        sequence = self._sequences[seq_index]
        rgb = read_rgb(sequence.frames[frame])
        ids = read_ids(sequence.masks[frame])
        if ids.shape != rgb.shape[:2]:
            raise DavisError(
                f"{sequence.masks[frame]}: size {ids.shape[0]}×{ids.shape[1]} differs from "
                f"{rgb.shape[0]}×{rgb.shape[1]} of frame {sequence.frames[frame]}"
            )
        mask = nonzero_foreground(ids) if sequence.unsupervised else foreground(ids)
        if self.size is not None and self.size != rgb.shape[:2]:
            target = (self.size[1], self.size[0])  # Pillow takes (W, H)
            rgb = np.asarray(Image.fromarray(rgb).resize(target, Image.Resampling.BILINEAR))
            mask = np.asarray(Image.fromarray(mask).resize(target, Image.Resampling.NEAREST))
        item = (rgb, mask)
        self._cache.put(key, item)
        return item
