"""A cell's J&F per evaluation sequence: the rows a paired comparison of two table rows needs.

The DAVIS evaluation (``eval.json``, :mod:`d2bench.metrics.davis`) scores every object of every
sequence; the dataset's J&F is the mean over objects of (J + F) / 2. Here the objects of a
sequence are pooled into one record per (checkpoint, sequence) holding their count and their
mean, so that ``Σ objects · jf_mean / Σ objects`` over the sequences gives back the global J&F
exactly, and a bootstrap can resample sequences (each with all its objects).

The same records are the MLflow table ``per_sequence.json`` of every finished cell run (written
by :mod:`d2bench.tracking`) and what the report reads (with ``eval.json`` as the fallback for
runs recorded before the table existed). Torch-free, pandas only.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .contract import (
    ARTIFACT_BEST_VAL_EVAL,
    BEST_VAL_EVAL_FILE,
    BEST_VAL_PREFIX,
    EVAL_FILE,
    F_MEAN,
    J_MEAN,
    JF_MEAN,
)

log = logging.getLogger(__name__)

#: Which weights were scored: the last epoch's, or the best-validation ones (``best_val/*``).
CHECKPOINTS: tuple[str, ...] = ("final", "best_val")
#: The table's columns, in order (J, F and J&F as fractions, under the run's metric keys).
COLUMNS: tuple[str, ...] = ("checkpoint", "sequence", "objects", J_MEAN, F_MEAN, JF_MEAN)


def checkpoint_of_metric(metric: str) -> str:
    """The checkpoint whose J&F a run metric holds: ``best_val/jf_mean`` -> ``best_val``."""
    return "best_val" if metric.startswith(BEST_VAL_PREFIX) else "final"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def records_from_eval(result: Mapping[str, Any], checkpoint: str = "final") -> list[dict]:
    """One record per sequence of an ``eval.json`` (its ``per_object`` rows pooled).

    Raises ValueError naming what is wrong when the file has no usable per-object scores.
    """
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"checkpoint: unknown value {checkpoint!r}; allowed: {CHECKPOINTS}")
    per_object = result.get("per_object")
    if not isinstance(per_object, Mapping) or not per_object:
        raise ValueError("eval result has no per_object scores (not a DAVIS evaluation file?)")
    pooled: dict[str, list[tuple[float, float]]] = {}
    for name, entry in per_object.items():
        if not isinstance(entry, Mapping):
            raise ValueError(f"eval result: per_object[{name!r}] is not a mapping")
        j, f = _number(entry.get("J-Mean")), _number(entry.get("F-Mean"))
        if j is None or f is None:
            raise ValueError(f"eval result: per_object[{name!r}] lacks a finite J-Mean/F-Mean")
        sequence = entry.get("sequence")
        if not isinstance(sequence, str) or not sequence:
            sequence = str(name).rsplit("_", 1)[0]  # the official row name <sequence>_<k>
        pooled.setdefault(sequence, []).append((j, f))
    records = []
    for sequence, scores in pooled.items():
        j_mean = sum(j for j, _ in scores) / len(scores)
        f_mean = sum(f for _, f in scores) / len(scores)
        records.append(
            {
                "checkpoint": checkpoint,
                "sequence": sequence,
                "objects": len(scores),
                J_MEAN: j_mean,
                F_MEAN: f_mean,
                JF_MEAN: (j_mean + f_mean) / 2.0,
            }
        )
    return records


def global_jf(records: Iterable[Mapping[str, Any]]) -> float:
    """The dataset J&F the records stand for (object-weighted mean over sequences)."""
    total = count = 0.0
    for record in records:
        total += float(record["objects"]) * float(record[JF_MEAN])
        count += float(record["objects"])
    if count <= 0:
        raise ValueError("no scored objects")
    return total / count


def _read_json(path: Path) -> Mapping[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, Mapping) else None


def cell_records(cell_dir: Path, artifacts: Mapping[str, Any] | None = None) -> list[dict]:
    """The per-sequence records of a finished cell folder, both checkpoints where scored.

    ``artifacts`` is the cell's ``result["artifacts"]``: its ``best_val_eval`` names the file
    holding the best-validation weights' scores (``eval.json`` itself when the best epoch is
    the last). A missing or unreadable file leaves its checkpoint out (logged, never raised:
    a cell that finished stays finished).
    """
    cell_dir = Path(cell_dir)
    artifacts = artifacts or {}
    best_name = artifacts.get(ARTIFACT_BEST_VAL_EVAL)
    if not isinstance(best_name, str) or not best_name:
        best_name = BEST_VAL_EVAL_FILE if (cell_dir / BEST_VAL_EVAL_FILE).is_file() else None
    records: list[dict] = []
    for checkpoint, name in (("final", EVAL_FILE), ("best_val", best_name)):
        if name is None or not (cell_dir / name).is_file():
            continue
        result = _read_json(cell_dir / name)
        try:
            records += records_from_eval(result or {}, checkpoint)
        except ValueError as error:
            log.warning("no per-sequence J&F from %s: %s", cell_dir / name, error)
    return records


def records_from_table(data: Mapping[str, Any]) -> list[dict]:
    """Records from a logged ``per_sequence.json`` (MLflow's ``split`` JSON: ``columns`` and
    ``data``); a row logged twice (the table is appended to) counts once, the last one.

    Raises ValueError naming a missing column or a malformed row.
    """
    columns = data.get("columns")
    rows = data.get("data")
    if not isinstance(columns, list) or not isinstance(rows, list):
        raise ValueError("per-sequence table: expected 'columns' and 'data' lists")
    missing = [column for column in COLUMNS if column not in columns]
    if missing:
        raise ValueError(f"per-sequence table: missing columns {missing}; has {columns}")
    unique: dict[tuple[str, str], dict] = {}
    for row in rows:
        if not isinstance(row, list) or len(row) != len(columns):
            raise ValueError(f"per-sequence table: a row of {len(columns)} values expected: {row}")
        record = dict(zip(columns, row, strict=True))
        jf, objects = _number(record[JF_MEAN]), _number(record["objects"])
        if jf is None or objects is None or objects <= 0:
            raise ValueError(f"per-sequence table: bad jf_mean/objects in {record}")
        unique[(str(record["checkpoint"]), str(record["sequence"]))] = {
            column: record[column] for column in COLUMNS
        }
    return list(unique.values())
