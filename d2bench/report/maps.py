"""The paper's Fig. 4: one sequence's frames beside a replaced layer's predicted maps.

Reads the ``maps.npz`` a cell stores (written by ``d2bench.metrics.maps.save_maps``): keys
``<layer>/dilation`` (clips×3×T'×H'×W', axes t, y, x), ``<layer>/modulation_mean``
(clips×T'×H'×W'), an optional ``frames`` array (F×H×W×3, uint8 or floats in [0, 1]) and
``__metadata__`` (JSON: sequence, clip plan, variant). Read with numpy alone, so a report
needs no torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..names import PAPER_LABELS
from .figures import not_recorded_figure

_TITLE = "Predicted dilation and modulation (one sequence)"
#: At most this many time steps of a clip are drawn (one figure row each).
MAX_ROWS = 4


@dataclass(frozen=True)
class RecordedMaps:
    """What a maps file holds: per layer its arrays, the frames if stored, the metadata."""

    layers: dict[str, dict[str, np.ndarray]]
    frames: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def read_maps(path: str | Path) -> RecordedMaps:
    """Load a maps ``.npz``; ValueError naming the file when it is not one."""
    layers: dict[str, dict[str, np.ndarray]] = {}
    frames = None
    metadata: dict[str, Any] = {}
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a readable .npz maps file ({error})") from None
    with data:
        for key in data.files:
            layer, _, name = key.rpartition("/")
            if key == "__metadata__":
                metadata = json.loads(str(data[key]))
            elif name == "frames":
                frames = data[key]
            else:
                layers.setdefault(layer, {})[name] = data[key]
    return RecordedMaps(layers, frames, metadata)


def pick_layer(layers: dict[str, dict[str, np.ndarray]]) -> str | None:
    """The layer to draw: one with dilation maps, modulation preferred, finest output first."""
    candidates = [name for name, arrays in layers.items() if "dilation" in arrays]
    if not candidates:
        return None

    def rank(name: str) -> tuple[int, int, str]:
        arrays = layers[name]
        voxels = int(np.prod(arrays["dilation"].shape[2:]))
        return (0 if "modulation_mean" in arrays else 1, -voxels, name)

    return min(candidates, key=rank)


def clip_frames(metadata: dict[str, Any], clip: int, num_frames: int) -> list[int] | None:
    """The video frame read at each position of clip ``clip``, from the recorded clip plan.

    Accepts ``clips`` (a list of frame-index lists), ``clip_starts`` with ``clip_len``, or
    ``gap`` with ``clip_len`` (clips start every ``gap`` frames, the inference plan); None when
    the metadata says nothing about the plan.
    """
    clips = metadata.get("clips")
    if isinstance(clips, list) and clip < len(clips):
        entry = clips[clip]
        frames = entry.get("frames") if isinstance(entry, dict) else entry
        if isinstance(frames, list) and frames:
            return [min(int(f), num_frames - 1) for f in frames]
    clip_len = metadata.get("clip_len")
    if not isinstance(clip_len, int) or clip_len < 1:
        return None
    starts = metadata.get("clip_starts")
    if isinstance(starts, list) and clip < len(starts):
        start = int(starts[clip])
    elif isinstance(metadata.get("gap"), int):
        start = clip * int(metadata["gap"])
    else:
        return None
    return [min(start + position, num_frames - 1) for position in range(clip_len)]


def _middle_full_clip(metadata: dict[str, Any], count: int) -> int:
    """The middle clip among those made of distinct frames (a clip padded by repeating the last
    frame shows the same frame several times); the middle clip when the plan is unknown."""
    clips = metadata.get("clips")
    if isinstance(clips, list) and len(clips) == count:
        full = [i for i, frames in enumerate(clips) if len(set(frames)) == len(frames)]
        if full:
            return full[len(full) // 2]
    return count // 2


def _displayable(image: np.ndarray) -> np.ndarray:
    """uint8 as is; floats scaled to [0, 1] (stored either as 0–1 or as 0–255)."""
    if image.dtype == np.uint8:
        return image
    image = image.astype(np.float32)
    if float(np.nanmax(image)) > 1.5:
        image = image / 255.0
    return np.clip(image, 0.0, 1.0)


def _frames_of_clip(
    maps: RecordedMaps, clip: int, map_steps: int, drawn_steps: Sequence[int]
) -> list[tuple[int, np.ndarray]]:
    """(frame index, image) beside each drawn map time step, where frames were recorded.

    Map step t of T' covers clip positions [t·L/T', (t+1)·L/T'); the first of them is shown.
    """
    frames = maps.frames
    if frames is None or frames.ndim != 4 or len(frames) == 0:
        return []
    if frames.shape[-1] != 3 and frames.shape[1] == 3:
        frames = np.moveaxis(frames, 1, -1)
    positions = clip_frames(maps.metadata, clip, len(frames))
    if positions is None:  # no plan: the clip's frames are the whole recording
        positions = list(range(len(frames)))
    picked = []
    for step in drawn_steps:
        index = positions[min(len(positions) - 1, (step * len(positions)) // map_steps)]
        picked.append((index, _displayable(frames[index])))
    return picked


def maps_figure(
    maps: RecordedMaps | None, note: str = "", plan: Mapping[str, int] | None = None
) -> Figure:
    """Rows: time steps of the middle clip; columns: frame, s_t, s_y, s_x, mean modulation.

    ``plan`` (``clip_len``, ``gap`` of the run's inference) places the frames when the maps
    file's metadata does not record the clip plan itself.
    """
    if maps is not None and plan:
        maps = replace(maps, metadata={**plan, **maps.metadata})
    if maps is None:
        message = (note or "No maps recorded for this study.").replace("`", "")
        return not_recorded_figure(_TITLE, message)
    layer = pick_layer(maps.layers)
    if layer is None:
        return not_recorded_figure(_TITLE, "The maps file has no dilation maps.")
    dilation = maps.layers[layer]["dilation"]
    modulation = maps.layers[layer].get("modulation_mean")
    if dilation.ndim != 5 or dilation.shape[1] != 3:
        return not_recorded_figure(
            _TITLE, f"Unexpected dilation map shape {dilation.shape} (clips×3×T×H×W expected)."
        )
    clip = _middle_full_clip(maps.metadata, dilation.shape[0])
    steps = min(MAX_ROWS, dilation.shape[2])
    step_index = np.linspace(0, dilation.shape[2] - 1, steps).round().astype(int)
    frames = _frames_of_clip(maps, clip, dilation.shape[2], step_index.tolist())
    columns: list[tuple[str, np.ndarray | None, str]] = []
    if frames:
        columns.append(("frame", None, ""))
    for axis, name in enumerate(("t", "y", "x")):
        columns.append((f"dilation $s_{name}$", dilation[clip, axis], "viridis"))
    if modulation is not None:
        columns.append(("mean modulation", modulation[clip], "magma"))

    figure = Figure(figsize=(2.9 * len(columns), 2.0 * steps + 1.4), layout="constrained")
    axes = np.atleast_2d(figure.subplots(steps, len(columns), squeeze=False))
    # One colour scale for the three dilation axes (so they compare), [0, 1] for modulation.
    dilation_range = (float(np.nanmin(dilation[clip])), float(np.nanmax(dilation[clip])))
    dilation_columns = [col for col, (name, _, _) in enumerate(columns) if "dilation" in name]
    for col, (name, volume, cmap) in enumerate(columns):
        if volume is None:
            for row, (frame_index, image) in enumerate(frames):
                axes[row, col].imshow(image)
                axes[row, col].set_ylabel(f"frame {frame_index}")
            continue
        low, high = (0.0, 1.0) if name == "mean modulation" else dilation_range
        image = None
        for row, t in enumerate(step_index):
            image = axes[row, col].imshow(
                volume[t], cmap=cmap, vmin=low, vmax=high, interpolation="nearest"
            )
            if not frames and col == 0:
                axes[row, col].set_ylabel(f"map time step {t}")
        if name == "mean modulation":
            bar = figure.colorbar(image, ax=axes[:, col], orientation="horizontal", shrink=0.85)
            bar.set_label("mean modulation weight (0–1)")
        elif col == dilation_columns[-1]:
            bar = figure.colorbar(
                image, ax=axes[:, dilation_columns], orientation="horizontal", shrink=0.6
            )
            bar.set_label("dilation factor s (1 = the plain conv's taps)")
    for col, (name, _, _) in enumerate(columns):
        axes[0, col].set_title(name)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    sequence = maps.metadata.get("sequence")
    variant = maps.metadata.get("variant")
    what = ", ".join(
        part
        for part in (
            f"sequence {sequence}" if sequence else "",
            f"variant {PAPER_LABELS.get(variant, variant)}" if variant else "",
            f"layer {layer}",
            f"clip {clip + 1} of {dilation.shape[0]}",
        )
        if part
    )
    figure.suptitle(f"{_TITLE}\n{what}")
    return figure
