"""``d2bench run | plan | status | ui``: launch a study, see what is left, watch it in MLflow.

Everything here imports only the torch-free study, launch and tracking packages, so that
``plan`` and ``status`` start fast and run on a login node without a GPU stack.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def _load(path: str) -> Any:
    from ..cli import UsageError
    from ..study import StudyError, expand_cells, load_study

    try:
        study = load_study(path)
        expand_cells(study)  # the keys digest the data and weights: a missing one stops us here
    except StudyError as error:
        raise UsageError(str(error)) from None
    return study


def _tracker(args: argparse.Namespace) -> Any:
    from ..tracking import Tracker

    return Tracker(args.tracking_uri)


def _checked_launch(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """The study, its backend and runs folder, after every check ``run`` makes (none writes).

    ``--dry-run`` goes through this too, so that it refuses exactly what a real run refuses.
    """
    from pathlib import Path

    from ..cli import UsageError
    from ..launch import make_backend
    from ..launch.preflight import (
        PreflightError,
        check_backend_flags,
        check_creatable_folder,
        check_data_folders,
    )
    from ..launch.profiles import ProfileNotFound

    study = _load(args.study)
    backend_name = args.backend or study.backend.name
    unknown = [row for row in args.force if row not in study.rows]
    if unknown:
        raise UsageError(f"--force: no row {unknown[0]!r}; rows: {', '.join(study.rows)}")
    runs_dir = Path(args.runs_dir) if args.runs_dir is not None else study.runs_dir
    runs_key = "--runs-dir" if args.runs_dir is not None else f"{args.study}: runs_dir"
    try:
        if args.runs_dir is not None and not args.runs_dir.strip():
            raise PreflightError("--runs-dir: is empty; give the folder cell results go to")
        check_backend_flags(
            backend_name,
            ray_address=args.ray_address,
            slurm_profile=args.slurm_profile,
            detach=args.detach,
        )
        check_data_folders(study)
        check_creatable_folder(runs_dir, runs_key)
        backend = make_backend(
            backend_name,
            ray_address=args.ray_address or study.backend.ray_address,
            max_failures=study.backend.max_failures,
            slurm_profile=args.slurm_profile or study.backend.slurm_profile,
            detach=args.detach,
        )
    except ProfileNotFound as error:
        key = "--slurm-profile" if args.slurm_profile else f"{args.study}: backend.slurm_profile"
        raise UsageError(f"{key}: {error}") from None
    except ValueError as error:  # PreflightError, StudyError, a malformed profile
        raise UsageError(str(error)) from None
    _preflight(backend, study, runs_dir, args.tracking_uri)
    return study, backend, runs_dir


def _run(args: argparse.Namespace) -> int:
    from ..launch import launch_study

    study, backend, runs_dir = _checked_launch(args)
    summary = launch_study(
        study,
        backend,
        _tracker(args),
        runs_dir=runs_dir,
        retry_failed=args.retry_failed,
        force_rows=args.force,
        dry_run=args.dry_run,
    )
    if summary.failed:
        print(
            f"{len(summary.failed)} cell(s) failed; see their traceback.txt in MLflow, "
            "then `d2bench run --retry-failed`",
            file=sys.stderr,
        )
    return summary.exit_code


def _preflight(backend: Any, study: Any, runs_dir: Path, tracking_uri: str | None) -> None:
    """The backend's own checks (a Ray cluster's reach), before the store or any run exists."""
    from ..cli import UsageError
    from ..launch.base import CheckedBackend
    from ..launch.preflight import PreflightError
    from ..tracking import resolve_tracking_uri

    if not isinstance(backend, CheckedBackend):
        return
    try:
        warnings = backend.preflight(study.resources, runs_dir, resolve_tracking_uri(tracking_uri))
    except PreflightError as error:
        raise UsageError(str(error)) from None
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)


def _plan(args: argparse.Namespace) -> int:
    from ..launch import format_plan, plan_study

    study = _load(args.study)
    _, _, plan = plan_study(study, _tracker(args))
    print(format_plan(plan))
    return 0


def _status(args: argparse.Namespace) -> int:
    """The plan, plus the SLURM state of the study's queued jobs; ``--wait`` reattaches."""
    import time

    from ..launch import format_plan, plan_study
    from ..launch.job_end import explain_stale
    from ..launch.liveness import slurm_job_states
    from ..study import CellState
    from ..tracking.tracker import TAG_JOB

    study = _load(args.study)
    tracker = _tracker(args)
    while True:
        _, _, plan = plan_study(study, tracker)
        running = plan.with_state(CellState.RUNNING)
        jobs = {item.record.tag(TAG_JOB): item for item in running if item.record}
        jobs.pop("", None)
        print(format_plan(plan))
        slurm_jobs = [job for job in jobs if not job.startswith("ray:")]
        states = slurm_job_states(slurm_jobs) if slurm_jobs else {}
        for job in slurm_jobs:
            state = (states or {}).get(job, "unknown")
            print(f"  job {job}: {state} ({jobs[job].cell.label})")
        for item in plan.with_state(CellState.STALE):
            why = explain_stale(tracker, item.record) if item.record else None
            if why:
                print(f"  {item.cell.label}: {why}")
        if not args.wait or not running:
            break
        time.sleep(args.poll)
    counts = plan.counts()
    return 1 if counts.get("failed") else 0


def _ui(args: argparse.Namespace) -> int:
    """Start ``mlflow ui`` on the study store and print its address."""
    import os
    import shutil
    from pathlib import Path

    from ..cli import UsageError
    from ..tracking import open_store, resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri)
    if uri.startswith(("http://", "https://")):
        print(f"MLflow tracking server: {uri}")
        _print_study_pages(uri, uri)
        return 0
    mlflow = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    if not Path(mlflow).exists():
        raise UsageError("the mlflow command is not installed")
    open_store(uri)  # the server opens it too: created or upgraded once, never by two at a time
    command = [mlflow, "ui", "--backend-store-uri", uri, "--host", args.host, "--port",
               str(args.port)]  # fmt: skip
    print(f"MLflow UI on http://{args.host}:{args.port} (store {uri}); Ctrl-C stops it")
    _print_study_pages(uri, f"http://{args.host}:{args.port}")
    sys.stdout.flush()
    os.execv(command[0], command)  # become the server: signals reach it directly
    return 0


def _print_study_pages(uri: str, ui_url: str) -> None:
    """Each study's runs page (as model training, not MLflow 3's GenAI overview)."""
    from ..tracking import Tracker
    from ..tracking.tracker import experiment_page

    for name, experiment_id in Tracker(uri).studies():
        print(f"  {name}: {experiment_page(ui_url, experiment_id)}")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tracking-uri",
        help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite under ./mlruns)",
    )


def register(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser("run", help="run the missing cells of a study")
    run.add_argument("study", help="study file (e.g. studies/smoke.yaml)")
    run.add_argument("--backend", choices=("local", "ray", "slurm"), help="default: the study's")
    run.add_argument("--dry-run", action="store_true", help="show the plan, schedule nothing")
    run.add_argument("--retry-failed", action="store_true", help="also rerun failed cells")
    run.add_argument(
        "--force", action="append", default=[], metavar="ROW", help="rerun ROW even if done"
    )
    run.add_argument("--ray-address", help="an existing Ray cluster (default: start a local one)")
    run.add_argument("--slurm-profile", help="cluster profile: slurm/<name>.yaml or a path")
    run.add_argument("--detach", action="store_true", help="slurm: return after submission")
    run.add_argument("--runs-dir", help="where cell folders go (default: the study's, runs/)")
    _common(run)
    run.set_defaults(handler=_run)

    plan = commands.add_parser("plan", help="show each cell as done/running/failed/missing")
    plan.add_argument("study")
    _common(plan)
    plan.set_defaults(handler=_plan)

    status = commands.add_parser("status", help="the plan plus queued SLURM jobs; --wait")
    status.add_argument("study")
    status.add_argument("--wait", action="store_true", help="poll until no cell is running")
    status.add_argument("--poll", type=float, default=30.0, help="seconds between polls")
    _common(status)
    status.set_defaults(handler=_status)

    ui = commands.add_parser("ui", help="start the MLflow UI on the study store")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    _common(ui)
    ui.set_defaults(handler=_ui)


def _bench_plan(args: argparse.Namespace) -> int:
    """Time ``d2bench plan`` on a study of N cells against a store holding N finished runs."""
    import subprocess
    import tempfile
    import time
    from pathlib import Path

    import yaml

    from ..study import expand_cells, load_study
    from ..tracking import Tracker

    folder = Path(args.dir or tempfile.mkdtemp(prefix="d2bench-bench-plan-"))
    folder.mkdir(parents=True, exist_ok=True)
    seeds = 10
    rows = [
        {"name": f"r{i:04d}", "train": {"lr": 1e-5 * (1 + i)}} for i in range(args.cells // seeds)
    ]
    spec = {"name": "bench-plan", "base": {"data": {"root": "data"}}, "rows": rows,
            "seeds": list(range(seeds)), "synthetic_data": True}  # fmt: skip
    path = folder / "bench-plan.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    uri = f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"
    tracker = Tracker(uri)
    study = load_study(path)
    cells = expand_cells(study)
    if not tracker.cell_records(study.name):
        print(f"filling {uri} with {len(cells)} finished runs ...", flush=True)
        parent = tracker.ensure_study_run(study.name, study.text, "local", {"git": "bench"})
        for cell in cells:
            run_id = tracker.create_cell_run(study.name, parent, cell, "local", folder, "bench")
            tracker.cell_logger(run_id).finished({"metrics": {"jf_mean": 0.5}}, folder)
    command = [sys.executable, "-m", "d2bench.cli", "plan", str(path), "--tracking-uri", uri]
    timings = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        timings.append(time.perf_counter() - started)
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return 1
    summary = done.stdout.strip().splitlines()[-1]
    print(f"d2bench plan, {len(cells)} cells vs {len(cells)} finished runs: {summary}")
    print("wall time per run (s): " + ", ".join(f"{t:.2f}" for t in timings))
    print(f"best {min(timings):.2f} s; store kept in {folder}")
    return 0


def register_bench(bench: argparse._SubParsersAction) -> None:
    plan = bench.add_parser("plan", help="time `d2bench plan` on a large study and store")
    plan.add_argument("--cells", type=int, default=1000, help="cells (and finished runs)")
    plan.add_argument("--repeat", type=int, default=3)
    plan.add_argument("--dir", help="work folder (reused when it holds a filled store)")
    plan.set_defaults(handler=_bench_plan)
