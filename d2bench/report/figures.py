"""The report's figures (seaborn on matplotlib's Agg canvas; each saved as PNG and PDF).

- out-of-bounds sampling share per variant, pooled and as the mean over layers, overall and
  per axis, against the plain conv's floor (the paper's Fig. 2);
- J&F against FPS per variant;
- training loss curves per variant;
- one sequence's frames with a replaced layer's dilation and modulation maps (Fig. 4) — see
  :mod:`d2bench.report.maps`.

Figures are drawn on :class:`matplotlib.figure.Figure` objects, never through pyplot, so making
a report changes no global matplotlib state and needs no display. A figure whose data were not
recorded is still written, with a panel that says so, so the report page never has a hole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from ..core.contract import FPS, JF_MEAN, OOB_LAYER_MEAN, OOB_POOLED, VAL_JF
from ..core.names import ACTIVATION_NAMES, VARIANT_NAMES
from .layout import run_label
from .measurement import FpsOrigin, fps_origin
from .table import normalise_runs

#: Written for every figure.
FORMATS: tuple[str, ...] = ("png", "pdf")
_DPI = 150
#: Error bars and bands span the seeds' full range (a percentile interval of 100): unlike ± sd,
#: they never leave the range a share or a score can take.
SEED_RANGE = ("pi", 100)


def save_figure(figure: Figure, out_dir: Path, stem: str) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf`` under ``out_dir``; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in FORMATS:
        path = out_dir / f"{stem}.{fmt}"
        figure.savefig(path, dpi=_DPI, bbox_inches="tight")
        paths.append(path)
    return paths


def not_recorded_figure(title: str, message: str) -> Figure:
    """A one-panel figure stating that (and why) there is nothing to draw."""
    figure = Figure(figsize=(6.4, 2.4))
    ax = figure.add_subplot()
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=11)
    return figure


def labelled_runs(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Finished runs with a ``label`` column, and the labels in the paper's order."""
    runs = normalise_runs(frame)
    runs = runs[runs["status"] == "FINISHED"].copy()
    activations = runs.groupby("variant")["activation"].nunique()
    several = set(activations[activations > 1].index)

    def label(variant: object, activation: str) -> str:
        if not isinstance(variant, str):
            return str(variant)
        return run_label(variant, activation, always=variant in several)

    runs["label"] = [label(v, a) for v, a in zip(runs["variant"], runs["activation"], strict=True)]

    def order_key(item: tuple[str, str]) -> tuple[int, int]:
        variant, activation = item
        v = VARIANT_NAMES.index(variant) if variant in VARIANT_NAMES else len(VARIANT_NAMES)
        a = ACTIVATION_NAMES.index(activation) if activation in ACTIVATION_NAMES else -1
        return v, a

    pairs = sorted(
        {(str(v), str(a)) for v, a in zip(runs["variant"], runs["activation"], strict=True)},
        key=order_key,
    )
    order = list(dict.fromkeys(label(v, a) for v, a in pairs))
    return runs, order


#: Distinct colours, dark enough for lines on white, ordered so that neighbours in the paper's
#: row order differ strongly (tab10 and husl both give near-identical hues to some of 11 rows).
_DISTINCT_COLOURS = (
    "#4363d8",  # blue
    "#f58231",  # orange
    "#3cb44b",  # green
    "#e6194b",  # red
    "#911eb4",  # purple
    "#9a6324",  # brown
    "#f032e6",  # magenta
    "#000000",  # black
    "#808000",  # olive
    "#42d4f4",  # cyan
    "#800000",  # maroon
    "#469990",  # teal
    "#000075",  # navy
    "#a9a9a9",  # grey
)
_MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*", "<", ">", "h", "p", "d", "8")
_LINESTYLES = ("-", "--", "-.", ":")
#: The line styles as seaborn's ``dashes`` (segment, gap, ...; "" = solid).
_DASHES: dict[str, object] = {"-": "", "--": (4, 2), "-.": (4, 1.5, 1, 1.5), ":": (1, 1.5)}


@dataclass(frozen=True)
class Style:
    """How one variant is drawn in every figure: colour, marker and line style."""

    colour: object
    marker: str
    linestyle: str


def variant_styles(order: Sequence[str]) -> dict[str, Style]:
    """One style per label, the same in every figure of a report (pass the full label order).

    Colours come from a set of distinct ones while they last (husl beyond), markers and line
    styles cycle separately, so two labels never share all three.
    """
    if len(order) <= len(_DISTINCT_COLOURS):
        colours: list[object] = list(_DISTINCT_COLOURS[: len(order)])
    else:  # husl is a circle: one spare colour keeps the first and last apart
        colours = list(sns.color_palette("husl", len(order) + 1)[: len(order)])
    return {
        label: Style(colour, _MARKERS[i % len(_MARKERS)], _LINESTYLES[i % len(_LINESTYLES)])
        for i, (label, colour) in enumerate(zip(order, colours, strict=True))
    }


# --- Fig. 2: out-of-bounds sampling -------------------------------------------------------------

#: (column prefix, panel row title): the two readings of the statistic.
_OOB_READINGS = (
    (OOB_POOLED, "pooled over all sampling locations"),
    (OOB_LAYER_MEAN, "mean over the sampling layers"),
)
#: Panel columns: "any" = fully + partly (disjoint counts), the share the floor bounds.
_OOB_KINDS = (
    ("any", "fully or partly outside"),
    ("full", "fully outside"),
    ("partial", "partly outside"),
)
_FLOOR_KIND = "fully or partly outside"
_AXES = ("t", "y", "x")
#: One meaning per colour in every panel: the overall share, then the share along each axis.
_OOB_MEASURES = ("any axis", "along t", "along y", "along x")
#: The key's words for each colour: what it counts in whichever panel it stands.
_OOB_MEASURE_KEYS = {
    "any axis": "along any axis (the panel's total)",
    "along t": "along t (time)",
    "along y": "along y (height)",
    "along x": "along x (width)",
}
_OOB_COLOURS = dict(zip(_OOB_MEASURES, ["0.35", *sns.color_palette("colorblind", 3)], strict=True))
_FLOOR_COLOUR = "#b2182b"
_FLOOR_STYLES = ("--", ":", "-.")


@dataclass(frozen=True)
class OOBFloor:
    """A plain 3×3×3 conv's share of taps outside one decoder block's input (the floor)."""

    block: str
    #: The block's input T×H×W at inference.
    volume: tuple[int, int, int]
    share: float

    def label(self) -> str:
        t, h, w = self.volume
        return f"plain 3×3×3 conv, T={t} ({self.block}, {t}×{h}×{w}): {100.0 * self.share:.2f}%"


def _oob_long(runs: pd.DataFrame) -> pd.DataFrame:
    records = []
    for _, run in runs.iterrows():
        for prefix, reading in _OOB_READINGS:
            for suffix, measure in zip(("", *(f"_{a}" for a in _AXES)), _OOB_MEASURES, strict=True):
                full = run.get(f"{prefix}full{suffix}")
                partial = run.get(f"{prefix}partial{suffix}")
                values = {"full": full, "partial": partial}
                if pd.notna(full) and pd.notna(partial):  # disjoint: their sum is "any weight"
                    values["any"] = float(full) + float(partial)
                for kind, kind_label in _OOB_KINDS:
                    value = values.get(kind)
                    if pd.notna(value):
                        share = 100.0 * float(value)
                        records.append((run["label"], reading, kind_label, measure, share))
    return pd.DataFrame.from_records(
        records, columns=["label", "reading", "kind", "measure", "share"]
    )


def _oob_key(ax: Axes, floors: Sequence[OOBFloor], without: Sequence[str]) -> None:
    """The figure's one key, in a strip of its own below the panels: what each colour and line
    means in every panel, the floor's definition, and the variants left out."""
    ax.set_axis_off()
    measures = [
        Patch(facecolor=_OOB_COLOURS[measure], label=_OOB_MEASURE_KEYS[measure])
        for measure in _OOB_MEASURES
    ]
    ax.add_artist(
        ax.legend(
            handles=measures,
            loc="upper center",
            ncol=len(measures),
            frameon=False,
            title="Bar colour (one meaning in every panel): the axis along which a sampling "
            "location is outside (a location counts once per axis); how far outside (fully, "
            "partly, either) and which reading: the panel's title and x axis.",
            title_fontsize=9,
        )
    )
    notes = []
    if floors:
        lines = [
            Line2D([], [], color=_FLOOR_COLOUR, linestyle=style, label=floor.label())
            for floor, style in zip(floors, _FLOOR_STYLES, strict=False)
        ]
        ax.legend(
            handles=lines,
            loc="center",
            bbox_to_anchor=(0.5, 0.55),
            ncol=len(lines),
            frameon=False,
            fontsize=9,
        )
        notes.append(
            "Floor (red lines, left panels): the share of a plain 3×3×3 conv's taps (zero "
            "padding 1, all 27 per output voxel) outside the block's input at the study's frame "
            "size.\nEvery variant starts there (s = 1, zero offsets). A D² layer with s > 0 never "
            "goes below its block's line (its border taps split between fully (s ≥ 1) and partly "
            "(s < 1) outside);\nthe model's share combines both blocks: pooled, by their voxels; "
            "mean over layers, equally."
        )
    else:
        notes.append("Floor not drawn: the study's frame size is not known.")
    if without:
        notes.append("Not shown (no sampling layers, or not recorded): " + ", ".join(without) + ".")
    ax.text(
        0.5, 0.0, "\n".join(notes), ha="center", va="bottom", fontsize=9, transform=ax.transAxes
    )


def oob_figure(frame: pd.DataFrame, floors: Sequence[OOBFloor] = ()) -> Figure:
    """Share of sampling locations outside the input, per variant: both readings (pooled over
    all sampling locations; mean over layers) × fully or partly / fully / partly outside,
    overall and per axis, with the plain conv's floor drawn where it bounds the share."""
    title = "Out-of-bounds sampling during inference"
    runs, order = labelled_runs(frame)
    data = _oob_long(runs)
    if data.empty:
        return not_recorded_figure(
            title, "No out-of-bounds statistics recorded\n(no finished run with sampling layers)."
        )
    without = [label for label in order if label not in set(data["label"])]
    order = [label for label in order if label in set(data["label"])]
    panel_height = max(2.6, 0.5 * len(order) + 1.2)
    key_height = 2.0
    figure = Figure(figsize=(16.5, 2 * panel_height + key_height), layout="constrained")
    grid = figure.add_gridspec(
        3, len(_OOB_KINDS), height_ratios=[panel_height, panel_height, key_height]
    )
    first = figure.add_subplot(grid[0, 0])
    axes = [
        [first if (r, c) == (0, 0) else figure.add_subplot(grid[r, c], sharey=first)
         for c in range(len(_OOB_KINDS))]
        for r in range(len(_OOB_READINGS))
    ]  # fmt: skip
    for row, (_, reading) in enumerate(_OOB_READINGS):
        for column, (_, kind) in enumerate(_OOB_KINDS):
            ax = axes[row][column]
            part = data[(data["reading"] == reading) & (data["kind"] == kind)]
            ax.set_title(f"{kind},\n{reading}", fontsize=10)
            if part.empty:
                ax.text(0.5, 0.5, "not recorded", transform=ax.transAxes, ha="center")
            else:
                sns.barplot(
                    data=part,
                    y="label",
                    x="share",
                    hue="measure",
                    order=order,
                    hue_order=list(_OOB_MEASURES),
                    palette=_OOB_COLOURS,
                    orient="h",
                    errorbar=SEED_RANGE,
                    ax=ax,
                    legend=False,
                )
            if kind == _FLOOR_KIND:
                for floor, style in zip(floors, _FLOOR_STYLES, strict=False):
                    ax.axvline(100.0 * floor.share, color=_FLOOR_COLOUR, linestyle=style, lw=1.4)
            ax.set_xlabel(f"sampling locations {kind} (%)")
            ax.set_ylabel("variant" if column == 0 else "")
            if column:
                ax.tick_params(labelleft=False)
            ax.grid(axis="x", alpha=0.3)
    figure.suptitle(f"{title} (mean; bars: min–max over seeds)")
    _oob_key(figure.add_subplot(grid[2, :]), floors, without)
    return figure


# --- J&F against FPS ---------------------------------------------------------------------------


def jf_fps_points(frame: pd.DataFrame, origin: FpsOrigin | None = None) -> pd.DataFrame:
    """Per label (paper order): mean J&F (%) and FPS with their min–max over seeds, the seed
    count ``n`` and whether the FPS is ``comparable`` (see :class:`FpsOrigin`)."""
    runs, order = labelled_runs(frame)
    columns = ["jf", "jf_min", "jf_max", "fps", "fps_min", "fps_max", "n", "comparable"]
    if JF_MEAN not in runs or FPS not in runs:
        return pd.DataFrame(columns=columns)
    runs = runs.dropna(subset=[JF_MEAN, FPS])
    origin = origin or fps_origin(runs, None)
    order = [label for label in order if label in set(runs["label"])]
    summary = (
        runs.assign(jf=100.0 * runs[JF_MEAN].astype(float), fps=runs[FPS].astype(float))
        .groupby("label")
        .agg(
            jf=("jf", "mean"),
            jf_min=("jf", "min"),
            jf_max=("jf", "max"),
            fps=("fps", "mean"),
            fps_min=("fps", "min"),
            fps_max=("fps", "max"),
            n=("jf", "size"),
        )
        .reindex(order)
    )
    return summary.assign(comparable=origin.comparable)[columns]


def jf_fps_figure(frame: pd.DataFrame, origin: FpsOrigin | None = None) -> Figure:
    """Per variant, mean J&F against mean FPS; bars span the seeds' min–max. FPS that does not
    compare (the cells' in-run figures, a CPU, other work beside the measurement: ``origin``)
    is drawn with hollow markers and said so under the plot; J&F stays within [0, 100]."""
    title = "Accuracy against speed"
    runs, full_order = labelled_runs(frame)
    if JF_MEAN not in runs or FPS not in runs:
        return not_recorded_figure(title, "J&F or FPS not recorded.")
    origin = origin or fps_origin(runs, None)
    points = jf_fps_points(frame, origin)
    if points.empty:
        return not_recorded_figure(title, "No finished run has both J&F and FPS.")
    styles = variant_styles(full_order)
    figure = Figure(figsize=(9.0, 5.4), layout="constrained")
    ax = figure.add_subplot()
    for label, row in points.iterrows():
        style = styles[str(label)]
        ax.errorbar(
            row["fps"],
            row["jf"],
            xerr=[[row["fps"] - row["fps_min"]], [row["fps_max"] - row["fps"]]],
            yerr=[[row["jf"] - row["jf_min"]], [row["jf_max"] - row["jf"]]],
            fmt=style.marker,
            color=style.colour,
            markerfacecolor=style.colour if row["comparable"] else "white",
            markeredgewidth=1.6,
            markersize=9,
            capsize=3,
            label=f"{label} (n={int(row['n'])})",
        )
    low = float(points["jf_min"].min())
    high = float(points["jf_max"].max())
    pad = max(2.0, 0.1 * (high - low))
    ax.set_ylim(max(0.0, low - pad), min(100.0, high + pad))
    fps_low, fps_high = float(points["fps_min"].min()), float(points["fps_max"].max())
    fps_pad = max(0.05 * fps_high, 0.1 * (fps_high - fps_low))
    ax.set_xlim(max(0.0, fps_low - fps_pad), fps_high + fps_pad)
    ax.set_xlabel(f"inference speed (frames/s): {origin.description}")
    ax.set_ylabel("J&F (%)")
    ax.set_title(f"{title}: J&F against FPS per variant (mean; bars: min–max over seeds)")
    ax.grid(alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    if not origin.comparable:
        handles.append(
            Line2D(
                [], [], marker="o", linestyle="", color="0.3", markerfacecolor="white",
                markersize=9, label="hollow: FPS not comparable",
            )
        )  # fmt: skip
        ax.text(
            0.0, -0.16, "FPS not comparable across rows or with the paper's GPU figures: "
            + "; ".join(origin.not_comparable) + ".",
            transform=ax.transAxes, ha="left", va="top", fontsize=9, wrap=True,
        )  # fmt: skip
    ax.legend(
        handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False,
        title="variant (n = seeds)",
    )  # fmt: skip
    return figure


# --- training curves --------------------------------------------------------------------------


def _smooth(history: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """A centred rolling mean per run when a curve has many steps (noise hides the trend);
    returns the smoothed curves and the window (1 = unchanged)."""
    window = max(1, int(history.groupby("run_id").size().median() // 15))
    if window <= 1:
        return history, 1
    smoothed = history.sort_values(["run_id", "step"]).copy()
    smoothed["value"] = smoothed.groupby("run_id")["value"].transform(
        lambda v: v.rolling(window, center=True, min_periods=1).mean()
    )
    return smoothed, window


@dataclass(frozen=True)
class CurveMetric:
    """One logged curve and how its panel reads."""

    key: str
    title: str
    x_label: str
    y_label: str
    scale: float = 1.0
    #: Whether a long curve is drawn as a rolling mean (per-step values are noisy).
    smooth: bool = False


#: The panels of the training-curves figure, in order (the keys the cells log).
CURVE_METRICS: tuple[CurveMetric, ...] = (
    CurveMetric("train/loss", "Training loss per optimiser step", "optimiser step",
                "Lovász hinge loss", smooth=True),
    CurveMetric("epoch/loss", "Training loss, mean per epoch", "epoch", "Lovász hinge loss"),
    CurveMetric(VAL_JF, "Validation J&F after each epoch", "epoch", "J&F (%)",
                scale=100.0),
)  # fmt: skip


def training_curves_figure(frame: pd.DataFrame, histories: dict[str, pd.DataFrame]) -> Figure:
    """One panel per logged metric (:data:`CURVE_METRICS`: training loss per step and per
    epoch, validation J&F per epoch), one line per variant: the mean over seeds, with a band
    (long curves) or bars (short ones) from the lowest to the highest seed.

    ``histories`` maps a metric key to its ``DataFrame(run_id, step, value)`` (as
    :meth:`Tracker.metric_history` returns it).
    """
    title = "Training curves"
    runs, order = labelled_runs(frame)
    labels = dict(zip(runs["run_id"].astype(str), runs["label"], strict=True))
    panels = []
    for metric in CURVE_METRICS:
        history = histories.get(metric.key)
        if history is None or history.empty:
            continue
        history = history.assign(run_id=history["run_id"].astype(str))
        history = history[history["run_id"].isin(labels)]
        if history.empty:
            continue
        history = history.assign(value=history["value"].astype(float) * metric.scale)
        panel_title = metric.title
        if metric.smooth:
            history, window = _smooth(history)
            if window > 1:
                panel_title += f"\n(rolling mean over {window} steps)"
        panels.append((metric, panel_title, history.assign(label=history["run_id"].map(labels))))
    if not panels:
        return not_recorded_figure(title, "No training curves recorded for the finished runs.")
    present = [label for label in order if any(label in set(p[2]["label"]) for p in panels)]
    styles = variant_styles(order)
    palette = {label: styles[label].colour for label in present}
    dashes = {label: _DASHES[styles[label].linestyle] for label in present}
    figure = Figure(figsize=(5.0 * len(panels) + 2.6, 4.6), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(panels)))
    for ax, (metric, panel_title, history) in zip(axes, panels, strict=True):
        steps = sorted(history["step"].unique())
        few = len(steps) <= 10  # short curves: markers and error bars, so one point shows
        hue_order = [label for label in present if label in set(history["label"])]
        history = history.assign(x=history["step"].astype(float))
        if few and len(hue_order) > 1:  # dodge the error bars of the variants apart
            spread = min(0.3, 0.03 * len(hue_order))
            offsets = np.linspace(-spread, spread, len(hue_order))
            shift = dict(zip(hue_order, offsets, strict=True))
            history["x"] = history["x"] + history["label"].map(shift)
        sns.lineplot(
            data=history,
            x="x",
            y="value",
            hue="label",
            hue_order=hue_order,
            palette=palette,
            style="label",
            style_order=hue_order,
            dashes=dashes,
            markers={label: styles[label].marker for label in hue_order} if few else False,
            errorbar=SEED_RANGE,
            err_style="bars" if few else "band",
            err_kws={"capsize": 2} if few else {"alpha": 0.12},
            ax=ax,
            legend=False,
        )
        ax.set_title(panel_title, fontsize=11)
        ax.set_xlabel(metric.x_label)
        ax.set_ylabel(metric.y_label)
        if few:
            ax.set_xticks(steps)
            ax.set_xlim(steps[0] - 0.5, steps[-1] + 0.5)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if metric.scale == 100.0:
            low, high = ax.get_ylim()
            ax.set_ylim(max(0.0, low), min(100.0, high))
        ax.grid(alpha=0.3)
    handles = [
        Line2D([], [], color=styles[label].colour, linestyle=styles[label].linestyle,
               marker=styles[label].marker, label=label)
        for label in present
    ]  # fmt: skip
    figure.legend(handles=handles, loc="outside right center", frameon=False, title="variant")
    figure.suptitle(
        f"{title} per variant: line = mean over seeds; band (or bars) = lowest to highest seed"
    )
    return figure
