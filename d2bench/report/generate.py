"""A study's report end to end: gather from the tracker, then write tables, figures and page.

:func:`write_report` needs only a :class:`ReportData` (plain frames and mappings), so a report
can be written from any source; :func:`collect_report_data` fills one from the MLflow store
through :class:`d2bench.tracking.Tracker`. Neither imports torch.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..core.config import config_to_dict
from ..core.contract import MAPS_FILE, RESULT_FILE
from ..core.names import VARIANT_NAMES
from ..core.oob_floor import block_volume, plain_conv_floor
from .artifacts import fill_missing_metrics
from .figures import (
    CURVE_METRICS,
    OOBFloor,
    jf_fps_figure,
    oob_figure,
    save_figure,
    training_curves_figure,
)
from .layout import DILATED_VARIANTS, TableLayout
from .maps import RecordedMaps, maps_figure, read_maps
from .measurement import StudyMeasurement, fps_origin, parse_measurement, with_measured_fps
from .page import FigureEntry, render_page, write_page
from .protocol import protocol_from_configs
from .publish import publish_report
from .render import to_csv, to_latex, to_markdown
from .sequences import per_sequence_frame
from .study_layouts import layouts_for_study, tables_of
from .table import build_table, normalise_runs

if TYPE_CHECKING:
    from ..study import Cell, Study
    from ..tracking import Tracker

#: Training curves drawn, by the metric key the cells log.
CURVE_KEYS: tuple[str, ...] = tuple(metric.key for metric in CURVE_METRICS)
#: How many finished runs are tried for a maps file before the figure says "not recorded".
MAPS_CANDIDATES = 3

_FIGURE_TEXT = {
    "oob": (
        "Out-of-bounds sampling (the paper's Fig. 2)",
        "Share of sampling locations (all 27 taps of every output voxel of every sampling "
        "layer) that fall outside the layer's input during inference: *fully outside* "
        "contributes exactly 0, *partly outside* puts some interpolation weight on zero "
        "padding. Two readings: *pooled* counts every sampling location of every layer once "
        "(so the T = 4 block, with 8 times the voxels, weighs 8 times the T = 2 one); *mean "
        "over the sampling layers* averages the layers' own shares. The bar colour is the axis "
        "and means the same in every panel (grey: outside along any axis, the panel's total); "
        "per axis, a location counts once for every axis it leaves. The panel's title and x "
        "axis say how far outside: *fully or partly* is the sum of the two (any weight on "
        "padding). The red lines are the plain conv's own floor: the share of a "
        "size-preserving 3×3×3 conv's taps (zero padding 1) outside each replaced block's "
        "input volume (T = 2 and T = 4 for 8-frame clips) at the study's frame size, padded to "
        "a multiple of 32, computed exactly from that geometry. Every sampling variant starts "
        "there (s = 1, zero offsets); a D² layer with s > 0 never goes below its block's floor "
        "in *fully or partly* outside, but its border taps split between *fully* (s ≥ 1) and "
        "*partly* (s < 1), so those columns have no floor. "
        "Variants without sampling layers (Revised Baseline, ASPP) have no such share. "
        "Definition: `d2bench.metrics.oob`, `d2bench.core.oob_floor`.",
    ),
    "jf_fps": (
        "J&F against FPS",
        "J&F of the final epoch's weights, mean over seeds, bars from the lowest to the "
        "highest seed; FPS: the cells' own in-run figures (no `d2bench measure` record), taken "
        "on whatever device each cell got, possibly beside other cells, so not comparable "
        "across rows (hollow markers).",
    ),
    "training_curves": (
        "Training curves",
        "One panel per logged curve: the Lovász hinge loss per optimiser step (a rolling mean "
        "when long) and its mean per epoch, and the validation J&F after each epoch (where the "
        "study validates per epoch). Per variant, the line is the mean over seeds and the band "
        "(or the bars, for a few epochs) spans the lowest to the highest seed.",
    ),
    "maps": (
        "Dilation and modulation maps (the paper's Fig. 4)",
        "For one sequence, frames beside the mean predicted dilation per axis and the mean "
        "modulation of one replaced layer (its finest-resolution D² layer), for the time steps "
        "of one clip. The maps are cropped to the frame (the zero padding inference adds to "
        "reach a multiple of 32 is removed); the dilation scale always reaches s = 1, the "
        "plain conv's taps.",
    ),
}


@dataclass(frozen=True)
class ReportData:
    """Everything a report shows, already gathered."""

    study_name: str
    runs: pd.DataFrame
    layouts: tuple[TableLayout, ...]
    #: Protocol sentence per layout name (the end of each caption).
    protocols: Mapping[str, str] = field(default_factory=dict)
    #: Metric key -> DataFrame(run_id, step, value).
    histories: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    maps: RecordedMaps | None = None
    maps_note: str = ""
    #: ``clip_len`` and ``gap`` of the maps run's inference (to place its frames).
    maps_plan: Mapping[str, int] = field(default_factory=dict)
    #: The plain conv's out-of-bounds floor per replaced block (the OOB figure's red lines).
    oob_floors: tuple[OOBFloor, ...] = ()
    spec_text: str = ""
    description: str = ""
    environment: Mapping[str, Any] = field(default_factory=dict)
    tracking_uri: str = ""
    ui_url: str | None = None
    experiment_id: str | None = None
    #: The study's newest ``d2bench measure`` record: Table 1's FPS/Mem (None: in-run figures).
    measurement: StudyMeasurement | None = None
    #: The finished runs' J&F per sequence (d2bench.report.sequences): the tables' paired
    #: comparison with the reference row (None: no comparison).
    per_sequence: pd.DataFrame | None = None


@dataclass(frozen=True)
class ReportFiles:
    """What :func:`write_report` wrote."""

    out_dir: Path
    page: Path
    tables: dict[str, dict[str, Path]]
    figures: dict[str, list[Path]]
    #: Cell runs the report read, per status (FINISHED, FAILED, RUNNING).
    run_counts: dict[str, int] = field(default_factory=dict)

    def all_paths(self) -> list[Path]:
        paths = [self.page]
        for files in self.tables.values():
            paths += files.values()
        for files in self.figures.values():
            paths += files
        return paths


def write_report(data: ReportData, out_dir: str | Path) -> ReportFiles:
    """Write tables (md, tex, csv), figures (png, pdf) and README.md under ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = []
    table_files: dict[str, dict[str, Path]] = {}
    for layout in data.layouts:
        protocol = data.protocols.get(layout.name, "")
        table = build_table(data.runs, layout, protocol, data.measurement, data.per_sequence)
        files = {
            "md": out_dir / f"{layout.name}.md",
            "tex": out_dir / f"{layout.name}.tex",
            "csv": out_dir / f"{layout.name}.csv",
        }
        files["md"].write_text(to_markdown(table))
        files["tex"].write_text(to_latex(table, label=f"tab:{data.study_name}-{layout.name}"))
        files["csv"].write_text(to_csv(table))
        table_files[layout.name] = files
        tables.append((table, {fmt: path.name for fmt, path in files.items()}))

    figure_dir = out_dir / "figures"
    drawn = {
        "oob": oob_figure(data.runs, data.oob_floors),
        "jf_fps": jf_fps_figure(
            with_measured_fps(data.runs, data.measurement),
            fps_origin(data.runs, data.measurement),
        ),
        "training_curves": training_curves_figure(data.runs, dict(data.histories)),
        "maps": maps_figure(data.maps, data.maps_note, dict(data.maps_plan)),
    }
    figure_files: dict[str, list[Path]] = {}
    entries = []
    for stem, figure in drawn.items():
        paths = save_figure(figure, figure_dir, stem)
        figure_files[stem] = paths
        title, description = _FIGURE_TEXT[stem]
        if stem == "jf_fps" and data.measurement is not None:
            description = (
                "Mean J&F over seeds (bars: lowest to highest seed) against the row's FPS from "
                f"the newest `d2bench measure` on {data.measurement.device} "
                f"({data.measurement.device_name}), mean over {data.measurement.rounds} round(s)."
            )
            if not data.measurement.comparable:
                description += (
                    " These FPS are not comparable with GPU figures taken alone (hollow "
                    "markers): " + "; ".join(data.measurement.not_comparable) + "."
                )
        if stem == "maps" and data.maps_note:
            description = f"{description} {data.maps_note}"
        entries.append(
            FigureEntry(title, f"figures/{stem}.png", f"figures/{stem}.pdf", description)
        )

    page = render_page(
        data.study_name,
        tables,
        entries,
        data.runs,
        data.spec_text,
        data.environment,
        data.tracking_uri,
        ui_url=data.ui_url,
        experiment_id=data.experiment_id,
        description=data.description,
    )
    counts = data.runs["status"].value_counts().to_dict() if "status" in data.runs else {}
    return ReportFiles(
        out_dir,
        write_page(out_dir, page),
        table_files,
        figure_files,
        {str(k): int(v) for k, v in counts.items()},
    )


# --- gathering from the tracker -------------------------------------------------------------


def _synthetic_size(study: Study) -> str | None:
    """``H×W`` of a generated synthetic set (its spec states it), else None."""
    synthetic = study.spec.synthetic_data
    if isinstance(synthetic, Mapping) and "height" in synthetic and "width" in synthetic:
        return f"{synthetic['height']}×{synthetic['width']}"
    return None


def study_oob_floors(
    cells: Sequence[Cell], frame_size: Sequence[int] | None
) -> tuple[OOBFloor, ...]:
    """The plain conv's floor for each block the cells replace, at their inference clip length
    and ``frame_size`` (H, W); none when the frame size is not known."""
    if frame_size is None:
        return ()
    floors: dict[tuple[str, tuple[int, int, int]], OOBFloor] = {}
    for cell in cells:
        for block in dict.fromkeys(b.split(".", 1)[0] for b in cell.config.model.replace_blocks):
            volume = block_volume(block, cell.config.infer.clip_len, frame_size)
            floors.setdefault((block, volume), OOBFloor(block, volume, plain_conv_floor(volume)))
    return tuple(sorted(floors.values(), key=lambda floor: floor.volume))


def _frame_size(study: Study, cells: Sequence[Cell]) -> tuple[int, int] | None:
    """The frames' H×W at inference: the synthetic set's when the spec states it, else the
    training size (the paper studies resize to DAVIS 480p's own 480×854); None if unknown."""
    synthetic = study.spec.synthetic_data
    if isinstance(synthetic, Mapping) and "height" in synthetic and "width" in synthetic:
        return int(synthetic["height"]), int(synthetic["width"])
    sizes = {cell.config.data.train_size for cell in cells} - {None}
    return sizes.pop() if len(sizes) == 1 else None


def _protocols(
    study: Study, cells: Sequence[Cell], layouts: Sequence[TableLayout], environment: Mapping
) -> dict[str, str]:
    protocols = {}
    for layout in layouts:
        own = [cell for cell in cells if layout.name in tables_of(cell)] or list(cells)
        configs = [config_to_dict(cell.config) for cell in own]
        protocol = protocol_from_configs(
            configs, environment, seeds=study.seeds, native_resolution=_synthetic_size(study)
        )
        protocols[layout.name] = protocol.describe()
    return protocols


def _maps_candidates(runs: pd.DataFrame) -> list[str]:
    """Finished runs of dilated variants, the paper's (IV) with its default activation first."""
    finished = normalise_runs(runs)
    finished = finished[finished["status"] == "FINISHED"]
    finished = finished[finished["variant"].isin(DILATED_VARIANTS)]
    rank = {variant: -VARIANT_NAMES.index(variant) for variant in DILATED_VARIANTS}
    ordered = finished.assign(
        _rank=finished["variant"].map(rank), _default=finished["activation"] != "1+elu"
    ).sort_values(["_rank", "_default", "seed"], kind="stable")
    return [str(run_id) for run_id in ordered["run_id"]]


def _download_json(tracker: Tracker, run_id: str, name: str, scratch: Path) -> dict | None:
    """A run's JSON artifact, or None when it was not stored (or is not JSON)."""
    try:
        path = tracker.download_artifact(run_id, name, scratch / run_id / name.replace("/", "_"))
        return json.loads(Path(path).read_text())
    except Exception:  # MLflow raises store-specific errors for a missing artifact
        return None


def _load_maps(
    tracker: Tracker, runs: pd.DataFrame, scratch: Path
) -> tuple[RecordedMaps | None, str, str | None]:
    """(maps, a note for the page, the run they came from)."""
    candidates = _maps_candidates(runs)
    if not candidates:
        note = "No finished run of a D² variant (the only layers with dilation maps)."
        return None, note, None
    for run_id in candidates[:MAPS_CANDIDATES]:
        try:
            path = tracker.download_artifact(run_id, MAPS_FILE, scratch / f"maps-{run_id}")
        except Exception:  # not logged for this run
            continue
        try:
            return read_maps(path), f"Maps from run `{run_id}`.", run_id
        except ValueError as error:
            return None, f"Maps of run `{run_id}` could not be read: {error}", run_id
    return (
        None,
        (
            f"Not recorded: no {MAPS_FILE} among the finished D² runs (set "
            "`infer.save_maps_for` to a sequence name in the study to record them)."
        ),
        None,
    )


def _run_environment(tracker: Tracker, runs: pd.DataFrame, scratch: Path) -> dict[str, Any]:
    """The environment a finished cell recorded in its result.json (where the work ran)."""
    finished = runs[runs["status"] == "FINISHED"] if "status" in runs else runs.iloc[0:0]
    for run_id in list(finished["run_id"])[:1]:
        result = _download_json(tracker, str(run_id), RESULT_FILE, scratch)
        if isinstance(result, dict) and isinstance(result.get("environment"), dict):
            return result["environment"]
    return {}


def default_ui_url(tracking_uri: str) -> str | None:
    """A tracking server's address is also its UI's; a file store has no UI address."""
    return tracking_uri if tracking_uri.startswith(("http://", "https://")) else None


def collect_report_data(study: Study, tracker: Tracker, ui_url: str | None = None) -> ReportData:
    """Read the study's current cells' runs, curves, maps, spec and environment."""
    from ..study import expand_cells

    cells = expand_cells(study)
    keys = {cell.key for cell in cells}
    all_runs = tracker.study_runs(study.name)
    runs = all_runs[all_runs["cell_key"].isin(keys)].reset_index(drop=True)
    try:
        info = tracker.study_info(study.name)
    except LookupError:
        info = {}
    layouts = layouts_for_study(study, cells)
    finished_ids = [str(r) for r in runs.loc[runs["status"] == "FINISHED", "run_id"]]
    histories = {key: tracker.metric_history(finished_ids, key) for key in CURVE_KEYS}
    with tempfile.TemporaryDirectory(prefix="d2bench-report-") as scratch_name:
        scratch = Path(scratch_name)
        runs = fill_missing_metrics(
            runs, lambda run_id, name: _download_json(tracker, run_id, name, scratch)
        )
        maps, maps_note, maps_run = _load_maps(tracker, runs, scratch)
        run_environment = _run_environment(tracker, runs, scratch)
        per_sequence = per_sequence_frame(
            runs, lambda run_id, name: _download_json(tracker, run_id, name, scratch)
        )
    launch_environment = dict(info.get("environment") or {})
    environment = {**launch_environment, **run_environment}
    maps_plan: dict[str, int] = {}
    if maps_run is not None:
        key = runs.loc[runs["run_id"] == maps_run, "cell_key"].iloc[0]
        infer = next(cell.config.infer for cell in cells if cell.key == key)
        maps_plan = {"clip_len": infer.clip_len, "gap": infer.gap}
    from ..tracking.measurements import latest_measurement

    measurement = parse_measurement(latest_measurement(tracker, study.name))
    stale = len(all_runs) - len(runs)
    description = study.spec.description
    if stale:
        description += (
            f"\n\n{stale} tracked run(s) of earlier versions of this study (cells the current "
            "spec no longer has) are left out."
        )
    return ReportData(
        study_name=study.name,
        runs=runs,
        layouts=layouts,
        protocols=_protocols(study, cells, layouts, environment),
        histories=histories,
        maps=maps,
        maps_note=maps_note,
        maps_plan=maps_plan,
        oob_floors=study_oob_floors(cells, _frame_size(study, cells)),
        spec_text=info.get("spec") or study.text,
        description=description.strip(),
        environment=environment,
        tracking_uri=tracker.uri,
        ui_url=ui_url or default_ui_url(tracker.uri),
        experiment_id=tracker.experiment_id(study.name),
        measurement=measurement,
        per_sequence=per_sequence,
    )


def generate_report(
    study_path: str | Path,
    out_dir: str | Path | None = None,
    tracking_uri: str | None = None,
    ui_url: str | None = None,
) -> ReportFiles:
    """``d2bench report``: load the study, gather from the tracker, write ``reports/<study>``,
    and put the tables and figures on the study's parent run in MLflow."""
    from ..study import load_study
    from ..tracking import Tracker

    study = load_study(study_path)
    tracker = Tracker(tracking_uri)
    data = collect_report_data(study, tracker, ui_url)
    files = write_report(data, out_dir or Path("reports") / study.name)
    publish_report(tracker, study, data, files)  # the UI shows what the files show
    return files
