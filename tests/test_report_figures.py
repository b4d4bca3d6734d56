"""What the report's figures and tables say: maps cropped to the frame, FPS marked when it does not
compare, distinct variant styles, one training-curve panel per metric, and tables that compare
only like with like (frames of known values; no tracker involved)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb

from d2bench.report import build_table, table1_layout, table2_layout, to_csv, to_markdown
from d2bench.report.figures import (
    CURVE_METRICS,
    jf_fps_figure,
    jf_fps_points,
    labelled_runs,
    oob_figure,
    training_curves_figure,
    variant_styles,
)
from d2bench.report.maps import (
    crop_to_frame,
    dilation_ticks,
    frame_geometry,
    maps_figure,
    read_maps,
)
from d2bench.report.measurement import FpsOrigin, fps_origin, parse_measurement

matplotlib.use("Agg")

#: Every row of Tables 1 and 2: (variant, activation).
ALL_ROWS = [
    ("baseline", None), ("aspp", None), ("dcnv1", None), ("dcnv2", None),
    ("d2conv3d_i", None), ("d2conv3d_ii", None), ("d2conv3d_iii", None),
    ("d2conv3d_iv", "1+elu"), ("d2conv3d_iv", "none"), ("d2conv3d_iv", "1+relu"),
    ("d2conv3d_iv", "relu"),
]  # fmt: skip


def _frame(memory: str = "peak_rss_gb", jf_low: float = 0.0) -> pd.DataFrame:
    """Two finished seeds of every table row; J&F from ``jf_low`` up, memory in ``memory``."""
    rows = []
    for index, (variant, activation) in enumerate(ALL_ROWS):
        for seed in range(2):
            rows.append(
                {
                    "run_id": f"{variant}-{activation}-{seed}",
                    "cell_key": f"key-{index}-{seed}",
                    "seed": seed,
                    "status": "FINISHED",
                    "variant": variant,
                    "activation": activation,
                    "jf_mean": jf_low + 0.01 * index + 0.005 * seed,
                    "fps": 4.0 + 0.1 * index + 0.05 * seed,
                    memory: 0.5 + 0.01 * index,
                }
            )
    return pd.DataFrame(rows)


def _record(device: str, beside: dict | None = None) -> dict:
    record = {
        "run_id": "m1",
        "device": device,
        "device_name": "a device",
        "rounds": 2,
        "finished_utc": "2026-01-01T00:00:00+00:00",
        "rows": {
            "baseline": {
                "row_keys": ["key-0-0", "key-0-1"],
                "memory_source": "peak_rss_gb" if device == "cpu" else "mem_alloc_gb",
                "rounds": [{"fps": 5.0, "memory_gb": 1.0}, {"fps": 5.2, "memory_gb": 1.0}],
            }
        },
    }
    if beside is not None:
        record["beside"] = beside
    return record


def _idle(cores: int = 16, load: float = 1.2, running: int = 0) -> dict:
    snapshot = {"load_average": [load, load, load], "cpu_count": cores, "running_cells": running}
    return {"before": snapshot, "after": snapshot}


# --- Fig. 4: maps ---------------------------------------------------------------------------


def test_maps_are_cropped_to_the_frame_on_both_sides():
    # A 64×112 frame padded (centred) to 64×128: 8 columns of padding on each side.
    geometry = frame_geometry({"frame_size": [64, 112], "padding": [0, 0, 8, 8]})
    assert (geometry.padded_height, geometry.padded_width) == (64, 128)
    full = np.zeros((3, 64, 128))
    full[..., :8] = full[..., -8:] = -1.0  # the padding's columns
    cropped, extent = crop_to_frame(full, geometry)
    assert cropped.shape == (3, 64, 112)
    assert (cropped != -1.0).all()
    assert extent == (0.0, 112.0, 64.0, 0.0)
    # The same at stride 8 (the layer's resolution): one padding cell on each side goes.
    coarse, extent = crop_to_frame(full[..., ::8, ::8], geometry)
    assert coarse.shape == (3, 8, 14) and (coarse != -1.0).all()
    assert extent == (0.0, 112.0, 64.0, 0.0)


def test_frame_geometry_without_recorded_padding():
    # frame_size alone: inference's centred padding to a multiple of 32 (odd: extra at the end).
    geometry = frame_geometry({"frame_size": [50, 100]})
    assert (geometry.top, geometry.left) == (7, 14)
    assert (geometry.padded_height, geometry.padded_width) == (64, 128)
    # Older files: estimated from the stored frames (a 480×854 frame, every 3rd pixel, so that
    # the longer side is at most 320) and the map's size (the 480×864 input at stride 8).
    frames = np.zeros((4, 160, 285, 3), np.uint8)
    estimated = frame_geometry({}, frames, (2, 3, 4, 60, 108))
    assert (estimated.padded_height, estimated.padded_width) == (480, 864)
    assert (estimated.height, estimated.top) == (480, 0)
    assert 853 <= estimated.width <= 855 and 4 <= estimated.left <= 5
    small = frame_geometry({}, np.zeros((4, 64, 112, 3), np.uint8), (2, 3, 4, 8, 16))
    assert (small.height, small.width, small.left) == (64, 112, 8)


def _maps_file(path: Path, metadata: dict) -> Path:
    rng = np.random.default_rng(0)
    dilation = np.full((3, 3, 2, 8, 16), 0.25, np.float32)  # padding cells: 0.25
    dilation[..., 1:15] = 1.5 + 0.5 * rng.random((3, 3, 2, 8, 14), dtype=np.float32)
    np.savez_compressed(
        path,
        **{
            "rf2/dilation": dilation,
            "rf2/modulation_mean": rng.random((3, 2, 8, 16), dtype=np.float32),
            "frames": rng.integers(0, 255, (12, 64, 112, 3), dtype=np.uint8),
            "__metadata__": np.asarray(json.dumps(metadata)),
        },
    )
    return path


def _dilation_bar(figure):
    return next(ax for ax in figure.axes if ax.get_xlabel().startswith("dilation factor"))


def test_maps_figure_draws_the_frame_only_with_a_tick_at_one(tmp_path):
    metadata = {"sequence": "blob", "frame_size": [64, 112], "padding": [0, 0, 8, 8]}
    figure = maps_figure(read_maps(_maps_file(tmp_path / "maps.npz", metadata)))
    maps = [ax for ax in figure.axes if ax.images and "dilation" in ax.get_title()]
    assert len(maps) == 3
    for ax in figure.axes:
        if ax.images and ax not in figure.axes[-2:]:
            assert ax.get_xlim() == (0.0, 112.0) and ax.get_ylim() == (64.0, 0.0)
    first = maps[0].images[0].get_array()
    assert first.shape == (8, 14)
    assert float(first.min()) >= 1.5  # no padding cell (0.25) left in the map
    # The frames sit in the same pixel coordinates as the maps.
    frame_ax = next(ax for ax in figure.axes if ax.get_title() == "frame")
    assert frame_ax.images[0].get_extent() == [0, 112, 64, 0]
    # The dilation scale reaches 1 (the plain conv) even though every value is above it.
    bar = _dilation_bar(figure)
    assert 1.0 in [round(t, 9) for t in bar.get_xticks()]
    assert "cropped to the 64×112 frame" in figure.get_suptitle()


def test_maps_without_geometry_say_they_are_not_cropped(tmp_path):
    path = _maps_file(tmp_path / "maps.npz", {"sequence": "blob"})
    with np.load(path) as data:  # frames whose size fits no padded map: nothing to estimate
        arrays = {key: data[key] for key in data.files}
    arrays["frames"] = arrays["frames"][:, :50, :50]
    np.savez_compressed(path, **arrays)
    figure = maps_figure(read_maps(path))
    assert "not cropped" in figure.get_suptitle()


def test_dilation_ticks_always_hold_one():
    assert 1.0 in dilation_ticks(1.2, 2.0)
    assert 1.0 in dilation_ticks(0.0, 0.5)
    ticks = dilation_ticks(0.3, 2.0)
    assert 1.0 in ticks and all(abs(t - 1.0) >= 0.08 for t in ticks if t != 1.0)


# --- J&F against FPS ------------------------------------------------------------------------


def _legend_texts(figure) -> list[str]:
    return [t.get_text() for ax in figure.axes if ax.get_legend() for t in ax.get_legend().texts]


def _figure_texts(figure) -> str:
    return " ".join(t.get_text() for ax in figure.axes for t in ax.texts)


def test_in_run_cpu_fps_is_marked_not_comparable():
    frame = _frame("peak_rss_gb")
    origin = fps_origin(frame, None)
    assert not origin.comparable and "measured on a CPU" in origin.not_comparable
    points = jf_fps_points(frame, origin)
    assert len(points) == len(ALL_ROWS) and not points["comparable"].any()
    figure = jf_fps_figure(frame, origin)
    assert "hollow: FPS not comparable" in _legend_texts(figure)
    assert "measured on a CPU" in _figure_texts(figure)
    points_drawn = [container.lines[0] for container in figure.axes[0].containers]
    assert len(points_drawn) == len(ALL_ROWS)
    assert all(line.get_markerfacecolor() == "white" for line in points_drawn)


def test_cuda_measurement_alone_is_comparable_and_filled():
    frame = _frame("mem_alloc_gb", jf_low=0.5)
    measurement = parse_measurement(_record("cuda:0", _idle()))
    assert measurement.comparable
    origin = fps_origin(frame, measurement)
    assert origin.comparable and "cuda:0" in origin.description
    figure = jf_fps_figure(frame, origin)
    assert not any("not comparable" in text for text in _legend_texts(figure))
    assert "not comparable" not in _figure_texts(figure)
    points_drawn = [container.lines[0] for container in figure.axes[0].containers]
    assert all(line.get_markerfacecolor() != "white" for line in points_drawn)


@pytest.mark.parametrize(
    ("device", "beside", "reason"),
    [
        ("cpu", _idle(), "measured on a CPU"),
        ("cuda:0", _idle(running=3), "3 cell run(s) of the study marked running"),
        ("cuda:0", _idle(cores=16, load=14.0), "other work on the host"),
    ],
)
def test_a_measurement_beside_other_work_or_on_a_cpu_does_not_compare(device, beside, reason):
    measurement = parse_measurement(_record(device, beside))
    assert not measurement.comparable
    assert any(reason in text for text in measurement.not_comparable)
    assert reason in measurement.caption() and "Not comparable" in measurement.caption()
    figure = jf_fps_figure(_frame(), fps_origin(_frame(), measurement))
    assert reason in _figure_texts(figure)


def test_jf_axis_stays_within_0_and_100():
    near_zero = jf_fps_figure(_frame(jf_low=0.0))
    assert near_zero.axes[0].get_ylim()[0] >= 0.0
    near_full = _frame(jf_low=0.88)
    assert jf_fps_figure(near_full, FpsOrigin("x")).axes[0].get_ylim()[1] <= 100.0
    assert near_zero.axes[0].get_xlim()[0] >= 0.0


def test_every_variant_gets_a_distinct_colour_and_marker():
    _, order = labelled_runs(_frame())
    assert len(order) == len(ALL_ROWS)
    styles = variant_styles(order)
    assert len({(s.colour, s.marker) for s in styles.values()}) == len(order)
    assert len({s.marker for s in styles.values()}) == len(order)
    for a, b in itertools.combinations(order, 2):
        distance = np.linalg.norm(np.subtract(to_rgb(styles[a].colour), to_rgb(styles[b].colour)))
        assert distance > 0.2, (a, b, distance)


# --- training curves ------------------------------------------------------------------------


def _histories(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    ids = list(frame["run_id"])
    loss = [(r, s, 1.0 / (1 + s)) for r in ids for s in range(60)]
    epochs = [(r, e, 1.0 / e) for r in ids for e in (1, 2, 3)]
    val = [(r, e, min(1.0, 0.3 * e)) for r in ids for e in (1, 2, 3)]
    columns = ["run_id", "step", "value"]
    return {
        "train/loss": pd.DataFrame(loss, columns=columns),
        "epoch/loss": pd.DataFrame(epochs, columns=columns),
        "val/jf_mean": pd.DataFrame(val, columns=columns),
    }


def test_training_curves_one_titled_panel_per_metric():
    frame = _frame()
    figure = training_curves_figure(frame, _histories(frame))
    panels = [ax for ax in figure.axes if ax.get_title()]
    assert len(panels) == len(CURVE_METRICS) == 3
    for ax, metric in zip(panels, CURVE_METRICS, strict=True):
        assert ax.get_title().startswith(metric.title)
        assert "/" not in ax.get_title()  # no raw metric key
    assert panels[0].get_ylabel() == "Lovász hinge loss"
    assert panels[2].get_ylabel() == "J&F (%)"
    low, high = panels[2].get_ylim()
    assert low >= 0.0 and high <= 100.0
    assert "rolling mean over 4 steps" in panels[0].get_title()
    assert "band" in figure.get_suptitle() and "lowest to highest seed" in figure.get_suptitle()
    # One legend entry per variant, each with its own line style and marker.
    legend = figure.legends[0]
    assert len(legend.texts) == len(ALL_ROWS)


def test_training_curves_without_validation_show_the_loss_panels_only():
    frame = _frame()
    histories = _histories(frame)
    del histories["val/jf_mean"]
    figure = training_curves_figure(frame, histories)
    assert len([ax for ax in figure.axes if ax.get_title()]) == 2


# --- tables: like with like -----------------------------------------------------------------


def _md_headers(text: str) -> list[str]:
    return [cell.strip() for cell in text.splitlines()[0].strip("|").split("|")]


def test_cpu_runs_leave_out_the_papers_gpu_fps_and_memory():
    table = build_table(_frame("peak_rss_gb"), table1_layout())
    headers = _md_headers(to_markdown(table))
    assert "J&F (paper)" in headers
    assert not any(h.startswith(("FPS (", "Mem (GB) (")) for h in headers), headers
    assert "FPS and Mem (GB): measured on a CPU" in table.caption
    csv = pd.read_csv(pd.io.common.StringIO(to_csv(table)))
    assert "jf_paper" in csv and "mem_paper" not in csv and "fps_diff" not in csv
    assert all(row.cells[2].diff is None for row in table.rows)


def test_gpu_runs_keep_the_papers_fps_and_memory():
    table = build_table(_frame("mem_alloc_gb"), table1_layout())
    headers = _md_headers(to_markdown(table))
    assert "FPS (paper)" in headers and "Mem (GB) (paper)" in headers
    assert "measured on a CPU" not in table.caption


def test_a_cpu_measurement_drops_the_fps_comparison_even_beside_gpu_cells():
    measurement = parse_measurement(_record("cpu", _idle()))
    table = build_table(_frame("mem_alloc_gb"), table1_layout(), measurement=measurement)
    headers = _md_headers(to_markdown(table))
    assert "FPS (paper)" not in headers
    assert "Mem (GB) (paper)" not in headers  # the measured memory is the CPU's peak RSS
    assert "measured on a CPU" in table.caption


def test_table2_caption_names_only_its_own_rows():
    frame = _frame()
    table = build_table(frame, table2_layout())
    assert table.tested
    assert "against the 1 + elu row" in table.caption
    assert "Baseline" not in table.caption
    # Without its reference row's runs, the caption still names no row outside the table.
    without = frame[~((frame["variant"] == "d2conv3d_iv") & (frame["activation"] == "1+elu"))]
    caption = build_table(without, table2_layout()).caption
    assert "No significance test" in caption and "Baseline" not in caption


def test_oob_key_names_each_colour_once_for_every_panel():
    frame = _frame()
    sampled = frame["variant"].isin(["dcnv1", "dcnv2", "d2conv3d_iv"])
    for kind, share in (("full", 0.02), ("partial", 0.05)):
        frame[f"oob_{kind}"] = np.where(sampled, share, np.nan)
        for axis in "tyx":
            frame[f"oob_{kind}_{axis}"] = np.where(sampled, share / 2, np.nan)
    figure = oob_figure(frame)
    key = next(ax.get_legend() for ax in figure.axes if ax.get_legend())
    assert "one meaning in every panel" in key.get_title().get_text()
    texts = [text.get_text() for text in key.texts]
    assert texts == [
        "along any axis (the panel's total)",
        "along t (time)",
        "along y (height)",
        "along x (width)",
    ]
    panels = [ax for ax in figure.axes if ax.get_title()]
    assert len(panels) == 6 and not any(ax.get_legend() for ax in panels)
    for ax in panels:  # each panel's x axis says how far outside its bars are
        kind = ax.get_title().split(",\n")[0]
        assert ax.get_xlabel() == f"sampling locations {kind} (%)"
