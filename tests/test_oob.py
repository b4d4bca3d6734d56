"""Tests of the out-of-bounds sampling statistic (d2bench.metrics.oob)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import d2bench.ops as ops
from d2bench.layers import ASPP3d, D2Conv3d, DeformConv3d, get_variant
from d2bench.metrics.oob import (
    count_outside,
    d2_coordinates,
    deform_coordinates,
    record_oob,
)
from d2bench.ops.geometry import TAPS

SIZE = (3, 4, 5)  # T, H, W of the test input
BATCH = 2
CENTRE = TAPS.index((0, 0, 0))


def _volume(size=SIZE) -> int:
    return math.prod(size)


def _input(size=SIZE, channels: int = 2, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(BATCH, channels, *size, generator=gen)


def _d2(axes: str = "tyx", modulation: bool = True, raw: float | None = None) -> D2Conv3d:
    """A D² layer whose branch predicts the constant raw value ``raw`` for every dilation channel
    (zero weight, bias = raw): s = elu(raw) + 1, so raw 0 → s = 1 and raw > 0 → s = raw + 1."""
    layer = D2Conv3d(2, 3, dilation_axes=axes, modulation=modulation)
    if raw is not None:
        with torch.no_grad():
            layer.branch.bias[: layer.dilation_channels] = raw
    return layer


def _summary(layer: nn.Module, x: torch.Tensor) -> dict:
    model = nn.Sequential(layer)
    with record_oob(model) as recorder, torch.no_grad():
        model(x)
    return recorder.summary()


def _not_fully_pairs(n: int) -> int:
    """(output index, tap offset) pairs along one axis whose coordinate o + p lies in [0, n-1]."""
    return 3 * n - 2


# ------------------------------------------------------------------------------------------
# Hand-counted cases


def test_unit_dilation_only_the_border_ring_is_outside():
    summary = _summary(_d2(raw=0.0), _input())
    layer = summary["layers"]["0"]
    t, h, w = SIZE
    volume = _volume()
    samples = BATCH * 27 * volume
    inside = BATCH * _not_fully_pairs(t) * _not_fully_pairs(h) * _not_fully_pairs(w)
    assert layer["samples"] == samples
    assert layer["fully_outside"] == samples - inside
    assert layer["partly_outside"] == 0
    assert layer["fully_outside_share"] == pytest.approx((samples - inside) / samples)
    # Along one axis, 2 of the 3·n (index, tap) pairs leave the volume; 9 taps share each pair.
    for axis, n in zip("tyx", SIZE, strict=True):
        per_axis = layer["per_axis"][axis]
        assert per_axis["fully_outside"] == BATCH * 2 * 9 * volume // n
        assert per_axis["partly_outside"] == 0
    assert summary["total"]["fully_outside"] == layer["fully_outside"]
    assert layer["kind"] == "d2+mod"
    assert layer["calls"] == 1


def test_huge_dilation_puts_every_non_centre_tap_fully_outside():
    layer = _summary(_d2(raw=1000.0), _input())["layers"]["0"]
    volume = _volume()
    assert layer["fully_outside"] == BATCH * 26 * volume
    assert layer["fully_outside_share"] == pytest.approx(26 / 27)
    assert layer["partly_outside"] == 0
    for axis in "tyx":  # 18 of the 27 taps move along any one axis
        assert layer["per_axis"][axis]["fully_outside"] == BATCH * 18 * volume


def test_spatial_only_dilation_leaves_time_taps_on_the_border_ring():
    """Variant (I): s = (1, d, d); the two purely temporal taps still move by exactly 1."""
    layer = _summary(_d2(axes="s", raw=1000.0), _input())["layers"]["0"]
    t = SIZE[0]
    volume = _volume()
    spatial_taps = sum(1 for p in TAPS if p[1] or p[2])
    assert spatial_taps == 24
    assert layer["fully_outside"] == BATCH * (spatial_taps * volume + 2 * volume // t)
    assert layer["per_axis"]["t"]["fully_outside"] == BATCH * 2 * 9 * volume // t


def test_fractional_dilation_is_partly_outside_next_to_the_border():
    """s = 1.5: index 1 with tap −1 samples at −0.5 (partly), index 0 at −1.5 (fully)."""
    layer = _summary(_d2(raw=0.5), _input())["layers"]["0"]
    volume = _volume()
    not_fully = math.prod(3 * n - 2 for n in SIZE)  # per axis 2 pairs fully, 2 partly
    inside = math.prod(3 * n - 4 for n in SIZE)
    assert layer["fully_outside"] == BATCH * (27 * volume - not_fully)
    assert layer["partly_outside"] == BATCH * (not_fully - inside)
    for axis, n in zip("tyx", SIZE, strict=True):
        assert layer["per_axis"][axis]["fully_outside"] == BATCH * 2 * 9 * volume // n
        assert layer["per_axis"][axis]["partly_outside"] == BATCH * 2 * 9 * volume // n


@pytest.mark.parametrize("modulation", [False, True])
def test_deformable_offsets_are_counted_per_tap(modulation):
    """A +100 temporal offset on the centre tap sends it out of every voxel's volume."""
    layer = DeformConv3d(2, 3, modulation=modulation)
    with torch.no_grad():
        layer.branch.bias[3 * CENTRE + 0] = 100.0
    result = _summary(layer, _input())["layers"]["0"]
    t, h, w = SIZE
    volume = _volume()
    border_inside = _not_fully_pairs(t) * _not_fully_pairs(h) * _not_fully_pairs(w)
    assert result["fully_outside"] == BATCH * (27 * volume - border_inside + volume)
    assert result["per_axis"]["t"]["fully_outside"] == BATCH * (2 * 9 * volume // t + volume)
    assert result["per_axis"]["y"]["fully_outside"] == BATCH * 2 * 9 * volume // h
    assert result["kind"] == ("dcn+mod" if modulation else "dcn")


def test_half_pixel_offset_turns_the_outer_ring_partly_outside():
    """x + 0.5 for every tap: o + p = −1 → −0.5 (partly), n − 1 → n − 0.5 (partly), n → fully."""
    layer = DeformConv3d(2, 3)
    with torch.no_grad():
        layer.branch.bias[2::3] = 0.5
    result = _summary(layer, _input())["layers"]["0"]
    t, h, w = SIZE
    volume = _volume()
    ty = _not_fully_pairs(t) * _not_fully_pairs(h)
    assert result["fully_outside"] == BATCH * (27 * volume - ty * (3 * w - 1))
    assert result["partly_outside"] == BATCH * ty * 3
    assert result["per_axis"]["x"]["fully_outside"] == BATCH * 1 * 9 * volume // w
    assert result["per_axis"]["x"]["partly_outside"] == BATCH * 3 * 9 * volume // w
    assert result["per_axis"]["t"]["partly_outside"] == 0


# ------------------------------------------------------------------------------------------
# Against an independent element-by-element count and against the operators


def _brute_force(coordinate_of, n_taps, out_size, in_size, batch):
    """Counts of the definition, one sampling location at a time (numpy float32 scalars)."""
    counts = dict.fromkeys(("fully", "partly", "ft", "fy", "fx", "pt", "py", "px"), 0)
    for b in range(batch):
        for k in range(n_taps):
            for p in np.ndindex(*out_size):
                full_axes, part_axes = [], []
                for axis, size in enumerate(in_size):
                    c = float(coordinate_of(b, k, p, axis))
                    full = not (-1 < c < size)
                    full_axes.append(full)
                    part_axes.append(not full and (c < 0 or c > size - 1))
                fully = any(full_axes)
                counts["fully"] += fully
                counts["partly"] += (not fully) and any(part_axes)
                for axis, name in enumerate("tyx"):
                    counts[f"f{name}"] += full_axes[axis]
                    counts[f"p{name}"] += part_axes[axis]
    return [counts[key] for key in ("fully", "partly", "ft", "fy", "fx", "pt", "py", "px")]


GEOMETRIES = [
    ((1, 1, 1), (1, 1, 1), (1, 1, 1)),
    ((1, 2, 2), (1, 2, 2), (1, 2, 1)),  # stride, padding, dilation
]


@pytest.mark.parametrize(("stride", "padding", "dilation"), GEOMETRIES)
def test_d2_counts_match_an_element_by_element_count(stride, padding, dilation):
    in_size = (3, 5, 6)
    out_size = tuple(
        (n + 2 * p - 2 * d - 1) // s + 1
        for n, s, p, d in zip(in_size, stride, padding, dilation, strict=True)
    )
    gen = torch.Generator().manual_seed(3)
    smap = torch.rand(BATCH, 3, *out_size, generator=gen) * 3.5 - 0.5  # some negative, some > 2
    smap[0, 1, 0, 0, 0] = float("nan")
    coords = d2_coordinates(smap, stride, padding, dilation)
    counts = count_outside(coords, in_size).tolist()
    np_map = smap.numpy()

    def coordinate_of(b, k, p, axis):
        centre = np.float32(p[axis] * stride[axis] - padding[axis] + dilation[axis])
        step = np.float32(dilation[axis]) * np_map[b, axis][p]
        return centre + np.float32(TAPS[k][axis]) * step

    assert counts == _brute_force(coordinate_of, 27, out_size, in_size, BATCH)
    assert counts[0] > 0 and counts[1] > 0  # the case exercises both classes


def test_deform_counts_match_an_element_by_element_count():
    in_size, out_size = (2, 4, 5), (2, 4, 5)
    gen = torch.Generator().manual_seed(4)
    offset = torch.randn(BATCH, 81, *out_size, generator=gen) * 1.5
    offset[1, 5, 0, 0, 0] = 0.0  # exact integer coordinates are inside or fully outside
    coords = deform_coordinates(offset, (1, 1, 1), (1, 1, 1), (1, 1, 1))
    counts = count_outside(coords, in_size).tolist()
    np_offset = offset.numpy().reshape(BATCH, 27, 3, *out_size)

    def coordinate_of(b, k, p, axis):
        base = np.float32(p[axis] - 1 + 1 + TAPS[k][axis])
        return base + np_offset[b, k, axis][p]

    assert counts == _brute_force(coordinate_of, 27, out_size, in_size, BATCH)


def _one_hot_tap_weights() -> torch.Tensor:
    """27 output channels, channel k = tap k of a single input channel with weight 1."""
    weight = torch.zeros(27, 1, 3, 3, 3)
    for k in range(27):
        weight[k, 0].view(-1)[k] = 1.0
    return weight


def _operator_classes(masses: torch.Tensor) -> list[int]:
    """Fully/partly outside from the mass of a constant-1 input each location gathers."""
    return [int((masses == 0).sum()), int(((masses > 0) & (masses < 1)).sum())]


def test_d2_classification_agrees_with_the_operator():
    """On a constant-1 input a location gathers its in-bounds trilinear weight: 0 when fully
    outside, 1 when inside, in between when partly outside (dyadic maps keep it exact)."""
    in_size = (3, 5, 6)
    gen = torch.Generator().manual_seed(5)
    smap = torch.randint(-4, 24, (BATCH, 3, *in_size), generator=gen).float() / 8
    ones = torch.ones(BATCH, 1, *in_size)
    masses = ops.d2conv3d(ones, smap, None, _one_hot_tap_weights(), None, 1, 1, 1)
    counts = count_outside(d2_coordinates(smap, (1, 1, 1), (1, 1, 1), (1, 1, 1)), in_size)
    assert counts[:2].tolist() == _operator_classes(masses)
    assert counts[1] > 0


def test_deform_classification_agrees_with_the_operator():
    in_size = (3, 5, 6)
    gen = torch.Generator().manual_seed(6)
    offset = torch.randint(-20, 21, (BATCH, 81, *in_size), generator=gen).float() / 8
    ones = torch.ones(BATCH, 1, *in_size)
    masses = ops.deform_conv3d(ones, offset, None, _one_hot_tap_weights(), None, 1, 1, 1)
    counts = count_outside(deform_coordinates(offset, (1, 1, 1), (1, 1, 1), (1, 1, 1)), in_size)
    assert counts[:2].tolist() == _operator_classes(masses)
    assert counts[1] > 0


# ------------------------------------------------------------------------------------------
# Aggregation, hooks, layers without sampling


class _TwoLayers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = _d2(raw=0.0)
        self.down = nn.Conv3d(3, 2, 1, stride=(1, 2, 2))
        self.second = _d2(raw=1000.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.down(self.first(x)))


def test_model_share_is_count_weighted_over_layers_and_calls():
    model = _TwoLayers()
    x = _input(size=(3, 6, 8))
    with record_oob(model) as recorder, torch.no_grad():
        model(x)
        model(x)
    summary = recorder.summary()
    first, second = summary["layers"]["first"], summary["layers"]["second"]
    total = summary["total"]
    assert first["calls"] == second["calls"] == 2
    assert first["samples"] == 2 * BATCH * 27 * 3 * 6 * 8
    assert second["samples"] == 2 * BATCH * 27 * 3 * 3 * 4
    assert total["samples"] == first["samples"] + second["samples"]
    assert total["fully_outside"] == first["fully_outside"] + second["fully_outside"]
    assert total["fully_outside_share"] == pytest.approx(total["fully_outside"] / total["samples"])
    mean_of_shares = (first["fully_outside_share"] + second["fully_outside_share"]) / 2
    assert total["fully_outside_share"] != pytest.approx(mean_of_shares)
    assert total["sampling_layers"] == 2


def test_no_hooks_remain_after_the_block_even_on_error():
    model = _TwoLayers()
    with pytest.raises(RuntimeError, match="boom"), record_oob(model) as recorder:
        assert recorder.active
        assert len(model.first._sampling_hooks) == 1
        raise RuntimeError("boom")
    assert not recorder.active
    for layer in (model.first, model.second):
        assert len(layer._sampling_hooks) == 0
        assert len(layer._forward_hooks) == 0
    with torch.no_grad():
        model(_input(size=(3, 6, 8)))  # not counted any more
    assert recorder.summary()["total"]["samples"] == 0


def test_layers_without_sampling_report_nothing():
    model = nn.Sequential(
        nn.Conv3d(2, 2, 3, padding=1),
        ASPP3d.from_conv(nn.Conv3d(2, 2, 3, padding=1), get_variant("aspp")),
    )
    with record_oob(model) as recorder, torch.no_grad():
        model.eval()(_input())
    summary = recorder.summary()
    assert summary["layers"] == {}
    assert summary["total"]["samples"] == 0
    assert summary["total"]["fully_outside_share"] is None
    assert summary["total"]["sampling_layers"] == 0
