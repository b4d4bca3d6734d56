"""Put a written report on the study's parent run in MLflow, so the UI alone shows the study.

Every ``d2bench report`` refreshes it: per row and metric the mean, std and n over the row's
finished cells (as metrics ``<row>/JF``, ``<row>/JF_std``, ``<row>/JF_n`` and as the JSON
table ``rows.json``), the study's shape as params, and the report folder itself (tables in
Markdown, LaTeX and CSV, figures, the page) under the artifact folder ``report/``. The numbers
are in the tables' units (J&F in percent, FPS, memory in GB): the cells' in-run figures; the
tables' FPS and memory may come from a ``d2bench measure`` run instead, which the artifacts show.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from ..study import Study
    from ..tracking import Tracker
    from .generate import ReportData, ReportFiles

#: The artifact folder of the parent run that holds the report.
REPORT_ARTIFACTS = "report"
#: The name of the logged table of the rows' aggregates.
ROWS_TABLE = "rows"


def row_aggregates(runs: pd.DataFrame, rows: tuple[str, ...] = ()) -> pd.DataFrame:
    """One line per row (in ``rows`` order, then any other): variant, activation, and for each
    display metric its mean, std (ddof 1; 0 for one cell) and n over the FINISHED cells."""
    from ..tracking.tracker import DISPLAY_METRICS, display_metrics

    columns = ["row", "variant", "activation", "cells"]
    for name in DISPLAY_METRICS:
        columns += [f"{name} mean", f"{name} std", f"{name} n"]
    if runs.empty or "row" not in runs:
        return pd.DataFrame(columns=columns)
    finished = runs[runs["status"] == "FINISHED"]
    order = [row for row in rows if row in set(runs["row"])]
    order += [row for row in dict.fromkeys(runs["row"]) if row not in order]
    lines = []
    for row in order:
        cells = finished[finished["row"] == row]
        every = runs[runs["row"] == row]
        line: dict[str, Any] = {
            "row": row,
            "variant": every["variant"].iloc[0] if "variant" in every else None,
            "activation": every["activation"].iloc[0] if "activation" in every else None,
            "cells": len(cells),
        }
        shown = [display_metrics(record) for record in cells.to_dict("records")]
        for name in DISPLAY_METRICS:
            values = [value[name] for value in shown if name in value]
            n = len(values)
            mean = sum(values) / n if n else math.nan
            std = (
                math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
                if n > 1
                else (0.0 if n else math.nan)
            )
            line |= {f"{name} mean": mean, f"{name} std": std, f"{name} n": n}
        lines.append(line)
    return pd.DataFrame(lines, columns=columns)


def aggregate_metrics(table: pd.DataFrame) -> dict[str, float]:
    """``<row>/<metric>``, ``<row>/<metric>_std`` and ``<row>/<metric>_n`` from
    :func:`row_aggregates` (metrics without any finished value are left out)."""
    from ..tracking.measurements import metric_row_name
    from ..tracking.tracker import DISPLAY_DECIMALS, DISPLAY_METRICS

    metrics: dict[str, float] = {}
    for line in table.to_dict("records"):
        row = metric_row_name(str(line["row"]))
        for name in DISPLAY_METRICS:
            if not line[f"{name} n"]:
                continue
            key = name.replace(" ", "_")
            metrics[f"{row}/{key}"] = round(float(line[f"{name} mean"]), DISPLAY_DECIMALS)
            metrics[f"{row}/{key}_std"] = round(float(line[f"{name} std"]), DISPLAY_DECIMALS)
            metrics[f"{row}/{key}_n"] = float(line[f"{name} n"])
    return metrics


def study_params(study: Study, runs: pd.DataFrame) -> dict[str, Any]:
    """The study's shape, as the parent run's params."""
    return {
        "rows": len(study.rows),
        "seeds": list(study.seeds),
        "cells": len(study.rows) * len(study.seeds),
        "select": study.select,
        "reference": study.reference or "none",
        "measure": list(study.measure),
    }


def publish_report(
    tracker: Tracker, study: Study, data: ReportData, files: ReportFiles
) -> str | None:
    """Log the report onto the study's parent run; None when the study was never launched in
    this store (no parent run to hold it)."""
    from ..tracking.tracker import study_description

    if tracker.experiment_id(study.name) is None:
        return None
    table = row_aggregates(data.runs, tuple(study.rows))
    description = study_description(
        study.name, study.spec.description, str(study.path) if study.path else None
    )
    try:
        return tracker.publish_study(
            study.name,
            metrics=aggregate_metrics(table),
            params=study_params(study, data.runs),
            tables={ROWS_TABLE: table},
            folders={REPORT_ARTIFACTS: files.out_dir},
            description=description,
        )
    except LookupError:
        return None
