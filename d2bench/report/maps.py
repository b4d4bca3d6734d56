"""The paper's Fig. 4: one sequence's frames beside a replaced layer's predicted maps.

Reads the ``maps.npz`` a cell stores through the cell-result contract's reader
(:func:`d2bench.core.contract.read_maps_file`): per layer ``dilation`` (clips×3×T'×H'×W', axes
t, y, x) and ``modulation_mean`` (clips×T'×H'×W'), optional ``frames`` (F×H×W×3, uint8 or floats
in [0, 1]) and the metadata (sequence, clip plan, variant, the frames' native ``frame_size`` and
the ``padding`` inference added). Read with numpy alone, so a report needs no torch.

The maps cover the padded network input (zero padding on both sides to a multiple of 32), the
frames do not: each map is cropped back to the frame (:func:`crop_to_frame`) and drawn in the
frame's own pixel coordinates, so the two line up and no padding shows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..core.contract import MAPS_DILATION, MAPS_MODULATION_MEAN, RecordedMaps, read_maps_file
from ..core.names import PAPER_LABELS
from ..core.oob_floor import INFERENCE_PAD_MULTIPLE
from .figures import not_recorded_figure

_TITLE = "Predicted dilation and modulation (one sequence)"
#: At most this many time steps of a clip are drawn (one figure row each).
MAX_ROWS = 4
#: A cell stores the frames downscaled by a whole factor so that the longer side is at most this.
STORED_FRAME_SIDE = 320


#: Load a maps ``.npz`` (the contract's reader); ValueError naming the file when it is not one.
read_maps = read_maps_file


def pick_layer(layers: dict[str, dict[str, np.ndarray]]) -> str | None:
    """The layer to draw: one with dilation maps, modulation preferred, finest output first."""
    candidates = [name for name, arrays in layers.items() if MAPS_DILATION in arrays]
    if not candidates:
        return None

    def rank(name: str) -> tuple[int, int, str]:
        arrays = layers[name]
        voxels = int(np.prod(arrays[MAPS_DILATION].shape[2:]))
        return (0 if MAPS_MODULATION_MEAN in arrays else 1, -voxels, name)

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


@dataclass(frozen=True)
class FrameGeometry:
    """Where the native frame lies in the padded input the maps cover, in frame pixels."""

    height: int
    width: int
    top: int
    left: int
    padded_height: int
    padded_width: int


def _centred(size: int, multiple: int = INFERENCE_PAD_MULTIPLE) -> tuple[int, int]:
    """(before, after) padding of one side length to a multiple, split as inference splits it."""
    pad = -size % multiple
    return pad // 2, pad - pad // 2


def _geometry(height: int, width: int, top: int, bottom: int, left: int, right: int):
    return FrameGeometry(height, width, top, left, height + top + bottom, width + left + right)


def frame_geometry(
    metadata: Mapping[str, Any], frames: np.ndarray | None = None, map_shape: Sequence[int] = ()
) -> FrameGeometry | None:
    """The frame inside the padded input: from the recorded ``frame_size`` and ``padding``
    (top, bottom, left, right); from ``frame_size`` alone with inference's centred padding to a
    multiple of 32; for files that record neither, estimated from the stored ``frames`` (the
    native frame downscaled by a whole factor) and the map's H'×W' (the padded frame over a whole
    stride). None when nothing fits."""
    size = metadata.get("frame_size")
    if isinstance(size, list | tuple) and len(size) == 2:
        height, width = (int(side) for side in size)
        padding = metadata.get("padding")
        if isinstance(padding, list | tuple) and len(padding) == 4:
            return _geometry(height, width, *(int(p) for p in padding))
        return _geometry(height, width, *_centred(height), *_centred(width))
    if frames is None or frames.ndim != 4 or len(map_shape) < 2:
        return None
    rows, columns = int(map_shape[-2]), int(map_shape[-1])
    stored_h, stored_w = frames.shape[1:3] if frames.shape[-1] == 3 else frames.shape[2:4]
    for factor in range(1, 9):  # the cell keeps every factor-th pixel of the native frame
        height, width = stored_h * factor, stored_w * factor
        if -(-max(height, width) // STORED_FRAME_SIDE) != factor:
            continue  # the cell would have kept every other factor-th pixel of such a frame
        geometry = _geometry(height, width, *_centred(height), *_centred(width))
        stride_y, stride_x = geometry.padded_height / rows, geometry.padded_width / columns
        if stride_y == stride_x and stride_y.is_integer():
            return geometry
    return None


def crop_to_frame(
    volume: np.ndarray, geometry: FrameGeometry
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The map cells (last two axes) that overlap the native frame, and their ``imshow`` extent
    (left, right, bottom, top) in frame pixels; the padding's cells are dropped.

    A cell that straddles the frame's border is kept; drawn with this extent on axes limited to
    the frame, only its part inside the frame shows.
    """
    rows, columns = volume.shape[-2:]
    stride_y = geometry.padded_height / rows
    stride_x = geometry.padded_width / columns
    r0 = int(np.floor(geometry.top / stride_y))
    r1 = int(np.ceil((geometry.top + geometry.height) / stride_y))
    c0 = int(np.floor(geometry.left / stride_x))
    c1 = int(np.ceil((geometry.left + geometry.width) / stride_x))
    extent = (
        c0 * stride_x - geometry.left,
        c1 * stride_x - geometry.left,
        r1 * stride_y - geometry.top,
        r0 * stride_y - geometry.top,
    )
    return volume[..., r0:r1, c0:c1], extent


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


def dilation_ticks(low: float, high: float) -> list[float]:
    """Colour-bar ticks over [low, high] that always include 1 (the plain conv's dilation)."""
    located = MaxNLocator(nbins=5).tick_values(low, high)
    spacing = float(located[1] - located[0]) if len(located) > 1 else high - low
    ticks = [float(t) for t in located if low - 1e-9 <= t <= high + 1e-9]
    # a tick closer to 1 than 0.4 spacings would crowd its label
    return sorted({1.0, *(t for t in ticks if abs(t - 1.0) >= 0.4 * spacing)})


def maps_figure(
    maps: RecordedMaps | None, note: str = "", plan: Mapping[str, int] | None = None
) -> Figure:
    """Rows: time steps of the middle clip; columns: frame, s_t, s_y, s_x, mean modulation.

    ``plan`` (``clip_len``, ``gap`` of the run's inference) places the frames when the maps
    file's metadata does not record the clip plan itself. The maps are cropped to the frame
    (see the module doc) and drawn in its pixel coordinates.
    """
    if maps is not None and plan:
        maps = replace(maps, metadata={**plan, **maps.metadata})
    if maps is None:
        message = (note or "No maps recorded for this study.").replace("`", "")
        return not_recorded_figure(_TITLE, message)
    layer = pick_layer(maps.layers)
    if layer is None:
        return not_recorded_figure(_TITLE, "The maps file has no dilation maps.")
    dilation = maps.layers[layer][MAPS_DILATION]
    modulation = maps.layers[layer].get(MAPS_MODULATION_MEAN)
    if dilation.ndim != 5 or dilation.shape[1] != 3:
        return not_recorded_figure(
            _TITLE, f"Unexpected dilation map shape {dilation.shape} (clips×3×T×H×W expected)."
        )
    clip = _middle_full_clip(maps.metadata, dilation.shape[0])
    steps = min(MAX_ROWS, dilation.shape[2])
    step_index = np.linspace(0, dilation.shape[2] - 1, steps).round().astype(int)
    frames = _frames_of_clip(maps, clip, dilation.shape[2], step_index.tolist())
    geometry = frame_geometry(maps.metadata, maps.frames, dilation.shape)
    clip_dilation, extent = dilation[clip], None
    clip_modulation = None if modulation is None else modulation[clip]
    if geometry is not None:
        clip_dilation, extent = crop_to_frame(clip_dilation, geometry)
        if clip_modulation is not None:
            clip_modulation, _ = crop_to_frame(clip_modulation, geometry)
    columns: list[tuple[str, np.ndarray | None, str]] = []
    if frames:
        columns.append(("frame", None, ""))
    for axis, name in enumerate(("t", "y", "x")):
        columns.append((f"dilation $s_{name}$", clip_dilation[axis], "viridis"))
    if clip_modulation is not None:
        columns.append(("mean modulation", clip_modulation, "magma"))

    aspect = (
        geometry.height / geometry.width
        if geometry is not None
        else clip_dilation.shape[-2] / clip_dilation.shape[-1]
    )
    panel_w = 2.9
    figure = Figure(
        figsize=(panel_w * len(columns), (panel_w * aspect + 0.3) * steps + 2.0),
        layout="constrained",
    )
    # The colour bars get a row of their own, so every column's panels keep one size and the
    # frames stay level with their maps.
    grid = figure.add_gridspec(steps + 1, len(columns), height_ratios=[1.0] * steps + [0.1])
    axes = np.array(
        [[figure.add_subplot(grid[r, c]) for c in range(len(columns))] for r in range(steps)]
    )
    # One colour scale for the three dilation axes (so they compare), always reaching 1 (the
    # plain conv); [0, 1] for modulation.
    low = min(1.0, float(np.nanmin(clip_dilation)))
    high = max(1.0, float(np.nanmax(clip_dilation)))
    if high - low < 1e-6:
        low, high = low - 0.05, high + 0.05
    dilation_columns = [col for col, (name, _, _) in enumerate(columns) if "dilation" in name]
    for col, (name, volume, cmap) in enumerate(columns):
        if volume is None:
            for row, (frame_index, image) in enumerate(frames):
                frame_extent = None if geometry is None else (0, geometry.width, geometry.height, 0)
                axes[row, col].imshow(image, extent=frame_extent)
                axes[row, col].set_ylabel(f"frame {frame_index}")
            continue
        vmin, vmax = (0.0, 1.0) if name == "mean modulation" else (low, high)
        image = None
        for row, t in enumerate(step_index):
            image = axes[row, col].imshow(
                volume[t], cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest", extent=extent
            )
            if not frames and col == 0:
                axes[row, col].set_ylabel(f"map time step {t}")
        if name == "mean modulation":
            cax = figure.add_subplot(grid[steps, col])
            bar = figure.colorbar(image, cax=cax, orientation="horizontal")
            bar.set_label("mean modulation weight (0–1)")
        elif col == dilation_columns[-1]:
            cax = figure.add_subplot(grid[steps, dilation_columns[0] : col + 1])
            bar = figure.colorbar(image, cax=cax, orientation="horizontal")
            bar.set_ticks(dilation_ticks(low, high))
            bar.set_label("dilation factor s (1 = the plain conv's taps)")
    for col, (name, _, _) in enumerate(columns):
        axes[0, col].set_title(name)
    for ax in axes.flat:
        if geometry is not None:
            ax.set_xlim(0, geometry.width)
            ax.set_ylim(geometry.height, 0)
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
    where = (
        f"maps cropped to the {geometry.height}×{geometry.width} frame (padding removed)"
        if geometry is not None
        else "maps of the padded input (frame size not recorded: not cropped)"
    )
    figure.suptitle(f"{_TITLE}\n{what}\n{where}")
    return figure
