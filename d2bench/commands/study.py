"""``d2bench run | plan | status | ui``: launch a study, see what is left, watch it in MLflow.

Everything here imports only the torch-free study, launch and tracking packages, so that
``plan`` and ``status`` start fast and run on a login node without a GPU stack.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def load_checked_study(path: str) -> Any:
    """The study at ``path``, expanded once so that a bad spec or a missing data set or weight
    file stops the command with a usage error (exit 2) before it does anything."""
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

    study = load_checked_study(args.study)
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

    _system_metrics_setting(args.system_metrics)
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


def _system_metrics_setting(seconds: float | None) -> None:
    """``--system-metrics`` becomes the workers' ``D2BENCH_SYSTEM_METRICS`` (the backends pass
    ``D2BENCH_*`` on); a bad value set by hand fails here, before anything is scheduled."""
    import os

    from ..cli import UsageError
    from ..tracking.system_metrics import ENV, sampling_interval

    if seconds is not None:
        if not seconds > 0:
            raise UsageError(f"--system-metrics {seconds:g}: the interval must be > 0 seconds")
        os.environ[ENV] = f"{seconds:g}"
    try:
        sampling_interval()
    except ValueError as error:
        raise UsageError(str(error)) from None


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
    from ..launch import format_plan, plan_document, plan_study

    study = load_checked_study(args.study)
    _, _, plan = plan_study(study, _tracker(args))
    print(json.dumps(plan_document(study, plan)) if args.json else format_plan(plan))
    return 0


def _status(args: argparse.Namespace) -> int:
    """The plan, plus the SLURM state of the study's queued jobs; ``--wait`` reattaches."""
    import time

    from ..launch import format_plan, plan_document, plan_study
    from ..launch.job_end import explain_stale
    from ..launch.liveness import slurm_job_states
    from ..study import CellState
    from ..tracking.tracker import TAG_JOB, TAG_WORKER

    study = load_checked_study(args.study)
    tracker = _tracker(args)
    while True:
        _, _, plan = plan_study(study, tracker)
        running = plan.with_state(CellState.RUNNING)
        jobs = {item.record.tag(TAG_JOB): item for item in running if item.record}
        jobs.pop("", None)
        slurm_jobs = [job for job in jobs if not job.startswith("ray:")]
        states = (slurm_job_states(slurm_jobs) or {}) if slurm_jobs else {}
        job_states = {jobs[job].cell.key: states.get(job, "unknown") for job in slurm_jobs}
        stale = {item.cell.key: explain_stale(tracker, item.record)
                 for item in plan.with_state(CellState.STALE) if item.record}  # fmt: skip
        if args.json:
            document = plan_document(study, plan)
            for entry, item in zip(document["cells"], plan.cells, strict=True):
                entry["job"] = (item.record.tag(TAG_JOB) or None) if item.record else None
                entry["job_state"] = job_states.get(item.cell.key)
                entry["stale_reason"] = stale.get(item.cell.key)
                entry["worker"] = (item.record.tag(TAG_WORKER) or None) if item.record else None
            print(json.dumps(document))
        else:
            print(format_plan(plan))
            for job in slurm_jobs:
                print(f"  job {job}: {job_states[jobs[job].cell.key]} ({jobs[job].cell.label})")
            for item in plan.with_state(CellState.STALE):
                if stale.get(item.cell.key):
                    print(f"  {item.cell.label}: {stale[item.cell.key]}")
        if not args.wait or not running:
            break
        time.sleep(args.poll)
    counts = plan.counts()
    return 1 if counts.get("failed") else 0


#: MLflow's switch for the server's job runner (read by ``mlflow ui`` and ``mlflow server``).
MLFLOW_JOB_EXECUTION = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"


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
    # MLflow 3's server also starts a job runner (GenAI jobs: a handful of huey consumers that
    # outlive a stopped UI and keep cores busy); a study browser needs none of it.
    os.environ.setdefault(MLFLOW_JOB_EXECUTION, "false")
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
        metavar="URI",
        help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite under ./mlruns)",
    )


#: The study argument of run, plan, status, measure and report.
STUDY_HELP = (
    "study file (e.g. studies/smoke.yaml), or a packaged study's name (smoke, table1, table2, "
    "node-sweep, node-sweep-ddp)"
)


def _study_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", help=STUDY_HELP)


#: What ``--json`` prints, for the help text (the keys are kept stable; ``format`` says which).
JSON_HELP = (
    "print one JSON object instead of the table: format (1), study, counts (cells per state) "
    "and cells, each with row, seed, key, label, state (done, running, failed, missing, stale) "
    "and run_id"
)


def register(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser("run", help="run the missing cells of a study")
    _study_argument(run)
    run.add_argument("--backend", choices=("local", "ray", "slurm"),
                     help="where cells run (default: the study's backend.name)")  # fmt: skip
    run.add_argument("--dry-run", action="store_true",
                     help="make every check of a run and show the plan; schedule and write "
                     "nothing")  # fmt: skip
    run.add_argument("--retry-failed", action="store_true", help="also rerun failed cells")
    run.add_argument(
        "--force", action="append", default=[], metavar="ROW",
        help="rerun ROW even if done (repeatable)",
    )  # fmt: skip
    run.add_argument("--ray-address", metavar="ADDRESS",
                     help="an existing Ray cluster (default: start a local one)")  # fmt: skip
    run.add_argument("--slurm-profile", metavar="PROFILE",
                     help="cluster profile: slurm/<name>.yaml or a path")  # fmt: skip
    run.add_argument("--detach", action="store_true", help="slurm: return after submission")
    run.add_argument(
        "--runs-dir", metavar="DIR", help="where cell folders go (default: the study's runs_dir)"
    )
    run.add_argument(
        "--system-metrics",
        type=float,
        nargs="?",
        const=10.0,
        default=None,
        metavar="SECONDS",
        help="log CPU/memory/GPU use to each cell's run while it trains (never while FPS is "
        "timed), sampled every SECONDS (default when given: 10; off by default)",
    )
    _common(run)
    run.set_defaults(handler=_run)

    plan = commands.add_parser("plan", help="show each cell as done/running/failed/missing")
    _study_argument(plan)
    plan.add_argument("--json", action="store_true", help=JSON_HELP)
    _common(plan)
    plan.set_defaults(handler=_plan)

    status = commands.add_parser("status", help="the plan plus queued SLURM jobs; --wait")
    _study_argument(status)
    status.add_argument("--wait", action="store_true", help="poll until no cell is running")
    status.add_argument("--poll", type=float, default=30.0, metavar="SECONDS",
                        help="seconds between polls of --wait (default: %(default)s)")  # fmt: skip
    status.add_argument(
        "--json", action="store_true",
        help=JSON_HELP + "; per cell also job (its SLURM or Ray job id), job_state (SLURM's "
        "state of a running cell's job), stale_reason and worker (host:pid of the process "
        "that runs or ran it). With --wait, one object per poll, one per line",
    )  # fmt: skip
    _common(status)
    status.set_defaults(handler=_status)

    ui = commands.add_parser("ui", help="start the MLflow UI on the study store")
    ui.add_argument("--host", default="127.0.0.1",
                    help="address the UI listens on (default: %(default)s)")  # fmt: skip
    ui.add_argument("--port", type=int, default=5000,
                    help="port the UI listens on (default: %(default)s)")  # fmt: skip
    _common(ui)
    ui.set_defaults(handler=_ui)
