"""DAVIS data: the folder layout, training clips, and a synthetic DAVIS generator.

Names are imported from their modules on first use, so ``from d2bench.data import SynthSpec``
costs nothing and only :class:`TrainClips` pulls in torch; the rest needs numpy and Pillow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .davis import frame_names, list_sequences, read_frames, read_masks
    from .errors import DavisError
    from .images import davis_palette, read_ids, read_rgb, write_ids
    from .padding import pad_to_multiple
    from .spec import SynthSpec
    from .synth import ensure_synthetic_davis, write_synthetic_davis
    from .train_clips import TrainClips
    from .windows import clip_frame_ids, foreground

_MODULE_OF = {
    "DavisError": "errors",
    "SynthSpec": "spec",
    "TrainClips": "train_clips",
    "clip_frame_ids": "windows",
    "davis_palette": "images",
    "ensure_synthetic_davis": "synth",
    "foreground": "windows",
    "frame_names": "davis",
    "list_sequences": "davis",
    "pad_to_multiple": "padding",
    "read_frames": "davis",
    "read_ids": "images",
    "read_masks": "davis",
    "read_rgb": "images",
    "write_ids": "images",
    "write_synthetic_davis": "synth",
}

__all__ = [
    "DavisError",
    "SynthSpec",
    "TrainClips",
    "clip_frame_ids",
    "davis_palette",
    "ensure_synthetic_davis",
    "foreground",
    "frame_names",
    "list_sequences",
    "pad_to_multiple",
    "read_frames",
    "read_ids",
    "read_masks",
    "read_rgb",
    "write_ids",
    "write_synthetic_davis",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
