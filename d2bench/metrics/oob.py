"""Out-of-bounds sampling (the paper's Fig. 2): how often a sampling layer looks outside its input.

Definition
----------
A sampling layer (any :class:`~d2bench.layers.SampledConv3d`: DCNv1/DCNv2 are
:class:`~d2bench.layers.DeformConv3d`, D²Conv3D I–IV :class:`~d2bench.layers.D2Conv3d`) reads its
input of size T×H×W at one *sampling location* per (batch item, offset group, tap k = 0..26,
output voxel p). The layer computes where (``sampling_coordinates``); its coordinate along axis
a ∈ (t, y, x) is, exactly as the operators compute it (same dtype, same order of operations:
float32 for float32/bfloat16/float16 inputs, float64 for float64 inputs)::

    centre_a(p) = p_a · stride_a − padding_a + dilation_a
    D²:   c_a = centre_a(p) + p_k,a · (dilation_a · s_a(p))
    DCN:  c_a = (centre_a(p) + p_k,a · dilation_a) + Δ_k,a(p)

Along one axis a coordinate is

- *fully outside* when ``c ≤ −1`` or ``c ≥ size`` (or NaN): both interpolation corners along
  that axis are padding;
- *partly outside* when ``−1 < c < 0`` or ``size − 1 < c < size``: one corner is padding and
  carries a weight > 0 (a coordinate exactly on the last row, ``c = size − 1``, puts all its
  weight on that row; its zero-weight neighbour beyond the border does not count);
- *inside* when ``0 ≤ c ≤ size − 1``.

A sampling location is *fully outside* when it is fully outside along at least one axis: it
contributes exactly 0 to the output, whatever the input. It is *partly outside* when it is not
fully outside but partly outside along at least one axis: some of its trilinear weight falls on
zero padding. Otherwise it is inside. The shares are counts divided by the number of sampling
locations N · G · 27 · T'·H'·W' (G = offset groups, 1 for every layer here).

- Per axis, ``fully``/``partly`` count the locations that are fully/partly outside along that
  axis alone; a location outside along two axes counts for both, so the per-axis counts can sum
  to more than the overall count.
- All 27 taps are counted, the centre tap included. In a D² layer the centre tap never moves
  (its coordinate is ``centre(p)``), and for the replaced convs (padding = dilation, as every
  size-preserving 3×3×3 conv has) ``centre(p)`` is an input voxel, so the centre tap is never
  outside: with all 26 other taps outside the share is 26/27. In a DCN layer the centre tap has
  its own free offset and can leave the volume like any other.
- Even with ``s = 1`` everywhere (a plain conv) the taps of the border ring are outside: an output
  voxel on the first or last row/column/frame reads the zero padding with the taps that point
  away from the volume. That is the share a plain 3×3×3 conv would have; it is the floor
  against which the variants are compared.
- Per layer, counts are summed over all forward calls (clips, batches, videos). The model has
  two readings: ``total`` pools every sampling location (the sum of the layers' counts divided by
  the sum of their sampling locations, so layers with more output voxels weigh more: the T = 4
  block has 8 times the voxels of the T = 2 one); ``total.layer_mean`` is the plain mean of the
  layers' shares, each layer counting once, however large its input.
- ``plain_conv_floor_share`` is that floor for the volumes each layer saw (the share a plain
  3×3×3 conv with the layer's stride, padding and dilation has fully outside; partly outside it
  is 0), pooled in ``total`` and averaged in ``total.layer_mean`` like the layers' shares
  (:mod:`d2bench.core.oob_floor`).
- The volume is the layer's input feature map: in the network, that of the clip after its
  frames were zero-padded to a multiple of 32, so the padded border rows belong to it.
- Layers without sampling (the baseline's convs, ASPP's dilated convs) have no entry: a model
  without sampling layers reports zero sampling locations and shares of ``None``.

Recording costs nothing while it is off: :func:`record_oob` registers one sampling hook per
layer on entry and removes them on exit. While on, each forward of a sampling layer also runs a
few elementwise passes over 27 coordinates per output voxel; the counts stay on the device until
:meth:`OOBRecorder.summary` reads them (no synchronisation per call).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..core.oob_floor import plain_conv_outside
from ..layers.branch import SampledConv3d

# Re-exported: the coordinates are part of this statistic's definition (module doc).
from ..layers.coordinates import d2_coordinates as d2_coordinates
from ..layers.coordinates import deform_coordinates as deform_coordinates
from ..ops.geometry import KERNEL_TAPS
from .sampling_hooks import SamplingHookRecorder

AXES: tuple[str, str, str] = ("t", "y", "x")

#: Order of the counters accumulated per layer.
_FIELDS: tuple[str, ...] = (
    "fully",
    "partly",
    "fully_t",
    "fully_y",
    "fully_x",
    "partly_t",
    "partly_y",
    "partly_x",
)


def count_outside(coords: Sequence[Tensor], in_size: Sequence[int]) -> Tensor:
    """The counters of :data:`_FIELDS` (int64, on the coordinates' device) for one call."""
    fully_axes, partly_axes = [], []
    for coord, size in zip(coords, in_size, strict=True):
        # Negated so that NaN counts as fully outside, as the kernels treat it.
        fully = ~((coord > -1) & (coord < size))
        partly = ~fully & ((coord < 0) | (coord > size - 1))
        fully_axes.append(fully)
        partly_axes.append(partly)
    fully_any = fully_axes[0] | fully_axes[1] | fully_axes[2]
    partly_any = ~fully_any & (partly_axes[0] | partly_axes[1] | partly_axes[2])
    counts = [fully_any, partly_any, *fully_axes, *partly_axes]
    return torch.stack([flag.sum(dtype=torch.int64) for flag in counts])


def layer_coordinates(layer: SampledConv3d, geometry: Tensor) -> list[Tensor]:
    """Sampling coordinates of ``layer`` for the geometry argument its operator received (the
    layer computes them: see :meth:`~d2bench.layers.SampledConv3d.sampling_coordinates`)."""
    return layer.sampling_coordinates(geometry)


@dataclass
class _LayerCounts:
    kind: str
    calls: int = 0
    samples: int = 0
    counts: Tensor | None = field(default=None, repr=False)
    #: Taps a plain conv of the same geometry would have outside, and its taps, over all calls.
    floor_outside: int = 0
    floor_taps: int = 0
    #: Input volumes (T, H, W) seen, in first-seen order.
    input_sizes: list[tuple[int, ...]] = field(default_factory=list)

    def add(self, counts: Tensor, samples: int) -> None:
        self.calls += 1
        self.samples += samples
        self.counts = counts if self.counts is None else self.counts + counts

    def add_floor(self, size: tuple[int, ...], outside: int, taps: int) -> None:
        self.floor_outside += outside
        self.floor_taps += taps
        if size not in self.input_sizes:
            self.input_sizes.append(size)

    def values(self) -> dict[str, int]:
        if self.counts is None:
            return dict.fromkeys(_FIELDS, 0)
        return dict(zip(_FIELDS, (int(v) for v in self.counts.cpu().tolist()), strict=True))


def _share(count: int, samples: int) -> float | None:
    return count / samples if samples else None


def _describe(samples: int, values: dict[str, int]) -> dict[str, Any]:
    """JSON-ready counts and shares of one layer or of the whole model."""
    return {
        "samples": samples,
        "fully_outside": values["fully"],
        "partly_outside": values["partly"],
        "fully_outside_share": _share(values["fully"], samples),
        "partly_outside_share": _share(values["partly"], samples),
        "per_axis": {
            axis: {
                "fully_outside": values[f"fully_{axis}"],
                "partly_outside": values[f"partly_{axis}"],
                "fully_outside_share": _share(values[f"fully_{axis}"], samples),
                "partly_outside_share": _share(values[f"partly_{axis}"], samples),
            }
            for axis in AXES
        },
    }


class OOBRecorder(SamplingHookRecorder):
    """Accumulates out-of-bounds counts of the sampling layers of a model (see module doc)."""

    def __init__(self, layers: dict[str, SampledConv3d]) -> None:
        super().__init__(layers)
        self._counts = {name: _LayerCounts(kind=_kind(layer)) for name, layer in layers.items()}

    def _hook_for(self, name: str):
        def hook(
            layer: SampledConv3d, x: Tensor, geometry: Tensor, modulation: Tensor | None
        ) -> None:
            size = tuple(int(v) for v in x.shape[2:])
            with torch.no_grad():
                coords = layer_coordinates(layer, geometry)
                counts = count_outside(coords, size)
            record = self._counts[name]
            record.add(counts, coords[0].numel())
            outside, taps = plain_conv_outside(size, layer.stride, layer.padding, layer.dilation)
            copies = coords[0].shape[0] * coords[0].shape[1] // KERNEL_TAPS  # batch × groups
            record.add_floor(size, copies * outside, copies * taps)

        return hook

    def reset(self) -> None:
        """Forget what was counted so far (hooks stay as they are)."""
        self._counts = {name: _LayerCounts(kind=c.kind) for name, c in self._counts.items()}

    def summary(self) -> dict[str, Any]:
        """Per layer and in total (pooled, and the mean over layers): sampling locations,
        fully/partly outside counts and shares, and the plain conv's floor."""
        layers: dict[str, Any] = {}
        total = dict.fromkeys(_FIELDS, 0)
        total_samples = floor_outside = floor_taps = 0
        for name, counts in self._counts.items():
            values = counts.values()
            layers[name] = {"kind": counts.kind, "calls": counts.calls}
            layers[name].update(_describe(counts.samples, values))
            layers[name]["input_sizes"] = [list(size) for size in counts.input_sizes]
            layers[name]["plain_conv_floor_share"] = _share(counts.floor_outside, counts.floor_taps)
            total_samples += counts.samples
            floor_outside += counts.floor_outside
            floor_taps += counts.floor_taps
            for key in _FIELDS:
                total[key] += values[key]
        return {
            "definition": "d2bench.metrics.oob/1",
            "centre_tap_included": True,
            "layers": layers,
            "total": {
                "sampling_layers": len(self._counts),
                **_describe(total_samples, total),
                "plain_conv_floor_share": _share(floor_outside, floor_taps),
                "layer_mean": layer_mean(layers),
            },
        }


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def layer_mean(layers: dict[str, Any]) -> dict[str, Any]:
    """The mean over layers of each share in :meth:`OOBRecorder.summary`'s ``layers`` (layers
    that sampled nothing are left out; every share is None when none sampled)."""
    counted = [layer for layer in layers.values() if layer["samples"]]
    out: dict[str, Any] = {"layers": len(counted)}
    for key in ("fully_outside_share", "partly_outside_share", "plain_conv_floor_share"):
        out[key] = _mean([layer.get(key) for layer in counted])
    out["per_axis"] = {
        axis: {
            key: _mean([layer["per_axis"][axis][key] for layer in counted])
            for key in ("fully_outside_share", "partly_outside_share")
        }
        for axis in AXES
    }
    return out


def _kind(layer: SampledConv3d) -> str:
    """``d2`` or ``dcn``, with the modulation flag: how the summary labels a layer."""
    suffix = "+mod" if getattr(layer, "modulation", False) else ""
    return f"{layer.kind}{suffix}"


def sampling_layers(model: nn.Module) -> dict[str, SampledConv3d]:
    """The model's sampling layers by dotted name (the model itself is named ``""``)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, SampledConv3d)}


@contextmanager
def record_oob(model: nn.Module) -> Iterator[OOBRecorder]:
    """Count out-of-bounds sampling of every sampling layer of ``model`` inside the block.

    The recorder's :meth:`~OOBRecorder.summary` is valid during and after the block; every hook
    is removed on exit, also when the block raises.
    """
    recorder = OOBRecorder(sampling_layers(model))
    recorder.attach()
    try:
        yield recorder
    finally:
        recorder.detach()
