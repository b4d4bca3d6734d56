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

from ..names import ACTIVATION_NAMES, VARIANT_NAMES
from .layout import run_label
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


def _palette(order: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    if len(order) <= 10:
        colours = sns.color_palette("tab10", len(order))
    else:  # husl is a circle: one spare colour keeps the first and last apart
        colours = sns.color_palette("husl", len(order) + 1)[: len(order)]
    return dict(zip(order, colours, strict=True))


# --- Fig. 2: out-of-bounds sampling -------------------------------------------------------------

#: (column prefix, panel row title): the two readings of the statistic.
_OOB_READINGS = (
    ("oob_", "pooled over all sampling locations"),
    ("oob_layer_mean_", "mean over the sampling layers"),
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
        Patch(facecolor=_OOB_COLOURS[measure], label=f"outside {measure}")
        for measure in _OOB_MEASURES
    ]
    ax.add_artist(
        ax.legend(handles=measures, loc="upper center", ncol=len(measures), frameon=False)
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
            ax.set_xlabel("sampling locations outside the input (%)")
            ax.set_ylabel("variant" if column == 0 else "")
            if column:
                ax.tick_params(labelleft=False)
            ax.grid(axis="x", alpha=0.3)
    figure.suptitle(f"{title} (mean; bars: min–max over seeds)")
    _oob_key(figure.add_subplot(grid[2, :]), floors, without)
    return figure


# --- J&F against FPS ---------------------------------------------------------------------------


def jf_fps_figure(frame: pd.DataFrame) -> Figure:
    """Per variant, mean J&F against mean FPS; bars span the seeds' min–max (never below 0)."""
    title = "Accuracy against speed"
    runs, order = labelled_runs(frame)
    if "jf_mean" not in runs or "fps" not in runs:
        return not_recorded_figure(title, "J&F or FPS not recorded.")
    runs = runs.dropna(subset=["jf_mean", "fps"])
    if runs.empty:
        return not_recorded_figure(title, "No finished run has both J&F and FPS.")
    order = [label for label in order if label in set(runs["label"])]
    summary = (
        runs.assign(jf=100.0 * runs["jf_mean"].astype(float), fps=runs["fps"].astype(float))
        .groupby("label")
        .agg(
            jf=("jf", "mean"),
            jf_min=("jf", "min"),
            jf_max=("jf", "max"),
            fps=("fps", "mean"),
            fps_min=("fps", "min"),
            fps_max=("fps", "max"),
        )
        .reindex(order)
    )
    counts = runs.groupby("label").size().reindex(order)
    figure = Figure(figsize=(8.5, 5.0), layout="constrained")
    ax = figure.add_subplot()
    palette = _palette(order)
    markers = ["o", "s", "D", "^", "v", "P", "X", "*", "<", ">", "h", "p"]
    for index, label in enumerate(order):
        row = summary.loc[label]
        ax.errorbar(
            row["fps"],
            row["jf"],
            xerr=[[row["fps"] - row["fps_min"]], [row["fps_max"] - row["fps"]]],
            yerr=[[row["jf"] - row["jf_min"]], [row["jf_max"] - row["jf"]]],
            fmt=markers[index % len(markers)],
            color=palette[label],
            markersize=8,
            capsize=3,
            label=f"{label} (n={counts[label]})",
        )
    ax.set_xlabel("inference speed (frames/s)")
    ax.set_ylabel("J&F (%)")
    ax.set_title(f"{title}: J&F against FPS per variant (mean; bars: min–max over seeds)")
    ax.grid(alpha=0.3)
    ax.margins(0.15)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, title="variant")
    return figure


# --- training curves --------------------------------------------------------------------------


def _smooth(history: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """A centred rolling mean per run when a curve has many steps (noise hides the trend);
    returns the smoothed curves and the window (1 = unchanged)."""
    window = max(1, int(history.groupby("run_id").size().median() // 20))
    if window <= 1:
        return history, 1
    smoothed = history.sort_values(["run_id", "step"]).copy()
    smoothed["value"] = smoothed.groupby("run_id")["value"].transform(
        lambda v: v.rolling(window, center=True, min_periods=1).mean()
    )
    return smoothed, window


def training_curves_figure(frame: pd.DataFrame, histories: dict[str, pd.DataFrame]) -> Figure:
    """Loss against step/epoch per variant: the mean over seeds with a min–max band.

    ``histories`` maps a metric key ("train/loss", "epoch/loss") to its
    ``DataFrame(run_id, step, value)`` (as :meth:`Tracker.metric_history` returns it).
    """
    title = "Training loss"
    runs, order = labelled_runs(frame)
    labels = dict(zip(runs["run_id"].astype(str), runs["label"], strict=True))
    panels = []
    for key, x_label in (("train/loss", "optimiser step"), ("epoch/loss", "epoch")):
        history = histories.get(key)
        if history is None or history.empty:
            continue
        history = history.assign(run_id=history["run_id"].astype(str))
        history = history[history["run_id"].isin(labels)]
        if history.empty:
            continue
        window = 1
        if key == "train/loss":
            history, window = _smooth(history)
        panel_title = f"{key} (rolling mean over {window} steps)" if window > 1 else key
        panels.append((panel_title, x_label, history.assign(label=history["run_id"].map(labels))))
    if not panels:
        return not_recorded_figure(title, "No training curves recorded for the finished runs.")
    present = [label for label in order if any(label in set(p[2]["label"]) for p in panels)]
    palette = _palette(present)
    figure = Figure(figsize=(6.0 * len(panels) + 2.8, 4.4), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(panels)))
    for ax, (panel_title, x_label, history) in zip(axes, panels, strict=True):
        steps = sorted(history["step"].unique())
        few = len(steps) <= 10  # short curves: markers and error bars, so one point shows
        hue_order = [label for label in present if label in set(history["label"])]
        history = history.assign(x=history["step"].astype(float))
        if few and len(hue_order) > 1:  # dodge the error bars of the variants apart
            spread = min(0.3, 0.06 * len(hue_order))
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
            errorbar=SEED_RANGE,
            err_style="bars" if few else "band",
            marker="o" if few else None,
            ax=ax,
            legend=False,
        )
        ax.set_title(panel_title)
        ax.set_xlabel(x_label)
        if few:
            ax.set_xticks(steps)
            ax.set_xlim(steps[0] - 0.5, steps[-1] + 0.5)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("Lovász hinge loss")
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=palette[label], label=label) for label in present]
    figure.legend(handles=handles, loc="outside right center", frameon=False, title="variant")
    figure.suptitle(f"{title} (mean; bars: min–max over seeds)")
    return figure
