"""Tables and figures from tracked results (torch-free; MLflow only through d2bench.tracking).

``build_table(frame, layout)`` turns a frame of runs into a :class:`Table`; ``to_markdown``,
``to_latex`` and ``to_csv`` print it; the figure functions draw from the same frame;
``generate_report`` does it all for a study file and its MLflow store.
"""

from .figures import jf_fps_figure, oob_figure, save_figure, training_curves_figure
from .generate import (
    ReportData,
    ReportFiles,
    collect_report_data,
    default_ui_url,
    generate_report,
    write_report,
)
from .layout import (
    LayoutRow,
    MetricColumn,
    TableLayout,
    run_label,
    table1_layout,
    table2_layout,
    variant_selector,
)
from .maps import RecordedMaps, maps_figure, read_maps
from .protocol import Protocol, protocol_from_configs
from .render import latex_escape, to_csv, to_frame, to_latex, to_markdown
from .study_layouts import layouts_for_study
from .table import CellStats, Table, TableRow, build_table, normalise_runs, select_runs

__all__ = [
    "CellStats",
    "LayoutRow",
    "MetricColumn",
    "Protocol",
    "RecordedMaps",
    "ReportData",
    "ReportFiles",
    "Table",
    "TableLayout",
    "TableRow",
    "build_table",
    "collect_report_data",
    "default_ui_url",
    "generate_report",
    "jf_fps_figure",
    "latex_escape",
    "layouts_for_study",
    "maps_figure",
    "normalise_runs",
    "oob_figure",
    "protocol_from_configs",
    "read_maps",
    "run_label",
    "save_figure",
    "select_runs",
    "table1_layout",
    "table2_layout",
    "to_csv",
    "to_frame",
    "to_latex",
    "to_markdown",
    "training_curves_figure",
    "variant_selector",
    "write_report",
]
