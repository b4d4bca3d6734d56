"""``d2bench bench plan``: how long ``d2bench plan`` takes on a large study and store.

A study of ``cells`` cells (rows × 10 seeds, synthetic data) and an MLflow store holding one
finished run for each of them are written into a folder (kept, and reused when it already holds
a filled store); then ``d2bench plan`` runs in fresh processes, each timed from start to exit,
so that its import time counts as a user waits for it. Torch-free.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

SEEDS = 10


@dataclass(frozen=True)
class PlanTiming:
    """Wall times of the ``d2bench plan`` runs, and what was planned."""

    cells: int
    summary: str
    seconds: list[float]
    folder: Path
    error: str | None = None


def write_plan_study(folder: Path, cells: int) -> Path:
    """A study of ``cells`` cells (rounded down to whole rows of ten seeds) in ``folder``."""
    rows = [{"name": f"r{i:04d}", "train": {"lr": 1e-5 * (1 + i)}} for i in range(cells // SEEDS)]
    spec = {"name": "bench-plan", "base": {"data": {"root": "data"}}, "rows": rows,
            "seeds": list(range(SEEDS)), "synthetic_data": True}  # fmt: skip
    path = folder / "bench-plan.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_plan_benchmark(cells: int, repeat: int, folder: Path | None = None) -> PlanTiming:
    """Time ``repeat`` runs of ``d2bench plan`` on ``cells`` cells against as many finished
    runs; stops at the first run that fails (its stderr in ``error``)."""
    from ..study import expand_cells, load_study
    from ..tracking import Tracker

    folder = Path(folder or tempfile.mkdtemp(prefix="d2bench-bench-plan-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = write_plan_study(folder, cells)
    uri = f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"
    tracker = Tracker(uri)
    study = load_study(path)
    planned = expand_cells(study)
    if not tracker.cell_records(study.name):
        print(f"filling {uri} with {len(planned)} finished runs ...", flush=True)
        parent = tracker.ensure_study_run(study.name, study.text, "local", {"git": "bench"})
        for cell in planned:
            run_id = tracker.create_cell_run(study.name, parent, cell, "local", folder, "bench")
            tracker.cell_logger(run_id).finished({"metrics": {"jf_mean": 0.5}}, folder)
    command = [sys.executable, "-m", "d2bench.cli", "plan", str(path), "--tracking-uri", uri]
    seconds: list[float] = []
    summary = ""
    for _ in range(repeat):
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        seconds.append(time.perf_counter() - started)
        if done.returncode != 0:
            return PlanTiming(len(planned), summary, seconds, folder, done.stderr)
        summary = done.stdout.strip().splitlines()[-1]
    return PlanTiming(len(planned), summary, seconds, folder)
