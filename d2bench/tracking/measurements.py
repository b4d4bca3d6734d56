"""Measurement runs in MLflow: one per ``d2bench measure``, a child of the study's parent run.

A measurement run (tag ``d2bench.kind = measurement``) holds per-row metrics (``fps/<row>``,
``fps_std/<row>``, ``mem_gb/<row>``) and the whole record as ``measurement.json``; the report
reads the newest FINISHED one. Cell runs are never touched: the planner and the report's cell
frame only look at ``d2bench.kind = cell``, so measuring changes no cell's state.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from .tracker import (
    TAG_GIT,
    TAG_KIND,
    TAG_PARENT,
    TAG_RUN_NAME,
    TAG_STUDY,
    Tracker,
    process_id,
    with_retries,
)

KIND_MEASUREMENT = "measurement"
TAG_DEVICE = "d2bench.device"
TAG_ROUNDS = "d2bench.rounds"
TAG_RECORD = "d2bench.record_path"
TAG_WORKER = "d2bench.worker"
TAG_ERROR = "d2bench.error"
MEASUREMENT_ARTIFACT = "measurement.json"

_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /]")


def metric_row_name(row: str) -> str:
    """A row name as MLflow accepts in a metric key (``act_1+relu`` -> ``act_1_relu``)."""
    return _UNSAFE.sub("_", row)


def study_run_id(tracker: Tracker, study_name: str) -> str | None:
    """The study's parent run, or None when the study was never launched in this store."""
    run = tracker._study_run(study_name)
    return None if run is None else run.info.run_id


def create_measurement_run(
    tracker: Tracker,
    study_name: str,
    parent_run_id: str,
    *,
    device: str,
    rounds: int,
    record_path: str,
    revision: str,
) -> str:
    """A RUNNING measurement run under the study's parent (which stays as it is)."""
    experiment_id = tracker.experiment_id(study_name)
    if experiment_id is None:
        raise LookupError(f"no study named {study_name!r} in {tracker.uri}")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    tags = {
        TAG_PARENT: parent_run_id,
        TAG_RUN_NAME: f"measure {device} {stamp}",
        TAG_KIND: KIND_MEASUREMENT,
        TAG_STUDY: study_name,
        TAG_DEVICE: device,
        TAG_ROUNDS: str(rounds),
        TAG_RECORD: record_path,
        TAG_GIT: revision,
        TAG_WORKER: process_id(),
    }
    run = with_retries(lambda: tracker.client.create_run(experiment_id, tags=tags))
    return run.info.run_id


def _row_metrics(record: dict[str, Any]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for row, measured in record.get("rows", {}).items():
        name = metric_row_name(row)
        values = {
            f"fps/{name}": measured.get("fps", {}).get("mean"),
            f"fps_std/{name}": measured.get("fps", {}).get("std"),
            f"mem_gb/{name}": measured.get("memory_gb", {}).get("mean"),
        }
        for key, value in values.items():
            if isinstance(value, int | float) and math.isfinite(value):
                metrics[key] = float(value)
    return metrics


def finish_measurement_run(tracker: Tracker, run_id: str, record: dict[str, Any]) -> None:
    """Per-row metrics, the record as an artifact, the device as a tag, then FINISHED."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(key, value, now, 0) for key, value in _row_metrics(record).items()]
    for start in range(0, len(metrics), 500):
        chunk = metrics[start : start + 500]
        with_retries(lambda c=chunk: tracker.client.log_batch(run_id, metrics=c))
    name = str(record.get("device_name") or "")
    with_retries(lambda: tracker.client.set_tag(run_id, f"{TAG_DEVICE}_name", name[:5000]))
    with_retries(lambda: tracker.client.log_dict(run_id, record, MEASUREMENT_ARTIFACT))
    with_retries(lambda: tracker.client.set_terminated(run_id, status="FINISHED"))


def fail_measurement_run(tracker: Tracker, run_id: str, traceback_text: str) -> None:
    """The traceback as an artifact and its last line as a tag, then FAILED."""
    last = traceback_text.strip().splitlines()[-1] if traceback_text.strip() else ""
    with_retries(lambda: tracker.client.log_text(run_id, traceback_text, "traceback.txt"))
    with_retries(lambda: tracker.client.set_tag(run_id, TAG_ERROR, last[:5000]))
    with_retries(lambda: tracker.client.set_terminated(run_id, status="FAILED"))


def latest_measurement(tracker: Tracker, study_name: str) -> dict[str, Any] | None:
    """The record of the study's newest finished measurement (with its ``run_id``), or None."""
    experiment_id = tracker.experiment_id(study_name)
    if experiment_id is None:
        return None
    runs = with_retries(
        lambda: tracker.client.search_runs(
            [experiment_id],
            filter_string=(
                f"tags.`{TAG_KIND}` = '{KIND_MEASUREMENT}' and attributes.status = 'FINISHED'"
            ),
            order_by=["attribute.start_time DESC"],
            max_results=5,
        )
    )
    for run in runs:
        with tempfile.TemporaryDirectory(prefix="d2bench-measurement-") as scratch:
            try:
                path = tracker.client.download_artifacts(
                    run.info.run_id, MEASUREMENT_ARTIFACT, scratch
                )
                record = json.loads(Path(path).read_text())
            except Exception:  # a run whose artifact is missing or unreadable: try an older one
                continue
        if isinstance(record, dict):
            return {**record, "run_id": run.info.run_id}
    return None
