"""Recording the predicted dilation and modulation maps of the D² layers (the paper's Fig. 4).

Inside :func:`record_maps`, every forward of a D² layer (a sampling layer whose geometry is a
dilation map, such as :class:`~d2bench.layers.D2Conv3d`) appends, per batch item (one clip), its
dilation map ``s`` (3×T'×H'×W': the factor along t, y and x of every output voxel, exactly as the
operator received it) and the mean of its 27 modulation values per output voxel (T'×H'×W';
layers without modulation record none). Calls are kept in order, so for
a video run through :func:`d2bench.engine.inference.predict_video` entry i is the i-th clip of
its clip plan. Recording copies every map to the host (a device synchronisation per layer call):
use it on the video to be drawn, not while timing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from ..core.contract import MAPS_DILATION, MAPS_MODULATION_MEAN, read_maps_file, write_maps_file
from ..layers.branch import SampledConv3d
from .sampling_hooks import SamplingHookRecorder


@dataclass
class LayerMaps:
    """What one D² layer predicted, one entry per clip in call order."""

    dilation: list[np.ndarray] = field(default_factory=list)
    modulation_mean: list[np.ndarray] = field(default_factory=list)

    def arrays(self) -> dict[str, np.ndarray]:
        """``dilation`` clips×3×T'×H'×W' and (with modulation) ``modulation_mean`` clips×T'×H'×W'.

        Stacking needs one output size; clips of different sizes (videos of different
        resolutions in one recording) raise a ValueError.
        """
        out: dict[str, np.ndarray] = {}
        if self.dilation:
            out[MAPS_DILATION] = _stack(self.dilation, MAPS_DILATION)
        if self.modulation_mean:
            out[MAPS_MODULATION_MEAN] = _stack(self.modulation_mean, MAPS_MODULATION_MEAN)
        return out


def _stack(parts: list[np.ndarray], what: str) -> np.ndarray:
    shapes = {part.shape for part in parts}
    if len(shapes) > 1:
        raise ValueError(
            f"cannot stack {what} maps of different sizes {sorted(shapes)}; record one video "
            "(one resolution) at a time"
        )
    return np.stack(parts)


class MapRecorder(SamplingHookRecorder):
    """Collects the maps of the model's D² layers while attached (see module doc)."""

    def __init__(self, layers: dict[str, SampledConv3d]) -> None:
        super().__init__(layers)
        self.maps: dict[str, LayerMaps] = {name: LayerMaps() for name in layers}

    def _hook_for(self, name: str):
        def hook(
            layer: SampledConv3d, x: Tensor, dilation_map: Tensor, modulation: Tensor | None
        ) -> None:
            record = self.maps[name]
            dilation = dilation_map.detach().float().cpu().numpy()
            record.dilation.extend(dilation)
            if modulation is not None:
                mean = modulation.detach().float().mean(dim=1).cpu().numpy()
                record.modulation_mean.extend(mean)

        return hook

    def arrays(self) -> dict[str, dict[str, np.ndarray]]:
        """Per layer name, the stacked arrays of :meth:`LayerMaps.arrays` (layers never called
        are left out)."""
        return {name: arrays for name, maps in self.maps.items() if (arrays := maps.arrays())}


def d2_layers(model: nn.Module) -> dict[str, SampledConv3d]:
    """The model's D² layers (those that sample along a predicted dilation map) by dotted name."""
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, SampledConv3d) and m.sampling_geometry == "dilation"
    }


@contextmanager
def record_maps(model: nn.Module) -> Iterator[MapRecorder]:
    """Record the dilation and mean modulation maps of every D² layer of ``model`` in the block.

    A model without D² layers records nothing (an empty :meth:`MapRecorder.arrays`).
    """
    recorder = MapRecorder(d2_layers(model))
    recorder.attach()
    try:
        yield recorder
    finally:
        recorder.detach()


def save_maps(
    path: str | Path,
    recorded: MapRecorder | Mapping[str, Mapping[str, np.ndarray]],
    metadata: Mapping[str, Any] | None = None,
    *,
    frames: np.ndarray | None = None,
) -> Path:
    """Write the maps to a compressed ``.npz`` in the cell-result contract's schema
    (:func:`d2bench.core.contract.write_maps_file`): keys ``<layer>/dilation``
    (clips×3×T'×H'×W', axes t, y, x) and ``<layer>/modulation_mean`` (clips×T'×H'×W'), float32;
    the video's ``frames`` (F×H×W×3, kept as given) when passed, for drawing beside the maps.

    ``metadata`` (JSON-serialisable: the sequence, the clip plan, the variant) is stored as a
    JSON string. Returns the path written (``.npz`` appended if missing).
    """
    arrays = recorded.arrays() if isinstance(recorded, MapRecorder) else recorded
    return write_maps_file(path, arrays, metadata, frames=frames)


def load_maps(path: str | Path) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """Read what :func:`save_maps` wrote: (per layer arrays, metadata or {}); the stored frames
    are not a layer and are left out (:func:`d2bench.core.contract.read_maps_file` has them)."""
    recorded = read_maps_file(path)
    return recorded.layers, recorded.metadata
