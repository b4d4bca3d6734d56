"""The MLflow adapter: the one place in d2bench that talks to MLflow.

Layout in MLflow: one experiment per study (named after it, tagged as a model-training
experiment so that MLflow 3 opens it on its runs, with the study's description), one parent run
per study (tag ``d2bench.kind = study``; it holds the spec, the launch environment and, written
by every ``d2bench report``, the rows' aggregates and the report's tables and figures), one child
run per cell attempt (tag ``d2bench.kind = cell``, named like a table row) with the study, row,
seed, cell key, backend, job id and git revision as tags, the settings that vary across the
study as params, the training curve, the final metrics (the report's fractions and, beside them,
the tables' units: :data:`DISPLAY_METRICS`) and the cell's files as artifacts. MLflow is
imported lazily so that importing this module stays cheap.
"""

from __future__ import annotations

import json
import math
import os
import random
import socket
import tempfile
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..core.contract import (
    BEST_VAL_JF_MEAN,
    CELL_ARTIFACTS,
    CONFIG_FILE,
    F_MEAN,
    FINAL_METRICS,
    FPS,
    J_MEAN,
    JF_MEAN,
    LOG_FILE,
    MEM_ALLOC_GB,
    PEAK_RSS_GB,
    PER_SEQUENCE_TABLE,
    TRAIN_SECONDS,
    VAL_F,
    VAL_J,
    VAL_JF,
)
from .store import open_store, sqlite_path, store_exists

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

    from ..study.cells import Cell
    from ..study.planner import CellRecord

T = TypeVar("T")

TAG_KIND = "d2bench.kind"
TAG_STUDY = "d2bench.study"
TAG_ROW = "d2bench.row"
TAG_SEED = "d2bench.seed"
TAG_KEY = "d2bench.cell_key"
TAG_TABLE = "d2bench.table"
TAG_VARIANT = "d2bench.variant"
TAG_ACTIVATION = "d2bench.activation"
TAG_BACKEND = "d2bench.backend"
TAG_JOB = "d2bench.job_id"
TAG_JOB_LOGS = "d2bench.job_logs"  # the folder of the SLURM job's submitit logs
TAG_GIT = "d2bench.git_revision"
TAG_CELL_DIR = "d2bench.cell_dir"
TAG_DRIVER = "d2bench.driver"  # host:pid of the process that scheduled the attempt
TAG_WORKER = "d2bench.worker"  # host:pid of the process running it
#: On a run created when its cell was scheduled: the run its worker continues in (the same
#: attempt, its start the cell's own; see :meth:`CellRunLogger.started`).
TAG_HANDED_TO = "d2bench.handed_to"
TAG_QUEUED = "d2bench.queued_seconds"  # how long the attempt waited between scheduling and start
TAG_ERROR = "d2bench.error"
TAG_STOP = "d2bench.stop"  # why the last attempt of a run that continues stopped (preemption)
TAG_JOB_END = "d2bench.job_end"  # how a job that died unobserved ended (SLURM accounting, logs)
#: The artifact holding the evidence behind :data:`TAG_JOB_END`.
JOB_END_ARTIFACT = "job_end.txt"
TAG_PARENT = "mlflow.parentRunId"
TAG_RUN_NAME = "mlflow.runName"
#: MLflow's own tags: a run's or an experiment's description (Markdown), the code's commit.
TAG_NOTE = "mlflow.note.content"
TAG_GIT_COMMIT = "mlflow.source.git.commit"
#: What MLflow 3 reads to choose an experiment's page: GenAI experiments open on traces,
#: ``custom_model_development`` (model training) on the runs table.
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"

#: Metrics in the units of the report's tables, logged beside the keys the report reads (which
#: stay fractions): name -> (source keys, first present wins; scale). Short names, to type into
#: the UI's column and chart search: ``JF`` finds J&F in percent.
DISPLAY_METRICS: dict[str, tuple[tuple[str, ...], float]] = {
    "JF": ((JF_MEAN,), 100.0),
    "J": ((J_MEAN,), 100.0),
    "F": ((F_MEAN,), 100.0),
    "JF best_val": ((BEST_VAL_JF_MEAN,), 100.0),
    "FPS": ((FPS,), 1.0),
    "memory_GB": ((MEM_ALLOC_GB, PEAK_RSS_GB), 1.0),
    "train_minutes": ((TRAIN_SECONDS,), 1.0 / 60.0),
}
#: Display metrics are rounded (the UI shows every digit it gets); the fractions stay exact.
DISPLAY_DECIMALS = 3
#: The per-epoch validation curve, in percent, beside the fractions the cell logs.
DISPLAY_CURVES: dict[str, str] = {VAL_JF: "val/JF", VAL_J: "val/J", VAL_F: "val/F"}

RUN_COLUMNS: tuple[str, ...] = (
    "run_id",
    "study",
    "row",
    "seed",
    "cell_key",
    "status",
    "variant",
    "activation",
    "table",
    "start_time",
    "end_time",
)


def default_tracking_uri(cwd: Path | None = None) -> str:
    """``sqlite:///<cwd>/mlruns/mlflow.db``: the embedded default store."""
    root = (cwd or Path.cwd()).resolve() / "mlruns"
    return f"sqlite:///{root / 'mlflow.db'}"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The explicit URI, else ``MLFLOW_TRACKING_URI``, else the local SQLite default."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def _is_transient(error: Exception) -> bool:
    text = str(error).lower()
    return "database is locked" in text or "database table is locked" in text or "busy" in text


def with_retries(call: Callable[[], T], attempts: int = 8) -> T:
    """Run a store call, retrying SQLite lock contention with jittered back-off."""
    for attempt in range(attempts):
        try:
            return call()
        except Exception as error:
            if attempt == attempts - 1 or not _is_transient(error):
                raise
            time.sleep(min(5.0, 0.1 * 2**attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")


def process_id() -> str:
    """``host:pid`` of this process (how the planner tells a live attempt from a stale one)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Tracker:
    """Study-level access to an MLflow store (see the module docstring for the layout)."""

    def __init__(self, uri: str | None = None) -> None:
        self.uri = resolve_tracking_uri(uri)
        self._client: MlflowClient | None = None
        self._experiments: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"Tracker({self.uri!r})"

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            open_store(self.uri)  # every process: create or upgrade a SQLite store once, locked
            self._client = with_retries(lambda: MlflowClient(tracking_uri=self.uri))
        return self._client

    @property
    def artifact_root(self) -> Path | None:
        """Where a SQLite store keeps artifacts (``artifacts/`` next to the database)."""
        path = sqlite_path(self.uri)
        return None if path is None else path.parent / "artifacts"

    # -- experiments and the study's parent run ---------------------------------------------

    def experiment_id(self, study_name: str, create: bool = False) -> str | None:
        if study_name in self._experiments:
            return self._experiments[study_name]
        if not create and not store_exists(self.uri):
            return None  # reading a store that does not exist yet: nothing there, create nothing
        experiment = with_retries(lambda: self.client.get_experiment_by_name(study_name))
        if experiment is None:
            if not create:
                return None
            location = None
            if self.artifact_root is not None:
                location = (self.artifact_root / study_name).resolve().as_uri()
            tags = {TAG_EXPERIMENT_KIND: EXPERIMENT_KIND}
            try:
                experiment_id = with_retries(
                    lambda: self.client.create_experiment(
                        study_name, artifact_location=location, tags=tags
                    )
                )
            except Exception:  # created concurrently by another process
                experiment = self.client.get_experiment_by_name(study_name)
                if experiment is None:
                    raise
                experiment_id = experiment.experiment_id
        else:
            experiment_id = experiment.experiment_id
        self._experiments[study_name] = experiment_id
        return experiment_id

    def studies(self) -> list[tuple[str, str]]:
        """``(study name, experiment id)`` of every study in the store (experiments holding a
        study's parent run), or none when the store does not exist yet."""
        if not store_exists(self.uri):
            return []
        found = []
        for experiment in with_retries(lambda: self.client.search_experiments()):
            experiment_id = experiment.experiment_id
            runs = with_retries(
                lambda e=experiment_id: self.client.search_runs(
                    [e], filter_string=f"tags.`{TAG_KIND}` = 'study'", max_results=1
                )
            )
            if runs:
                found.append((experiment.name, experiment_id))
        return found

    def _study_run(self, study_name: str) -> Run | None:
        experiment_id = self.experiment_id(study_name)
        if experiment_id is None:
            return None
        runs = with_retries(
            lambda: self.client.search_runs(
                [experiment_id],
                filter_string=f"tags.`{TAG_KIND}` = 'study'",
                order_by=["attribute.start_time ASC"],
                max_results=1,
            )
        )
        return runs[0] if runs else None

    def ensure_study_run(
        self,
        study_name: str,
        spec_text: str,
        backend: str,
        environment: dict[str, Any],
        description: str = "",
    ) -> str:
        """The study's parent run (created on first launch), updated with this launch.

        ``description`` (Markdown: :func:`study_description`) becomes the experiment's and the
        parent run's description in the UI."""
        experiment_id = self.experiment_id(study_name, create=True)
        assert experiment_id is not None
        run = self._study_run(study_name)
        if run is None:
            tags = {TAG_KIND: "study", TAG_STUDY: study_name, TAG_RUN_NAME: study_name}
            run_id = with_retries(
                lambda: self.client.create_run(experiment_id, tags=tags, run_name=study_name)
            ).info.run_id
        else:
            run_id = run.info.run_id
            if run.info.status != "RUNNING":
                with_retries(lambda: self.client.update_run(run_id, status="RUNNING"))
        launch = {**environment, "backend": backend, "time": time.time()}
        revision = str(environment.get("git", ""))
        tags = {TAG_BACKEND: backend, TAG_GIT: revision, **_commit_tag(revision)}
        for key, value in tags.items():
            with_retries(lambda k=key, v=value: self.client.set_tag(run_id, k, v))
        self.describe_study(study_name, description, run_id)
        with_retries(lambda: self.client.log_text(run_id, spec_text, "study.yaml"))
        with_retries(lambda: self.client.log_dict(run_id, launch, "environment.json"))
        return run_id

    def describe_study(self, study_name: str, description: str, run_id: str | None = None) -> None:
        """Mark the study's experiment as model training (older stores included) and, with a
        ``description``, show it on the experiment's page and on the parent run."""
        experiment_id = self.experiment_id(study_name, create=True)
        assert experiment_id is not None
        tags = {TAG_EXPERIMENT_KIND: EXPERIMENT_KIND}
        if description:
            tags[TAG_NOTE] = description
        for key, value in tags.items():
            with_retries(lambda k=key, v=value: self.client.set_experiment_tag(experiment_id, k, v))
        if description and run_id is not None:
            with_retries(lambda: self.client.set_tag(run_id, TAG_NOTE, description))

    def publish_study(
        self,
        study_name: str,
        *,
        metrics: dict[str, float],
        params: dict[str, Any],
        tables: dict[str, pd.DataFrame],
        folders: dict[str, Path],
        description: str = "",
    ) -> str:
        """Put a report on the study's parent run: ``metrics`` (a new value each time),
        ``params`` (logged once: a value that changed since is kept as a tag instead, MLflow's
        params being immutable), ``tables`` as ``name.json`` (``columns`` and ``data``, replaced
        each time), ``folders`` as artifact folders (replacing same-named files), and the
        description. Returns the parent run's id."""
        from mlflow.entities import Metric, Param

        run = self._study_run(study_name)
        if run is None:
            raise LookupError(f"no study named {study_name!r} in {self.uri}")
        run_id = run.info.run_id
        self.describe_study(study_name, description, run_id)
        now = int(time.time() * 1000)
        batch = [
            Metric(key, float(value), now, 0)
            for key, value in metrics.items()
            if isinstance(value, int | float) and math.isfinite(value)
        ]
        for start in range(0, len(batch), 500):
            chunk = batch[start : start + 500]
            with_retries(lambda c=chunk: self.client.log_batch(run_id, metrics=c))
        held = run.data.params
        new = [Param(k, _param_value(v)) for k, v in params.items() if k not in held]
        if new:
            with_retries(lambda: self.client.log_batch(run_id, params=new))
        for key, value in params.items():
            if key in held and held[key] != _param_value(value):
                tag = f"d2bench.now.{key}"
                with_retries(lambda t=tag, v=value: self.client.set_tag(run_id, t, _param_value(v)))
        for name, frame in tables.items():  # MlflowClient.log_table would append each time
            text = json.dumps(json.loads(frame.to_json(orient="split", index=False)), indent=1)
            with_retries(lambda n=name, t=text: self.client.log_text(run_id, t, f"{n}.json"))
        for destination, folder in folders.items():
            with_retries(
                lambda d=destination, f=folder: self.client.log_artifacts(run_id, str(f), d)
            )
        return run_id

    def end_study_run(self, run_id: str, status: str = "FINISHED") -> None:
        with_retries(lambda: self.client.set_terminated(run_id, status=status))

    def study_info(self, study_name: str) -> dict[str, Any]:
        """The parent run: ``run_id``, ``spec`` (YAML text), ``environment``, ``backend``, tags."""
        run = self._study_run(study_name)
        if run is None:
            raise LookupError(f"no study named {study_name!r} in {self.uri}")
        run_id = run.info.run_id
        info: dict[str, Any] = {
            "run_id": run_id,
            "study": study_name,
            "status": run.info.status,
            "start_time": run.info.start_time,
            "backend": run.data.tags.get(TAG_BACKEND),
            "git_revision": run.data.tags.get(TAG_GIT),
            "tags": dict(run.data.tags),
            "spec": None,
            "environment": {},
        }
        with tempfile.TemporaryDirectory() as scratch:
            try:
                spec = self.client.download_artifacts(run_id, "study.yaml", scratch)
                info["spec"] = Path(spec).read_text()
                environment = self.client.download_artifacts(run_id, "environment.json", scratch)
                info["environment"] = json.loads(Path(environment).read_text())
            except Exception:  # a parent run created without artifacts: report what is there
                pass
        return info

    # -- cell runs ---------------------------------------------------------------------------

    def create_cell_run(
        self,
        study_name: str,
        parent_run_id: str,
        cell: Cell,
        backend: str,
        cell_dir: Path,
        revision: str,
        varying: Collection[str] | None = None,
    ) -> str:
        """A new RUNNING child run for one attempt at ``cell`` (params logged once, here).

        ``varying``: the config keys that differ across the study's cells, logged as params
        in every cell (:meth:`d2bench.study.cells.Cell.params`)."""
        from mlflow.entities import Param

        experiment_id = self.experiment_id(study_name, create=True)
        assert experiment_id is not None
        config = cell.config
        tags = {
            TAG_PARENT: parent_run_id,
            TAG_RUN_NAME: cell.run_name,
            TAG_KIND: "cell",
            TAG_STUDY: study_name,
            TAG_ROW: cell.row,
            TAG_SEED: str(cell.seed),
            TAG_KEY: cell.key,
            TAG_TABLE: cell.table or "",
            TAG_VARIANT: config.model.variant,
            TAG_ACTIVATION: config.model.activation or "",
            TAG_BACKEND: backend,
            TAG_GIT: revision,
            TAG_CELL_DIR: str(cell_dir),
            TAG_DRIVER: process_id(),
            **_commit_tag(revision),
        }
        run = with_retries(
            lambda: self.client.create_run(experiment_id, tags=tags, run_name=cell.run_name)
        )
        run_id = run.info.run_id
        params = [Param(key, _param_value(value)) for key, value in cell.params(varying).items()]
        for start in range(0, len(params), 100):
            chunk = params[start : start + 100]
            with_retries(lambda c=chunk: self.client.log_batch(run_id, params=c))
        return run_id

    def cell_records(self, study_name: str) -> list[CellRecord]:
        """Every cell attempt of the study (all attempts; the planner picks the latest)."""
        from ..study.planner import CellRecord

        wanted = (TAG_KEY, TAG_DRIVER, TAG_JOB, TAG_BACKEND, TAG_ROW, TAG_WORKER)
        records = []
        for run in self._cell_runs(study_name):
            tags = run.data.tags
            records.append(
                CellRecord(
                    run_id=run.info.run_id,
                    key=tags.get(TAG_KEY, ""),
                    status=run.info.status,
                    start_time=run.info.start_time or 0,
                    tags=tuple((name, tags[name]) for name in wanted if name in tags),
                )
            )
        return records

    def _cell_runs(self, study_name: str) -> list[Run]:
        experiment_id = self.experiment_id(study_name)
        if experiment_id is None:
            return []
        runs: list[Run] = []
        token = None
        while True:
            page = with_retries(
                lambda t=token: self.client.search_runs(
                    [experiment_id],
                    filter_string=f"tags.`{TAG_KIND}` = 'cell'",
                    max_results=5000,
                    page_token=t,
                )
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def terminate(self, run_id: str, status: str, reason: str = "") -> None:
        """End an attempt (KILLED for stale or interrupted ones) and say why."""
        if reason:
            with_retries(lambda: self.client.set_tag(run_id, TAG_ERROR, reason[:5000]))
        with_retries(lambda: self.client.set_terminated(run_id, status=status))

    def cell_logger(self, run_id: str) -> CellRunLogger:
        return CellRunLogger(self, self.current_run_id(run_id))

    def current_run_id(self, run_id: str) -> str:
        """The run an attempt lives in now: ``run_id``, or the run its worker handed it over
        to when the cell started (a scheduled run is replaced by one starting with the cell)."""
        for _ in range(4):
            moved = with_retries(lambda r=run_id: self.client.get_run(r)).data.tags.get(
                TAG_HANDED_TO
            )
            if not moved:
                break
            run_id = moved
        return run_id

    def set_attempt_tags(self, run_id: str, tags: dict[str, str]) -> None:
        """Tags for an attempt that its worker may be handing over right now: set on the
        scheduled run, then also on the run it moved to, if it has (the worker copies tags
        after marking the move, so one of the two sides always carries them over)."""
        for key, value in tags.items():
            with_retries(lambda k=key, v=value: self.client.set_tag(run_id, k, v))
        current = self.current_run_id(run_id)
        if current != run_id:
            for key, value in tags.items():
                with_retries(lambda k=key, v=value: self.client.set_tag(current, k, v))

    # -- reading results (the report's side) -------------------------------------------------

    def study_runs(self, study_name: str) -> pd.DataFrame:
        """One row per cell of the study (its latest attempt, a finished one first)."""
        import pandas as pd

        from ..study.planner import CellRecord, latest_records

        runs = self._cell_runs(study_name)
        by_id = {run.info.run_id: run for run in runs}
        records = [
            CellRecord(r.info.run_id, r.data.tags.get(TAG_KEY, ""), r.info.status,
                       r.info.start_time or 0)
            for r in runs
        ]  # fmt: skip
        rows = []
        for record in latest_records(records).values():
            run = by_id[record.run_id]
            tags, metrics = run.data.tags, run.data.metrics
            status = run.info.status if run.info.status in ("FINISHED", "FAILED") else "RUNNING"
            row: dict[str, Any] = {
                "run_id": run.info.run_id,
                "study": tags.get(TAG_STUDY, study_name),
                "row": tags.get(TAG_ROW, ""),
                "seed": int(tags.get(TAG_SEED, "0")),
                "cell_key": tags.get(TAG_KEY, ""),
                "status": status,
                "variant": tags.get(TAG_VARIANT, ""),
                "activation": tags.get(TAG_ACTIVATION) or None,
                "table": tags.get(TAG_TABLE) or None,
                "start_time": pd.to_datetime(run.info.start_time, unit="ms", utc=True),
                "end_time": pd.to_datetime(run.info.end_time, unit="ms", utc=True)
                if run.info.end_time
                else pd.NaT,
            }
            for name in FINAL_METRICS:
                row[name] = float(metrics.get(name, math.nan))
            for name, value in metrics.items():
                if "/" not in name and name not in row:
                    row[name] = float(value)
            rows.append(row)
        frame = pd.DataFrame(rows, columns=None if rows else [*RUN_COLUMNS, *FINAL_METRICS])
        if rows:
            frame = frame.sort_values(["start_time", "row", "seed"], kind="stable")
        return frame.reset_index(drop=True)

    def metric_history(self, run_ids: Sequence[str], key: str) -> pd.DataFrame:
        """The logged values of one metric (e.g. ``train/loss``) as ``run_id, step, value``
        (under the ids asked for, a scheduled run's included)."""
        import pandas as pd

        rows = []
        for run_id in run_ids:
            current = self.current_run_id(run_id)  # a scheduled run's id reaches its attempt
            history = with_retries(lambda r=current: self.client.get_metric_history(r, key))
            rows.extend((run_id, m.step, m.value) for m in history)
        frame = pd.DataFrame(rows, columns=["run_id", "step", "value"])
        return frame.sort_values(["run_id", "step"], kind="stable").reset_index(drop=True)

    def download_artifact(self, run_id: str, path: str, dst: Path | None = None) -> Path:
        """A local copy of one artifact of a run (a file or a folder)."""
        target = dst or Path(tempfile.mkdtemp(prefix="d2bench-artifact-"))
        target.mkdir(parents=True, exist_ok=True)
        current = self.current_run_id(run_id)
        return Path(self.client.download_artifacts(current, path, str(target)))


def _commit_tag(revision: str) -> dict[str, str]:
    """MLflow's standard commit tag (a 40-hex commit; ``+dirty`` stays in d2bench's own tag)."""
    commit = revision.split("+", 1)[0]
    if len(commit) == 40 and all(c in "0123456789abcdef" for c in commit):
        return {TAG_GIT_COMMIT: commit}
    return {}


def display_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The :data:`DISPLAY_METRICS` that ``metrics`` (a cell's flat result) can fill."""
    out: dict[str, float] = {}
    for name, (sources, scale) in DISPLAY_METRICS.items():
        for source in sources:
            value = metrics.get(source)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if number and math.isfinite(value):
                out[name] = round(float(value) * scale, DISPLAY_DECIMALS)
                break
    return out


def experiment_page(ui_url: str, experiment_id: str) -> str:
    """The address of a study's runs in the MLflow UI. MLflow 3.17's UI picks GenAI or model
    training from a switch remembered per browser (GenAI at first), ahead of the experiment's
    kind tag; ``workflowType=machine_learning`` in the address sets the switch."""
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def study_description(name: str, description: str, study_file: str | None) -> str:
    """The Markdown shown on the study's experiment page and parent run."""
    target = f"<{name}.yaml>"
    if study_file:
        path = Path(study_file).resolve()
        try:
            target = str(path.relative_to(Path.cwd().resolve()))
        except ValueError:
            target = str(path)
    lines = [
        f"**{name}**: {description.strip() or 'a d2bench study'}",
        "",
        "One child run per cell (row × seed), named `row · activation · seed N`; the columns "
        "`JF`, `J`, `F` (percent), `FPS` and `memory_GB` are the tables' numbers. The parent "
        f"run `{name}` holds each row's mean, std and n (metrics `<row>/JF` ...; the table "
        "`rows.json`) and, under `report/`, the report's tables and figures.",
        "",
        f"Regenerate the report (and refresh the parent run): `d2bench report {target}`.",
    ]
    return "\n".join(lines)


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, list | tuple) else str(value)
    return text[:6000]


class CellRunLogger:
    """What a worker writes into its cell's run: curves as they come, then the outcome.

    Training curves are buffered and sent in batches (every few seconds) so that a store shared
    by many cells sees a few writes per cell per minute, not one per optimiser step. A point
    whose (key, step) the run already holds is dropped: a requeued SLURM job continues the same
    run, and the cell may hand over again the last commit before its kill (engine.journal).
    """

    def __init__(self, tracker: Tracker, run_id: str, flush_seconds: float = 5.0) -> None:
        self.tracker = tracker
        self.run_id = run_id
        self.flush_seconds = flush_seconds
        self._pending: list[Any] = []
        self._last_flush = time.monotonic()
        self._logged: dict[str, set[int]] | None = None

    @property
    def client(self) -> MlflowClient:
        return self.tracker.client

    def started(self, job_id: str | None = None) -> None:
        """Mark the attempt as running here (again, after a requeue).

        A cell run is created when the cell is scheduled (the planner must see it from then
        on), but MLflow fixes a run's start time at creation, and the UI's start and duration
        would then count the time in the queue. So the first time a worker starts an attempt,
        it hands the run over: a new run with the same name, tags and params starts now, the
        scheduled one points to it (:data:`TAG_HANDED_TO`) and is deleted (hidden from
        searches and the UI), and the wait is kept as :data:`TAG_QUEUED`. Everyone holding the
        scheduled id reaches the new run through :meth:`Tracker.current_run_id`.
        """
        run = with_retries(lambda: self.client.get_run(self.run_id))
        fresh = (
            run.data.tags.get(TAG_KIND) == "cell"
            and TAG_WORKER not in run.data.tags
            and TAG_HANDED_TO not in run.data.tags
            and not run.data.metrics
            and run.info.lifecycle_stage == "active"
        )
        if fresh:
            self.run_id = self._hand_over(run)
        tags = {TAG_WORKER: process_id()}
        if job_id:
            tags[TAG_JOB] = job_id
        for key, value in tags.items():
            with_retries(lambda k=key, v=value: self.client.set_tag(self.run_id, k, v))
        with_retries(lambda: self.client.update_run(self.run_id, status="RUNNING"))

    def _hand_over(self, scheduled: Run) -> str:
        from mlflow.entities import Param, RunTag

        old_id = scheduled.info.run_id
        now = int(time.time() * 1000)
        queued = max(0.0, (now - (scheduled.info.start_time or now)) / 1000.0)
        tags = {**scheduled.data.tags, TAG_QUEUED: f"{queued:.1f}"}
        run = with_retries(
            lambda: self.client.create_run(
                scheduled.info.experiment_id,
                start_time=now,
                tags=tags,
                run_name=scheduled.info.run_name,
            )
        )
        new_id = run.info.run_id
        params = [Param(k, v) for k, v in scheduled.data.params.items()]
        for start in range(0, len(params), 100):
            chunk = params[start : start + 100]
            with_retries(lambda c=chunk: self.client.log_batch(new_id, params=c))
        with_retries(lambda: self.client.set_tag(old_id, TAG_HANDED_TO, new_id))
        # tags the driver set meanwhile (a SLURM job id): see Tracker.set_attempt_tags
        later = with_retries(lambda: self.client.get_run(old_id)).data.tags
        missing = [
            RunTag(k, v) for k, v in later.items() if k != TAG_HANDED_TO and tags.get(k) != v
        ]
        if missing:
            with_retries(lambda: self.client.log_batch(new_id, tags=missing))
        with_retries(lambda: self.client.delete_run(old_id))
        return new_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        logged = self._logged_steps()
        shown = {
            DISPLAY_CURVES[key]: value * 100.0
            for key, value in metrics.items()
            if key in DISPLAY_CURVES and isinstance(value, int | float)
        }
        for key, value in {**metrics, **shown}.items():
            if not (isinstance(value, int | float) and math.isfinite(value)):
                continue
            steps = logged.setdefault(key, set())
            if int(step) in steps:
                continue
            steps.add(int(step))
            self._pending.append(Metric(key, float(value), now, int(step)))
        if time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def _logged_steps(self) -> dict[str, set[int]]:
        """The steps the run holds per metric, read once (a fresh run holds none)."""
        if self._logged is None:
            run = with_retries(lambda: self.client.get_run(self.run_id))
            self._logged = {}
            for key in run.data.metrics:
                history = with_retries(lambda k=key: self.client.get_metric_history(self.run_id, k))
                self._logged[key] = {metric.step for metric in history}
        return self._logged

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        self._last_flush = time.monotonic()
        for start in range(0, len(pending), 500):
            chunk = pending[start : start + 500]
            with_retries(lambda c=chunk: self.client.log_batch(self.run_id, metrics=c))

    def finished(self, result: dict[str, Any], cell_dir: Path) -> None:
        """Final metrics, the cell's files, then FINISHED (last, so FINISHED means complete)."""
        from mlflow.entities import Metric

        self.flush()
        now = int(time.time() * 1000)
        values = dict(result.get("metrics", {}))
        metrics = [
            Metric(key, float(value), now, 0)
            for key, value in {**values, **display_metrics(values)}.items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        ]
        if metrics:
            with_retries(lambda: self.client.log_batch(self.run_id, metrics=metrics))
        self.log_cell_files(cell_dir)
        self.log_per_sequence(cell_dir, result.get("artifacts"))
        with_retries(lambda: self.client.set_terminated(self.run_id, status="FINISHED"))

    def failed(self, traceback_text: str, cell_dir: Path | None) -> None:
        """The traceback as an artifact (and a short tag), the cell's log, then FAILED."""
        self.flush()
        last_line = traceback_text.strip().splitlines()[-1] if traceback_text.strip() else ""
        with_retries(lambda: self.client.log_text(self.run_id, traceback_text, "traceback.txt"))
        with_retries(lambda: self.client.set_tag(self.run_id, TAG_ERROR, last_line[:5000]))
        if cell_dir is not None:
            self.log_cell_files(cell_dir, names=(LOG_FILE, CONFIG_FILE))
        with_retries(lambda: self.client.set_terminated(self.run_id, status="FAILED"))

    def interrupted(self, reason: str) -> None:
        """Stopped on request (Ctrl-C, scancel): KILLED, to be scheduled again."""
        self.flush()
        self.tracker.terminate(self.run_id, "KILLED", reason)

    def preempted(self, reason: str) -> None:
        """Checkpointed on the scheduler's warning and about to be requeued: the next job
        continues this run, so it stays RUNNING; the curve so far is sent now."""
        self.flush()
        with_retries(lambda: self.client.set_tag(self.run_id, TAG_STOP, reason[:5000]))

    def job_ended(self, summary: str, evidence: str) -> None:
        """Why the run's job died without recording anything (tag and artifact); the run's
        status is left to the planner (stale) and the next driver."""
        with_retries(lambda: self.client.log_text(self.run_id, evidence, JOB_END_ARTIFACT))
        for key in (TAG_JOB_END, TAG_ERROR):
            with_retries(lambda k=key: self.client.set_tag(self.run_id, k, summary[:5000]))

    def log_per_sequence(self, cell_dir: Path, artifacts: dict[str, Any] | None = None) -> None:
        """The cell's J&F per sequence and checkpoint as the MLflow table ``per_sequence.json``
        (the report's paired comparison reads it); nothing when the cell did not evaluate."""
        import pandas as pd

        from ..core.per_sequence import COLUMNS, cell_records

        records = cell_records(cell_dir, artifacts)
        if records:
            table = pd.DataFrame(records, columns=list(COLUMNS)).astype(
                {"checkpoint": object, "sequence": object}  # as MLflow's table check expects
            )
            with_retries(
                lambda: self.client.log_table(self.run_id, table, artifact_file=PER_SEQUENCE_TABLE)
            )

    def log_cell_files(self, cell_dir: Path, names: Iterable[str] = CELL_ARTIFACTS) -> None:
        for name in names:
            path = Path(cell_dir) / name
            if path.is_file():
                with_retries(lambda p=path: self.client.log_artifact(self.run_id, str(p)))
