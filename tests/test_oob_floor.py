"""The plain conv's out-of-bounds floor and the statistic's two readings (pooled, mean over
layers), from the recorder through the cell's metrics to the report's figure."""

from __future__ import annotations

from pathlib import Path

import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from d2bench.core.config import ModelConfig
from d2bench.core.contract import oob_metrics as _oob_metrics
from d2bench.core.contract import oob_metrics as oob_shares
from d2bench.core.oob_floor import (
    INFERENCE_PAD_MULTIPLE,
    block_volume,
    plain_conv_floor,
    plain_conv_outside,
)
from d2bench.engine.inference import PAD_MULTIPLE
from d2bench.layers import D2Conv3d
from d2bench.metrics.oob import record_oob
from d2bench.models import build_model
from d2bench.report.figures import OOBFloor, oob_figure, save_figure
from d2bench.report.generate import study_oob_floors
from d2bench.study import expand_cells, load_study

REPO = Path(__file__).resolve().parents[1]


def _d2(raw: float) -> D2Conv3d:
    """A D² layer predicting s = elu(raw) + 1 everywhere (raw 0: s = 1, a plain conv's taps)."""
    layer = D2Conv3d(2, 2, modulation=False)
    with torch.no_grad():
        layer.branch.bias[: layer.dilation_channels] = raw
    return layer


# ------------------------------------------------------------------------------------------
# The floor itself


def test_floor_against_a_hand_count_on_a_small_volume() -> None:
    # 2×3×4: along an axis of n voxels, 3n (voxel, tap) pairs of which 2 leave the volume
    # (the first voxel's tap −1, the last voxel's tap +1): inside 4 of 6, 7 of 9, 10 of 12.
    # A tap is inside only when inside along all three axes: 4·7·10 = 280 of 6·9·12 = 648.
    assert plain_conv_outside((2, 3, 4)) == (648 - 280, 648)
    assert plain_conv_floor((2, 3, 4)) == pytest.approx(46 / 81)
    assert plain_conv_floor((1, 1, 1)) == pytest.approx(26 / 27)  # only the centre tap is in
    # T = 2 alone puts a third of the taps outside (one of the 3 temporal taps per frame).
    assert plain_conv_floor((2, 10_000, 10_000)) == pytest.approx(1 / 3, abs=1e-3)


def test_floor_by_enumerating_every_tap() -> None:
    volume = (3, 2, 5)
    outside = 0
    for t in range(volume[0]):
        for y in range(volume[1]):
            for x in range(volume[2]):
                for dt in (-1, 0, 1):
                    for dy in (-1, 0, 1):
                        for dx in (-1, 0, 1):
                            point = (t + dt, y + dy, x + dx)
                            outside += any(
                                not 0 <= c < n for c, n in zip(point, volume, strict=True)
                            )
    assert plain_conv_outside(volume) == (outside, 27 * 3 * 2 * 5)


def test_floor_is_what_the_recorder_counts_for_a_unit_dilation_layer() -> None:
    model = nn.Sequential(_d2(raw=0.0))
    size = (2, 5, 7)
    with record_oob(model) as recorder, torch.no_grad():
        model(torch.randn(2, 2, *size))
    layer = recorder.summary()["layers"]["0"]
    assert layer["input_sizes"] == [list(size)]
    assert layer["fully_outside_share"] == pytest.approx(plain_conv_floor(size))
    assert layer["plain_conv_floor_share"] == pytest.approx(plain_conv_floor(size))
    assert layer["partly_outside"] == 0


def test_block_volumes_are_the_replaced_layers_inputs_in_the_model() -> None:
    assert INFERENCE_PAD_MULTIPLE == PAD_MULTIPLE
    assert block_volume("rf3", 8, (480, 854)) == (2, 30, 54)  # padded to 480×864
    assert block_volume("rf2", 8, (480, 854)) == (4, 60, 108)
    cfg = ModelConfig(backbone="tiny", tiny_width=4, decoder_channels=8, variant="d2conv3d_iv")
    model = build_model(cfg).eval()
    clip_len, frame = 8, (64, 112)  # inference pads 64×112 to 64×128
    padded = (64, 128)
    with record_oob(model) as recorder, torch.no_grad():
        model(torch.rand(1, 3, clip_len, *padded))
    layers = recorder.summary()["layers"]
    assert {name.split(".")[1] for name in layers} == {"rf3", "rf2"}
    for name, layer in layers.items():
        block = name.split(".")[1]
        assert layer["input_sizes"] == [list(block_volume(block, clip_len, frame))], name
        assert layer["plain_conv_floor_share"] == pytest.approx(
            plain_conv_floor(block_volume(block, clip_len, frame))
        )


def test_the_report_computes_the_floor_for_the_study_frame_size() -> None:
    smoke = load_study(REPO / "studies" / "smoke.yaml", environ={})  # 64×112 synthetic frames
    floors = study_oob_floors(expand_cells(smoke), (64, 112))
    assert [(f.block, f.volume) for f in floors] == [("rf3", (2, 4, 8)), ("rf2", (4, 8, 16))]
    assert floors[0].share == pytest.approx(1 - (4 / 6) * (10 / 12) * (22 / 24))
    assert study_oob_floors(expand_cells(smoke), None) == ()


# ------------------------------------------------------------------------------------------
# Two readings


class _TwoLayers(nn.Module):
    """A large layer at s = 1 (the floor) and a small one at s ≈ 1000 (26 of 27 taps out)."""

    def __init__(self) -> None:
        super().__init__()
        self.large = _d2(raw=0.0)
        self.down = nn.Conv3d(2, 2, 1, stride=(1, 2, 2))
        self.small = _d2(raw=1000.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.small(self.down(self.large(x)))


def test_pooled_and_layer_mean_readings_differ_on_two_layers() -> None:
    model = _TwoLayers()
    with record_oob(model) as recorder, torch.no_grad():
        model(torch.randn(1, 2, 3, 6, 8))
    summary = recorder.summary()
    large_share = plain_conv_floor((3, 6, 8))  # 1 − (7/9)(16/18)(22/24)
    small_share = 26 / 27
    large_samples, small_samples = 27 * 3 * 6 * 8, 27 * 3 * 3 * 4  # 4 : 1
    pooled = (large_share * large_samples + small_share * small_samples) / (
        large_samples + small_samples
    )
    mean = (large_share + small_share) / 2
    total = summary["total"]
    assert total["fully_outside_share"] == pytest.approx(pooled)
    assert total["layer_mean"]["fully_outside_share"] == pytest.approx(mean)
    assert abs(pooled - mean) > 0.1  # the readings really differ here
    assert total["layer_mean"]["layers"] == 2
    floor_small = plain_conv_floor((3, 3, 4))
    assert total["layer_mean"]["plain_conv_floor_share"] == pytest.approx(
        (large_share + floor_small) / 2
    )
    assert total["plain_conv_floor_share"] == pytest.approx(
        (large_share * large_samples + floor_small * small_samples)
        / (large_samples + small_samples)
    )
    # Per axis, the mean over layers too: along t, 2 of 3·3 pairs (9 taps each) of either layer.
    assert total["layer_mean"]["per_axis"]["t"]["fully_outside_share"] == pytest.approx(
        (2 / 9 + 18 / 27) / 2  # the small layer: only its 9 taps with p_t = 0 stay inside
    )

    # The cell logs both readings, and the report reads both back from oob.json.
    metrics = _oob_metrics(summary)
    assert metrics["oob_full"] == pytest.approx(pooled)
    assert metrics["oob_layer_mean_full"] == pytest.approx(mean)
    assert metrics["oob_layer_mean_partial"] == 0.0
    assert set(oob_shares(summary)) == set(metrics)
    assert oob_shares(summary)["oob_layer_mean_full_t"] == metrics["oob_layer_mean_full_t"]


# ------------------------------------------------------------------------------------------
# The figure


def _runs() -> pd.DataFrame:
    rows = []
    for variant, level in (("baseline", None), ("dcnv2", 0.30), ("d2conv3d_iv", 0.40)):
        for seed in (0, 1):
            row = {"run_id": f"{variant}-{seed}", "status": "FINISHED", "variant": variant,
                   "activation": "1+elu" if variant == "d2conv3d_iv" else None, "seed": seed,
                   "row": variant, "table": "table1"}  # fmt: skip
            if level is not None:
                for prefix, scale in (("oob_", 1.0), ("oob_layer_mean_", 1.3)):
                    for kind, part in (("full", 1.0), ("partial", 0.08)):
                        share = level * scale * part * (1 + 0.05 * seed)
                        row[f"{prefix}{kind}"] = share
                        for axis, factor in zip("tyx", (0.9, 0.3, 0.35), strict=True):
                            row[f"{prefix}{kind}_{axis}"] = share * factor
            rows.append(row)
    return pd.DataFrame(rows)


def _bar_colours(ax) -> set[str]:
    """The colours of a panel's bars."""
    colours = set()
    for patch in ax.patches:
        if patch.get_width() > 0:
            colours.add(mcolors.to_hex(patch.get_facecolor()))
    return colours


def test_the_figure_draws_both_readings_one_key_and_the_floor(tmp_path: Path) -> None:
    volumes = {block: block_volume(block, 8, (480, 854)) for block in ("rf3", "rf2")}
    floors = [OOBFloor(b, v, plain_conv_floor(v)) for b, v in volumes.items()]
    figure = oob_figure(_runs(), floors)
    panels = [ax for ax in figure.axes if ax.get_title()]
    titles = [ax.get_title().replace("\n", " ") for ax in panels]
    assert titles == [
        f"{kind}, {reading}"
        for reading in ("pooled over all sampling locations", "mean over the sampling layers")
        for kind in ("fully or partly outside", "fully outside", "partly outside")
    ]
    # Same colours in every panel: four measures, each the same colour everywhere.
    colours = [_bar_colours(ax) for ax in panels]
    assert all(len(c) == 4 for c in colours) and all(c == colours[0] for c in colours)
    # The floor: a vertical line at each floor's share where it bounds the share (fully or
    # partly outside), and nowhere else.
    for ax in panels:
        lines = sorted(line.get_xdata()[0] for line in ax.lines if line.get_linestyle() != "-")
        bounded = ax.get_title().startswith("fully or partly")
        expected = sorted(100 * f.share for f in floors) if bounded else []
        assert lines == pytest.approx(expected), ax.get_title()
    # "Fully or partly" is the sum of the disjoint counts: the widest grey bar of a panel.
    widths = {
        ax.get_title().split(",")[0]: max(p.get_width() for p in ax.patches) for ax in panels[:3]
    }
    assert widths["fully or partly outside"] == pytest.approx(
        widths["fully outside"] + widths["partly outside"]
    )
    key = [ax for ax in figure.axes if not ax.get_title()]
    assert len(key) == 1
    labels = [text.get_text() for legend in key[0].findobj(lambda a: hasattr(a, "get_texts"))
              for text in legend.get_texts()]  # fmt: skip
    assert "along t (time)" in labels and "along any axis (the panel's total)" in labels
    assert any("T=2 (rf3, 2×30×54)" in label for label in labels)
    notes = " ".join(text.get_text() for text in key[0].texts)
    assert "zero padding 1" in notes and "Revised Baseline" in notes
    paths = save_figure(figure, tmp_path, "oob")
    assert paths[0].read_bytes().startswith(b"\x89PNG") and paths[0].stat().st_size > 10_000
    np.testing.assert_allclose(floors[0].share, 1 - (4 / 6) * (88 / 90) * (160 / 162))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_d2_layer_with_positive_dilation_never_goes_below_the_floor(seed: int) -> None:
    """Each tap a plain conv puts outside reads −s·d < 0 (or beyond the end) for any s > 0, so
    it keeps some weight on padding: fully or partly outside, never back inside."""
    generator = torch.Generator().manual_seed(seed)
    layer = D2Conv3d(2, 2, modulation=False)  # 1 + elu: s > 0 everywhere
    with torch.no_grad():
        layer.branch.weight.copy_(torch.randn(layer.branch.weight.shape, generator=generator))
        layer.branch.bias.uniform_(-2.0, 0.5, generator=generator)
    model = nn.Sequential(layer)
    size = (2, 5, 6)
    with record_oob(model) as recorder, torch.no_grad():
        model(torch.randn(2, 2, *size, generator=generator))
    layer_summary = recorder.summary()["layers"]["0"]
    outside = layer_summary["fully_outside_share"] + layer_summary["partly_outside_share"]
    assert layer_summary["partly_outside"] > 0  # s < 1 somewhere: the split really happens
    assert outside >= plain_conv_floor(size) - 1e-12
