"""From a study to finished cells: plan, create the runs, hand the tasks to a backend, summarise.

This is ``d2bench run``: validate (done by :func:`d2bench.study.load_study`), plan against the
tracker, mark stale attempts KILLED, create one RUNNING child run per scheduled cell (so that
a second launch sees them as running, even while they wait in a SLURM queue), run, summarise.
"""

from __future__ import annotations

import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.elapsed import elapsed_text, format_duration
from ..core.provenance import git_revision
from ..study.cells import Cell, expand_cells, varying_keys
from ..study.planner import CellRecord, CellState, Plan, PlannedCell, make_plan
from ..study.spec import Study
from ..tracking import Tracker
from ..tracking.tracker import study_description
from .base import Backend, LaunchContext
from .job_end import explain_stale
from .liveness import make_liveness, orphaned_workers
from .task import CellTask

Printer = Callable[[str], None]


@dataclass
class LaunchSummary:
    scheduled: int = 0
    outcomes: dict[str, str] = field(default_factory=dict)
    plan: Plan | None = None

    @property
    def failed(self) -> list[str]:
        return [key for key, outcome in self.outcomes.items() if outcome == "FAILED"]

    @property
    def exit_code(self) -> int:
        if self.failed:
            return 1
        if any(outcome == "KILLED" for outcome in self.outcomes.values()):
            return 130
        return 0


def plan_study(study: Study, tracker: Tracker) -> tuple[list[Cell], list[CellRecord], Plan]:
    cells = expand_cells(study)
    records = tracker.cell_records(study.name)
    return cells, records, make_plan(cells, records, make_liveness(records))


def format_plan(plan: Plan) -> str:
    lines = [f"{'row':<28} {'seed':>4}  {'key':<16}  state"]
    for item in plan.cells:
        cell = item.cell
        lines.append(f"{cell.row:<28} {cell.seed:>4}  {cell.key:<16}  {item.state.value}")
    counts = plan.counts()
    order = [state.value for state in CellState]
    lines.append(", ".join(f"{counts[name]} {name}" for name in order if counts.get(name)))
    return "\n".join(lines)


#: Version of the ``plan --json`` / ``status --json`` document; bumped when a key changes meaning.
PLAN_JSON_VERSION = 1


def plan_document(study: Study, plan: Plan) -> dict[str, Any]:
    """The plan as ``d2bench plan --json`` prints it: stable keys, one entry per cell.

    ``{"format": 1, "study": NAME, "counts": {STATE: N}, "cells": [{"row", "seed", "key",
    "label", "state", "run_id"}]}``; states are done, running, failed, missing, stale.
    """
    counts = plan.counts()
    return {
        "format": PLAN_JSON_VERSION,
        "study": study.name,
        "counts": {state.value: counts.get(state.value, 0) for state in CellState},
        "cells": [
            {
                "row": item.cell.row,
                "seed": item.cell.seed,
                "key": item.cell.key,
                "label": item.cell.label,
                "state": item.state.value,
                "run_id": item.run_id,
            }
            for item in plan.cells
        ],
    }


def skipped_failed_count(plan: Plan, chosen: list[PlannedCell]) -> int:
    """Failed cells this launch leaves alone (they rerun only with ``--retry-failed``)."""
    chosen_keys = {item.cell.key for item in chosen}
    return sum(item.cell.key not in chosen_keys for item in plan.with_state(CellState.FAILED))


def retry_hint(skipped_failed: int) -> str:
    """A suffix for the scheduling line: which failed cells wait for ``--retry-failed``."""
    if not skipped_failed:
        return ""
    return f"; skipping {skipped_failed} failed cell(s) (rerun them with --retry-failed)"


def nothing_to_do_line(plan: Plan, skipped_failed: int) -> str:
    """Why nothing is scheduled, counting what is done, running and failed: a plain re-run
    after a failure must not read as if every cell were fine."""
    counts = plan.counts()
    shown = (CellState.DONE, CellState.RUNNING, CellState.FAILED)
    parts = ", ".join(f"{counts[state.value]} {state.value}" for state in shown
                      if counts.get(state.value))  # fmt: skip
    line = f"nothing to do: {parts or 'the study has no cells'}"
    if skipped_failed:
        line += " (rerun failed cells with --retry-failed)"
    return line


def wait_for_orphans(
    study: Study, tracker: Tracker, records: list[CellRecord], timeout: float, echo: Printer
) -> None:
    """Let workers of a killed driver finish stopping before re-planning (no duplicates)."""
    orphans = orphaned_workers(records)
    if not orphans:
        return
    echo(f"waiting for {len(orphans)} worker(s) of a previous driver to stop ...")
    deadline = time.monotonic() + timeout
    while orphans and time.monotonic() < deadline:
        time.sleep(1.0)
        orphans = orphaned_workers(tracker.cell_records(study.name))


def prepare_data(study: Study, echo: Printer) -> None:
    """Generate the synthetic data set a study asks for, once (a no-op when it is there)."""
    spec = study.spec.synth_spec()
    if spec is None:
        return
    from ..data import ensure_synthetic_davis

    for root in study.data_roots():
        if not Path(root).is_dir():
            echo(f"generating synthetic DAVIS-format data under {root} ...")
        ensure_synthetic_davis(root, spec)


@contextmanager
def _scheduling_lock(runs_dir: Path, study: str, enabled: bool = True) -> Iterator[None]:
    """An exclusive advisory lock per study under the runs folder (waits for the holder)."""
    if not enabled:
        yield
        return
    import fcntl

    lock_path = runs_dir / "_backend" / f"{study}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def launch_study(
    study: Study,
    backend: Backend,
    tracker: Tracker,
    *,
    runs_dir: Path | None = None,
    retry_failed: bool = False,
    force_rows: Iterable[str] = (),
    dry_run: bool = False,
    echo: Printer = print,
    orphan_timeout: float = 180.0,
) -> LaunchSummary:
    runs_dir = (runs_dir or study.runs_dir).resolve()
    force_rows = list(force_rows)
    unknown = [row for row in force_rows if row not in study.rows]
    if unknown:
        raise ValueError(f"--force: no row {unknown[0]!r}; rows: {', '.join(study.rows)}")
    with _scheduling_lock(runs_dir, study.name, enabled=not dry_run):
        # Planning and creating the new attempts' runs happen under one lock, so that two
        # drivers started at once on the same study never schedule the same cell twice: the
        # second one plans after the first one's runs exist (and are seen as running).
        _, records, plan = plan_study(study, tracker)
        if not dry_run and orphaned_workers(records):
            wait_for_orphans(study, tracker, records, orphan_timeout, echo)
            _, records, plan = plan_study(study, tracker)
        chosen = plan.to_schedule(retry_failed=retry_failed, force_rows=force_rows)
        summary = LaunchSummary(scheduled=len(chosen), plan=plan)
        echo(format_plan(plan))
        skipped_failed = skipped_failed_count(plan, chosen)
        if dry_run:
            would = f"dry run: would schedule {len(chosen)} cell(s) on {backend.name}"
            echo(would + retry_hint(skipped_failed))
            return summary
        if not chosen:
            echo(nothing_to_do_line(plan, skipped_failed))
            return summary

        prepare_data(study, echo)
        environment = launch_environment()
        description = study_description(
            study.name, study.spec.description, str(study.path) if study.path else None
        )
        parent = tracker.ensure_study_run(
            study.name, study.text, backend.name, environment, description
        )
        varying = varying_keys(item.cell for item in plan.cells)
        tasks = [_new_attempt(study, item, backend.name, tracker, parent, runs_dir, environment,
                              force=item.cell.row in force_rows, varying=varying)
                 for item in chosen]  # fmt: skip
    context = LaunchContext(
        study.name, study.resources, runs_dir / "_backend" / study.name,
        study.backend.max_concurrent,
    )  # fmt: skip
    echo(f"scheduling {len(tasks)} cell(s) on {backend.name}" + retry_hint(skipped_failed))
    labels = {item.cell.key: item.cell.label for item in chosen}

    reported: list[str] = []
    started = time.monotonic()

    def report(task: CellTask, outcome: str) -> None:
        reported.append(task.key)
        done = f"[{len(reported)}/{len(tasks)}]"
        timing = elapsed_text(time.monotonic() - started, len(reported), len(tasks))
        echo(f"  {done} {labels.get(task.key, task.row)}: {outcome} ({timing})")

    try:
        summary.outcomes = dict(backend.run(tasks, context, report))
    except KeyboardInterrupt:
        echo("interrupted: the running cell was stopped at a checkpoint; run again to resume")
        summary.outcomes = {task.key: "KILLED" for task in tasks}
        raise
    finally:
        _finish_parent(study, tracker, parent)
    echo(f"{_summary_line(summary)} in {format_duration(time.monotonic() - started)}")
    return summary


def _new_attempt(
    study: Study,
    item: PlannedCell,
    backend: str,
    tracker: Tracker,
    parent: str,
    runs_dir: Path,
    environment: dict,
    force: bool,
    varying: set[str] | None = None,
) -> CellTask:
    cell = item.cell
    if item.state == CellState.STALE and item.record is not None:
        why = explain_stale(tracker, item.record) or "its driver or job is gone"
        tracker.terminate(item.record.run_id, "KILLED", f"stale: {why}")
    cell_dir = cell.cell_dir(runs_dir)
    if force and item.state == CellState.DONE and cell_dir.exists():
        shutil.rmtree(cell_dir)  # --force: recompute, do not return the old result
    run_id = tracker.create_cell_run(
        study.name, parent, cell, backend, cell_dir, environment["git"], varying
    )
    return CellTask(
        study=study.name,
        row=cell.row,
        seed=cell.seed,
        key=cell.key,
        config=_with_absolute_data_root(cell.config.model_dump(mode="json")),
        cell_dir=str(cell_dir),
        tracking_uri=tracker.uri,
        run_id=run_id,
        backend=backend,
    )


def _with_absolute_data_root(config: dict[str, Any]) -> dict[str, Any]:
    """Workers may run elsewhere (Ray changes into trial folders): resolve a relative data root
    against the driver's working directory. The cell key holds no path (a digest of the data)."""
    root = Path(config["data"]["root"]).expanduser()
    return {**config, "data": {**config["data"], "root": str(root.resolve())}}


def _finish_parent(study: Study, tracker: Tracker, parent: str) -> None:
    _, _, plan = plan_study(study, tracker)
    counts = plan.counts()
    if counts.get("running"):
        return
    status = "FAILED" if counts.get("failed") else "FINISHED"
    if counts.get("missing") or counts.get("stale"):
        status = "KILLED"
    tracker.end_study_run(parent, status)


def _summary_line(summary: LaunchSummary) -> str:
    counts: dict[str, int] = {}
    for outcome in summary.outcomes.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    parts = ", ".join(f"{n} {name.lower()}" for name, n in sorted(counts.items()))
    return f"summary: {parts or 'nothing ran'}"


def launch_environment() -> dict:
    """Torch-free facts about the launch (the cells record their own GPU environment)."""
    import platform

    from .. import __version__
    from ..core.versions import package_versions

    return {
        "git": git_revision(),
        "packages": package_versions(),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "d2bench": __version__,
        "argv": sys.argv,
    }
