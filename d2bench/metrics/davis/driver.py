"""``evaluate``: list the sequences, score them in parallel, pool the statistics."""

from __future__ import annotations

import multiprocessing
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from .errors import EvalError
from .layout import list_frames, read_imageset, resolve_root
from .protocols import get_protocol
from .sequence import SequenceScores, SequenceTask, evaluate_sequence
from .statistics import global_summary, object_summary


def available_cpus() -> int:
    """CPUs this process may run on (its affinity where the OS tells, else the CPU count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _pool_context() -> multiprocessing.context.BaseContext:
    """``fork`` where the OS has it: workers start in milliseconds and need no main guard.

    The workers run only numpy, scipy and Pillow code, never torch or a BLAS thread pool, so
    forking a parent that has loaded torch is safe for them. Elsewhere the platform default.
    """
    if "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context()


def _run_tasks(tasks: list[SequenceTask], workers: int) -> list[SequenceScores]:
    """Score every task; in this process for one worker, else over a process pool.

    Longest sequences go first so that the pool ends evenly; results come back in task order.
    """
    if workers <= 1 or len(tasks) <= 1:
        return [evaluate_sequence(task) for task in tasks]
    order = sorted(range(len(tasks)), key=lambda i: -len(tasks[i].frames))
    with (
        warnings.catch_warnings(),
        ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context()) as pool,
    ):
        # Python ≥ 3.12 warns when forking a multi-threaded parent; see _pool_context
        warnings.filterwarnings("ignore", message=".*multi-threaded.*", category=DeprecationWarning)
        futures = {i: pool.submit(evaluate_sequence, tasks[i]) for i in order}
        try:
            return [futures[i].result() for i in range(len(tasks))]
        except BaseException:
            for future in futures.values():
                future.cancel()
            raise


def _object_entry(scores: SequenceScores, index: int, match: bool) -> dict[str, Any]:
    obj = scores.objects[index]
    entry: dict[str, Any] = {
        "sequence": scores.sequence,
        "object": obj.object_id,
        **object_summary(obj.j, obj.f),
        "frames": list(scores.frames),
        "J": [float(v) for v in obj.j],
        "F": [float(v) for v in obj.f],
    }
    if match:
        entry["proposal"] = obj.proposal_id
    return entry


def evaluate(
    davis_root: str | Path,
    results_dir: str | Path,
    protocol: str = "davis16",
    imageset: str = "2016/val",
    workers: int | None = None,
    sequences: list[str] | None = None,
) -> dict[str, Any]:
    """J&F of the results in ``results_dir`` against a DAVIS root, as a JSON-ready dict.

    ``protocol`` is ``davis16``, ``semi`` or ``unsupervised`` (see
    :mod:`d2bench.metrics.davis.protocols`); ``imageset`` names ``ImageSets/<imageset>.txt``;
    ``sequences`` restricts the evaluation to some of its sequences. ``workers`` processes score
    sequences in parallel (default: one per available CPU, at most one per sequence).

    The dict holds ``global`` (``J&F-Mean``, ``J-Mean``, ``J-Recall``, ``J-Decay``, ``F-Mean``,
    ``F-Recall``, ``F-Decay``, fractions), ``per_object`` keyed ``<sequence>_<k>`` in the
    official tool's row order and naming (its per-sequence CSV, row for row): under ``davis16``
    and ``semi`` row k is ground-truth object k; under ``unsupervised`` it is the k-th matched
    (proposal, object) pair in proposal order, whichever object that proposal matched. Each entry
    holds the ground-truth ``object``, its per-frame ``J`` and ``F`` and their statistics; under
    ``unsupervised`` also the matched ``proposal`` (None for an empty padding proposal).
    ``per_sequence`` has the frames scored, objects, proposals; then the settings. The global
    values are averages over the rows in that order, so they match the official tool bit for
    bit.
    Raises :class:`EvalError` for bad input, naming the sequence and the frame.
    """
    started = time.perf_counter()
    chosen = get_protocol(protocol)
    root = resolve_root(davis_root)
    results = Path(results_dir)
    if not results.is_dir():
        raise EvalError(f"results folder {results} does not exist")
    names = read_imageset(root, imageset)
    if sequences is not None:
        unknown = [name for name in sequences if name not in names]
        if unknown:
            raise EvalError(f"sequences {unknown} are not in image set {imageset}")
        names = [name for name in names if name in sequences]
    if workers is not None and workers < 1:
        raise EvalError(f"workers must be at least 1, got {workers}")
    tasks = [
        SequenceTask(
            sequence=name,
            frames=tuple(list_frames(root, chosen.annotations, name)),
            root=str(root),
            results=str(results),
            protocol=chosen,
        )
        for name in names
    ]
    pool_size = min(workers if workers is not None else available_cpus(), len(tasks))
    scored = _run_tasks(tasks, pool_size)

    per_object: dict[str, dict[str, Any]] = {}
    pooled: list[dict[str, Any]] = []
    for scores in scored:
        entries = [
            _object_entry(scores, index, chosen.match_proposals)
            for index in range(len(scores.objects))
        ]
        pooled.extend(entries)  # official order: by proposal under unsupervised
        # the official tool names row k of a sequence ``<sequence>_<k>`` after its position:
        # object k without matching, the k-th matched pair in proposal order with it
        for position, entry in enumerate(entries, start=1):
            per_object[f"{scores.sequence}_{position}"] = entry
    return {
        "protocol": chosen.to_dict(),
        "davis_root": str(root),
        "results": str(results),
        "imageset": imageset,
        "sequences": names,
        "num_objects": len(pooled),
        "num_frames": sum(len(scores.frames) for scores in scored),
        "global": global_summary(pooled),
        "per_sequence": {
            scores.sequence: {
                "frames_scored": len(scores.frames),
                "objects": scores.num_objects,
                "proposals": scores.num_proposals,
            }
            for scores in scored
        },
        "per_object": per_object,
        "workers": max(pool_size, 1),
        "wall_s": time.perf_counter() - started,
    }
