"""``d2bench measure STUDY``: FPS and memory of every finished row, on one device, serially.

The command itself is torch-free (it plans and waits); the measuring runs in its own process,
locally, as one SLURM job or as one Ray task (see :mod:`d2bench.launch.measure_backends`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .study import STUDY_HELP

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N"


def _check_arguments(args: argparse.Namespace) -> None:
    import re

    from ..cli import UsageError

    if not re.fullmatch(r"auto|cpu|cuda(:\d{1,2})?", args.device):
        raise UsageError(f"--device {args.device!r}: unknown device; allowed: {DEVICE_CHOICES}")
    if args.rounds < 1:
        raise UsageError(f"--rounds {args.rounds}: must be at least 1")
    if args.runs_dir is not None and not args.runs_dir.strip():
        raise UsageError("--runs-dir: is empty; give the folder the study's cells are in")


def _plan(args: argparse.Namespace) -> tuple[Any, Any, Path]:
    """The study, the task, and the task's file (written, not yet run)."""
    from ..cli import UsageError
    from ..core.measurement import MeasureTask, record_path
    from ..launch.measure_plan import MeasurePlanError, plan_targets
    from ..study import expand_cells
    from ..tracking import Tracker
    from ..tracking.measurements import study_run_id
    from .study import load_checked_study

    study = load_checked_study(args.study)
    tracker = Tracker(args.tracking_uri)
    parent = study_run_id(tracker, study.name)
    if parent is None:
        raise UsageError(
            f"study {study.name}: never launched in the store {tracker.uri}; run "
            f"`d2bench run {args.study}` first (or pass --tracking-uri)"
        )
    runs_dir = Path(args.runs_dir) if args.runs_dir is not None else study.runs_dir
    try:
        targets, unmeasured = plan_targets(study, expand_cells(study), runs_dir)
    except MeasurePlanError as error:
        raise UsageError(str(error)) from None
    record = record_path(runs_dir, study.name)
    task = MeasureTask(
        study=study.name,
        device=args.device,
        rounds=args.rounds,
        targets=tuple(targets),
        unmeasured=tuple(unmeasured),
        tracking_uri=tracker.uri,
        parent_run_id=parent,
        record_path=str(record),
        backend=args.backend,
    )
    return study, task, task.write(record.with_suffix(".task.json"))


def _print_record(path: Path) -> None:
    record = json.loads(path.read_text())
    print(f"measured on {record['device']} ({record['device_name']}), {record['rounds']} rounds:")
    for row, measured in record["rows"].items():
        fps, memory = measured["fps"], measured["memory_gb"]
        spread = f" ± {fps['std']:.3f}" if fps.get("std") is not None else ""
        mem = "" if memory.get("mean") is None else f", {measured['memory_source']} "
        mem += "" if memory.get("mean") is None else f"{memory['mean']:.3f} GB"
        print(f"  {row:<28} {fps['mean']:.3f}{spread} FPS{mem}")
    print(f"record: {path} (MLflow run {record['run_id']})")


def _measure(args: argparse.Namespace) -> int:
    import sys

    from ..cli import UsageError
    from ..launch import measure_backends as backends
    from ..launch.profiles import ProfileError

    _check_arguments(args)
    study, task, task_file = _plan(args)
    rows = ", ".join(target.row for target in task.targets)
    print(f"measuring {len(task.targets)} row(s) on {task.device}, {task.rounds} round(s): {rows}")
    if task.unmeasured:
        print(f"not measured (no finished cell): {', '.join(task.unmeasured)}", file=sys.stderr)
    resources = backends.job_resources(study.resources, task.device)
    work_dir = Path(task.record_path).parent / "_jobs"
    if args.backend == "local":
        outcome = backends.run_local(task_file)
    elif args.backend == "slurm":
        try:
            profile = args.slurm_profile or study.backend.slurm_profile
            outcome = backends.run_slurm(task, resources, profile, work_dir)
        except ProfileError as error:
            raise UsageError(f"--slurm-profile: {error}") from None
    else:
        outcome = backends.run_ray(task, resources, args.ray_address or study.backend.ray_address)
    if outcome.device_error is not None:
        if outcome.device_error:
            print(f"d2bench measure: error: {outcome.device_error}", file=sys.stderr)
        return 2
    if not outcome.ok:
        print(f"d2bench measure: the measurement failed ({outcome.detail})", file=sys.stderr)
        return 1
    _print_record(Path(task.record_path))
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    measure = commands.add_parser(
        "measure",
        help="FPS and memory of every finished row on one device (Table 1's FPS/Mem columns)",
    )
    measure.add_argument("study", help=STUDY_HELP)
    measure.add_argument(
        "--device",
        default="auto",
        help=f"the one device every row is measured on: {DEVICE_CHOICES} (default: auto, the "
        "first GPU if any, else the CPU)",
    )
    measure.add_argument(
        "--rounds", type=int, default=3,
        help="times every row is measured, interleaved (default: %(default)s)",
    )  # fmt: skip
    measure.add_argument("--backend", choices=("local", "slurm", "ray"), default="local",
                         help="where the measuring process runs (default: here)")  # fmt: skip
    measure.add_argument("--slurm-profile", help="cluster profile (default: the study's)")
    measure.add_argument("--ray-address", help="an existing Ray cluster (default: the study's)")
    measure.add_argument("--runs-dir", help="where the cell folders are (default: the study's)")
    measure.add_argument(
        "--tracking-uri",
        help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite under ./mlruns)",
    )
    measure.set_defaults(handler=_measure)
