"""The Ray backend: every cell a Ray Tune trial, on a local instance or an existing cluster.

Concurrency follows from the per-cell resources (CPUs, GPUs and memory, reserved through
``tune.with_resources``) and the cluster's size. Before anything is scheduled,
:meth:`RayBackend.preflight` checks that the cluster can run the cells at all (see
:mod:`.ray_cluster`). A trial whose worker dies (node lost, OOM kill) is retried by Tune up to
``max_failures`` times, and the retry resumes from the cell's own checkpoint on disk. An
exception inside a cell is *not* retried: it is recorded as a FAILED run and the trial ends
normally.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..study.spec import Resources
from .base import LaunchContext, OnOutcome
from .task import CellTask, Outcome

STATUS_METRIC = "d2bench_status"
#: Settings of this driver that mean nothing on another host (the local backend's parent check).
DRIVER_ONLY_ENV = frozenset({"D2BENCH_DRIVER_PID"})


def forwarded_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The driver's ``D2BENCH_*`` settings (checkpoint interval, ...) for the cells' workers:
    Ray starts workers from the raylet's environment, not the driver's, so without this a
    setting made where ``d2bench run`` is typed would silently not apply on the cluster (sbatch
    exports it to SLURM jobs)."""
    environ = dict(os.environ if environ is None else environ)
    return {
        name: value
        for name, value in environ.items()
        if name.startswith("D2BENCH_") and name not in DRIVER_ONLY_ENV
    }


#: Ray and Tune settings for a quiet driver (each one only where the user has not set it): every
#: line of a cell as it comes, in its order, and no Tune banner or TensorBoard hint (the cells
#: report to MLflow; Tune's own result files stay, its experiment analysis reads them).
QUIET_RAY_ENV = {
    "RAY_DEDUP_LOGS": "0",  # dedup holds back lines repeated across cells: one cell's reorder
    "RAY_AIR_NEW_OUTPUT": "0",  # the classic reporter prints nothing at verbose=0
    # Ray's distributed tqdm replaces builtins.print once a worker's log reaches the driver;
    # Tune then fails to pickle its callbacks, whose progress lines hold the original print.
    "RAY_TQDM_PATCH_PRINT": "0",
}
#: Ray's notice that a new local instance uses token authentication (it does; nothing to do).
_TOKEN_NOTICE = "Token authentication is enabled for this Ray cluster"


def quiet_ray_environment(
    environ: dict[str, str] | None = None, *, tty: bool | None = None
) -> None:
    """Set :data:`QUIET_RAY_ENV` (and no colour codes when the output is not a terminal) in
    ``environ`` (default ``os.environ``), before ray is imported: Ray reads some at import."""
    environ = os.environ if environ is None else environ
    if tty is None:
        tty = all(stream.isatty() for stream in (sys.stdout, sys.stderr))
    for name, value in QUIET_RAY_ENV.items():
        environ.setdefault(name, value)
    if not tty or "NO_COLOR" in environ:
        environ.setdefault("RAY_COLOR_PREFIX", "0")


class _DropTokenNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(_TOKEN_NOTICE)


def init_ray(address: str | None) -> None:
    """``ray.init`` as d2bench's drivers call it: join ``address`` (None: start a local
    instance), workers' output forwarded without Ray's noise, ``D2BENCH_*`` settings forwarded."""
    quiet_ray_environment()
    import ray

    notices = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if not any(isinstance(f, _DropTokenNotice) for f in notices.filters):
        notices.addFilter(_DropTokenNotice())
    ray.init(
        address=address,
        include_dashboard=False,
        ignore_reinit_error=True,
        log_to_driver=True,
        logging_level="WARNING",
        runtime_env={"env_vars": forwarded_environment()},
    )


def quiet_exit_in_finalizers() -> None:
    """In a trial's worker: drop a ``SystemExit`` raised inside a finalizer, print the rest.

    Tune ends a finished trial's actor with SIGTERM (to free its resources for the next cell);
    Ray's handler then raises ``SystemExit`` in whatever Python runs, and when that is a
    finalizer (a weak-reference callback), Python prints it as an "Exception ignored" traceback
    under the cell's lines: a normal exit, not an error. Installed once per process.
    """
    hook = sys.unraisablehook
    if getattr(hook, "_d2bench", False):
        return

    def unraisable(info: Any) -> None:
        if not isinstance(info.exc_value, SystemExit):
            hook(info)

    unraisable._d2bench = True  # type: ignore[attr-defined]
    sys.unraisablehook = unraisable


def _trial(config: dict[str, Any]) -> None:
    """The Tune trainable: one cell attempt, its outcome reported as the trial's last result."""
    from ray import tune

    from .task import CellTask, execute_cell

    quiet_exit_in_finalizers()

    task = CellTask.from_dict(config["task"])
    context = tune.get_context()
    job_id = f"ray:{context.get_trial_id()}" if context is not None else None
    outcome = execute_cell(task, handle_signals=False, job_id=job_id)
    tune.report({STATUS_METRIC: outcome, "cell_key": task.key})


def _progress_callback(tasks: Sequence[CellTask], on_outcome: OnOutcome, reported: set[str]):
    """A Tune callback that reports each cell's outcome as its trial reports it (in the driver),
    so progress shows while the study runs, not only when every trial has ended."""
    from ray.tune import Callback

    by_key = {task.key: task for task in tasks}

    class _Progress(Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
            key, outcome = result.get("cell_key"), result.get(STATUS_METRIC)
            if key in by_key and outcome is not None and key not in reported:
                reported.add(key)
                on_outcome(by_key[key], outcome)

    return _Progress()


class RayBackend:
    name = "ray"

    def __init__(self, address: str | None = None, max_failures: int = 2) -> None:
        self.address = address
        self.max_failures = max_failures
        self._connected_here = False

    def _connect(self) -> None:
        """Join the cluster at ``address`` (or start a local instance), once per backend."""
        quiet_ray_environment()  # before ray's first import: it reads some settings then
        import ray

        if ray.is_initialized():
            return
        init_ray(self.address)
        self._connected_here = True

    def _disconnect(self) -> None:
        if self._connected_here:
            import ray

            ray.shutdown()
            self._connected_here = False

    def preflight(self, resources: Resources, runs_dir: Path, tracking_uri: str) -> list[str]:
        """With an address: connect, and check that the cluster can run cells of ``resources``
        that report to ``tracking_uri`` and write under ``runs_dir``; :class:`ClusterError` if
        not, else the warnings to show. The connection stays open for :meth:`run`."""
        import socket

        from .ray_cluster import ClusterError, check_cluster

        if self.address is None:
            return []  # a local instance: one node, this host, which sees what the driver sees
        try:
            self._connect()
        except Exception as error:  # ConnectionError, an authentication error, a bad address
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ClusterError(
                f"--ray-address {self.address}: cannot connect ({first_line[:300]}); if the "
                "cluster requires a token, set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN or "
                "RAY_AUTH_TOKEN_PATH here"
            ) from None
        try:
            return check_cluster(resources, runs_dir, tracking_uri, socket.gethostname())
        except ClusterError:
            self._disconnect()
            raise

    def run(
        self, tasks: Sequence[CellTask], context: LaunchContext, on_outcome: OnOutcome
    ) -> dict[str, Outcome | str]:
        quiet_ray_environment()
        from ray import tune

        from .ray_cluster import alive_nodes, cell_request, fit_to_local_node

        if not tasks:
            return {}
        self._connect()
        request = cell_request(context.resources)
        if self.address is None:
            request, warnings = fit_to_local_node(request, alive_nodes())
            for warning in warnings:
                print(f"warning: {warning}", file=sys.stderr)
        trainable = tune.with_resources(_trial, tune.PlacementGroupFactory([request]))
        reported: set[str] = set()
        storage = context.work_dir / "ray"
        storage.mkdir(parents=True, exist_ok=True)
        tuner = tune.Tuner(
            trainable,
            param_space={"task": tune.grid_search([task.to_dict() for task in tasks])},
            tune_config=tune.TuneConfig(
                max_concurrent_trials=context.max_concurrent, reuse_actors=False
            ),
            run_config=tune.RunConfig(
                name=f"{context.study}-{time.strftime('%Y%m%d-%H%M%S')}",
                storage_path=str(storage.resolve()),
                failure_config=tune.FailureConfig(max_failures=self.max_failures),
                callbacks=[_progress_callback(tasks, on_outcome, reported)],
                verbose=0,
            ),
        )
        try:
            results = tuner.fit()
        finally:
            self._disconnect()
        by_key = {task.key: task for task in tasks}
        outcomes: dict[str, Outcome | str] = {}
        for result in results:
            task = CellTask.from_dict(result.config["task"])
            outcome = (result.metrics or {}).get(STATUS_METRIC)
            if result.error is not None or outcome is None:
                outcome = "FAILED"
                _record_trial_error(task, result.error)
            outcomes[task.key] = outcome
            if task.key not in reported:
                on_outcome(by_key.get(task.key, task), outcome)
        return outcomes


def _record_trial_error(task: CellTask, error: BaseException | None) -> None:
    """A trial that died for good without recording (worker lost): mark its run FAILED."""
    from pathlib import Path

    from ..tracking import Tracker

    tracker = Tracker(task.tracking_uri)
    if tracker.client.get_run(tracker.current_run_id(task.run_id)).info.status == "RUNNING":
        text = f"Ray Tune trial failed after its retries: {error!r}\n"
        tracker.cell_logger(task.run_id).failed(text, Path(task.cell_dir))
