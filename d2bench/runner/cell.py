"""One cell of a study, start to finish: train, infer, evaluate, measure, write ``result.json``.

Every backend (local, Ray, SLURM) calls :func:`run_cell`; it is idempotent and resumable:
a cell directory whose ``result.json`` matches the config (or the cell key: the same experiment
with its data elsewhere) is returned at once, and training resumes from the newest checkpoint in
``checkpoints/``. The directory holds::

    config.yaml        the resolved config
    cell.log           stage-by-stage log
    metrics.jsonl      the training curve, one JSON object per optimiser step / epoch, up to
                       the newest checkpoint (each step once, across resumes: engine.journal)
    checkpoints/       ckpt-eEEEE-bBBBBBB.pt (the newest two), best-eEEEE.pt (with validation)
    masks/<seq>/*.png  predictions of the final weights in the DAVIS results layout
    eval.json          their J&F per object and global (d2bench.metrics.davis)
    validation/        the masks of the latest per-epoch validation pass (with validation)
    masks-best_val/    predictions of the best-validation weights (when they are not the final)
    eval-best_val.json their J&F
    oob.json           out-of-bounds sampling statistic per layer (when measured)
    maps.npz           dilation/modulation maps of one sequence (when asked for)
    result.json        flat metrics + environment + config + cell key + artifact paths, written last

The file names and metric keys are the cell-result contract's (:mod:`d2bench.core.contract`).
``result["metrics"]`` holds flat floats: jf_mean, j_mean, j_recall, j_decay, f_mean, f_recall,
f_decay, fps, mem_alloc_gb and mem_reserved_gb (GPU) or peak_rss_gb (CPU), oob_full,
oob_partial, oob_{full,partial}_{t,y,x} (pooled over all sampling locations) and the same with
oob_layer_mean_ (the mean over layers), train_loss, train_seconds, epochs.

Which checkpoint: the plain J&F keys are those of the final weights (the unbiased choice). With
``train.validate_every_epochs`` the cell also evaluates the weights that scored best in the
per-epoch validation (as the original release does) and records their J&F under the same names
prefixed ``best_val/``, plus ``best_val/epoch``. So one training run fills both, and which of
the two a table shows is the study's ``select`` (read by the report), not the cell's: a cell
serves studies that select either (see :mod:`d2bench.study.cells`). OOB shares, maps, FPS and
memory are measured on the final weights.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import yaml

from ..core.atomic_io import atomic_write_text
from ..core.config import CellConfig, config_to_dict
from ..core.contract import (
    ARTIFACT_BEST_VAL_EVAL,
    ARTIFACT_BEST_VAL_MASKS,
    ARTIFACT_CURVE,
    ARTIFACT_EVAL,
    ARTIFACT_LOG,
    ARTIFACT_MAPS,
    ARTIFACT_MASKS,
    ARTIFACT_OOB,
    BEST_VAL_EPOCH,
    BEST_VAL_EVAL_FILE,
    BEST_VAL_JF_MEAN,
    BEST_VAL_MASKS_DIR,
    BEST_VAL_PREFIX,
    CHECKPOINT_DIR,
    CONFIG_FILE,
    EPOCHS,
    EVAL_FILE,
    F_MEAN,
    FPS,
    J_MEAN,
    JF_KEYS,
    JF_KEYS_BY_DAVIS_NAME,
    JF_MEAN,
    LOG_FILE,
    MAPS_FILE,
    MASKS_DIR,
    MEMORY_KEYS_BY_SPEED_KEY,
    METRICS_FILE,
    OOB_FILE,
    RESULT_FILE,
    TRAIN_LOSS,
    TRAIN_SECONDS,
    VALIDATION_DIR,
    oob_metrics,
)
from ..engine.journal import MetricsCallback, MetricsJournal
from ..engine.signals import CellInterrupted

#: Called after a checkpoint's metrics were handed over (so the sink sends them on now).
CommitCallback = Callable[[], None]

__all__ = [
    "CellInterrupted",
    "evaluate_cell",
    "infer_cell",
    "read_result",
    "run_cell",
    "train_cell",
]

log = logging.getLogger("d2bench.cell")


def read_result(cell_dir: Path) -> dict[str, Any] | None:
    """The cell's ``result.json``, or None when it has not finished."""
    path = Path(cell_dir) / RESULT_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


@contextmanager
def _cell_log(cell_dir: Path) -> Iterator[None]:
    handler = logging.FileHandler(cell_dir / LOG_FILE)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("[cell] %(message)s"))
    log.addHandler(handler)
    log.addHandler(console)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.removeHandler(console)
        handler.close()


def train_cell(
    config: CellConfig,
    cell_dir: Path,
    device: Any,
    model: Any,
    on_metrics: MetricsCallback | None,
    handle_signals: bool,
    show_progress: bool,
    *,
    on_commit: CommitCallback | None = None,
    checkpoint_every_s: float | None = None,
) -> dict[str, Any]:
    """Train (or resume) the cell; ``on_metrics`` gets the curve as it is committed, that is
    each time a checkpoint is written (see :mod:`d2bench.engine.journal`)."""
    from ..data import TrainClips
    from ..engine.distributed import DistContext
    from ..engine.trainer import Trainer
    from .validation import Validator

    data = config.data
    rank = DistContext.from_environment(device).rank  # each torchrun rank draws its own clips
    dataset = TrainClips(
        data.root,
        imageset=data.train_set,
        clip_len=data.clip_len,
        window=data.window,
        size=data.train_size,
        pad_multiple=data.pad_multiple,
        clip_sampling=data.clip_sampling,
        seed=config.train.seed,
        rank=rank,
    )
    log.info(
        "training on %d %s clips of %s (%s)",
        len(dataset),
        data.clip_sampling,
        data.train_set,
        data.root,
    )
    trainer = Trainer(
        config,
        model,
        dataset,
        cell_dir / CHECKPOINT_DIR,
        device,
        journal=MetricsJournal(cell_dir / METRICS_FILE, on_metrics, on_commit),
        handle_signals=handle_signals,
        show_progress=show_progress,
        checkpoint_every_s=checkpoint_every_s,
        validator=(
            Validator(config, cell_dir / VALIDATION_DIR, device)
            if config.train.validate_every_epochs
            else None
        ),
    )
    try:
        summary = trainer.fit()
    except CellInterrupted as stopped:
        log.info("%s", stopped)
        raise
    if summary.resumed_from:
        log.info("resumed from %s", summary.resumed_from)
    return {
        TRAIN_LOSS: summary.final_loss,
        TRAIN_SECONDS: summary.seconds,
        EPOCHS: float(len(summary.epoch_losses)),
        "resumed_from": summary.resumed_from,
        "best_val": summary.best_val,
    }


def _train_with_torchrun(
    config: CellConfig,
    cell_dir: Path,
    model: Any,
    on_metrics: MetricsCallback | None,
    on_commit: CommitCallback | None = None,
) -> dict[str, Any]:
    """Several GPUs: train in ``torchrun`` ranks, replay their curve, load the final weights.

    Rank 0 commits the curve to ``metrics.jsonl`` with each checkpoint; this process forwards
    the lines as they appear. A resuming rank 0 may rewrite the file shorter: then everything is
    forwarded again, and the sink (the MLflow logger) drops the points it already holds."""
    from ..engine.checkpoint import load_checkpoint, newest_checkpoint

    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={config.train.gpus}",
        "-m",
        "d2bench.runner.train_entry",
        str(cell_dir),
    ]
    log.info("training data-parallel on %d GPUs: %s", config.train.gpus, " ".join(command))
    curve = cell_dir / METRICS_FILE
    seen = 0
    started = time.perf_counter()
    process = subprocess.Popen(command)
    while True:
        finished = process.poll() is not None
        if curve.exists() and on_metrics is not None:
            text = curve.read_text()
            lines = text.splitlines()
            if len(lines) < seen:
                seen = 0
            complete = lines[seen:] if text.endswith("\n") else lines[seen:-1]
            for line in complete:
                event = json.loads(line)
                step = event.pop("step")
                on_metrics(event, step)
            seen += len(complete)
            if complete and on_commit is not None:
                on_commit()
        if finished:
            break
        time.sleep(2.0)
    if process.returncode != 0:
        raise RuntimeError(f"data-parallel training failed (torchrun exit {process.returncode})")
    state = load_checkpoint(newest_checkpoint(cell_dir / CHECKPOINT_DIR))  # type: ignore[arg-type]
    model.load_state_dict(state["model"])
    losses = state["epoch_losses"]
    return {
        TRAIN_LOSS: losses[-1] if losses else float("nan"),
        TRAIN_SECONDS: time.perf_counter() - started,
        EPOCHS: float(len(losses)),
    }


def infer_cell(
    config: CellConfig,
    cell_dir: Path,
    model: Any,
    device: Any,
    show_progress: bool,
    *,
    masks_name: str = MASKS_DIR,
    extras: bool = True,
) -> dict[str, Any]:
    """Masks for every validation sequence into ``cell_dir/masks_name``; with ``extras``, the
    OOB statistic and maps when the config asks for them."""
    from ..data import frame_names, list_sequences, read_frames
    from ..engine.inference import predict_video, write_masks
    from ..engine.progress import Progress
    from ..metrics.oob import record_oob
    from ..metrics.sampling_maps import record_maps

    root, infer_cfg = config.data.root, config.infer
    sequences = list_sequences(root, config.data.val_set)
    masks_dir = cell_dir / masks_name
    artifacts: dict[str, Any] = {ARTIFACT_MASKS: masks_name}
    metrics: dict[str, float] = {}
    channels_last = config.train.channels_last and device.type == "cuda"
    progress = Progress("inference", len(sequences), enabled=show_progress)
    with ExitStack() as stack:
        oob = extras and config.measure.oob
        recorder = stack.enter_context(record_oob(model)) if oob else None
        for index, sequence in enumerate(sequences):
            frames = read_frames(root, sequence)
            with ExitStack() as per_video:
                maps = None
                if extras and infer_cfg.save_maps_for == sequence:
                    maps = per_video.enter_context(record_maps(model))
                probabilities = predict_video(
                    model, frames, infer_cfg, device, channels_last=channels_last
                )
            if maps is not None:
                _save_maps(cell_dir / MAPS_FILE, maps, frames, sequence, config)
                artifacts[ARTIFACT_MAPS] = MAPS_FILE
            write_masks(
                probabilities,
                infer_cfg.threshold,
                masks_dir / sequence,
                frame_names(root, sequence),
            )
            progress.update(index + 1, sequence=sequence)
        if recorder is not None:
            summary = recorder.summary()
            atomic_write_text(cell_dir / OOB_FILE, json.dumps(summary, indent=1))
            artifacts[ARTIFACT_OOB] = OOB_FILE
            metrics.update(oob_metrics(summary))
    if extras and infer_cfg.save_maps_for is not None and infer_cfg.save_maps_for not in sequences:
        log.warning(
            "save_maps_for=%r is not in %s; no maps saved", infer_cfg.save_maps_for, sequences
        )
    return {"metrics": metrics, "artifacts": artifacts}


def _save_maps(path: Path, maps: Any, frames: Any, sequence: str, config: CellConfig) -> None:
    """The maps of one sequence, its clip plan, the frames' native size and padding, and its
    frames (downscaled so that the longer side is at most 320 px: the report draws them beside
    the maps, which are coarser still)."""
    from ..data.padding import centred_padding
    from ..engine.inference import PAD_MULTIPLE, plan_clips
    from ..metrics.sampling_maps import save_maps

    clip_len, gap = config.infer.clip_len, config.infer.gap
    plan = plan_clips(len(frames), clip_len, gap, starts=config.infer.clip_starts)
    clips = [list(clip.frames) for clip in plan]
    height, width = int(frames.shape[1]), int(frames.shape[2])
    # The maps cover the padded frame: the report crops them back with the native size and
    # the padding (top, bottom, left, right) inference added.
    metadata = {"sequence": sequence, "clip_len": clip_len, "gap": gap, "clips": clips,
                "variant": config.model.variant, "frame_size": [height, width],
                "padding": list(centred_padding(height, width, PAD_MULTIPLE))}  # fmt: skip
    step = max(1, -(-max(frames.shape[1:3]) // 320))
    save_maps(path, maps, metadata, frames=frames[:, ::step, ::step])


def evaluate_cell(
    config: CellConfig,
    cell_dir: Path,
    *,
    masks_name: str = MASKS_DIR,
    eval_name: str = EVAL_FILE,
) -> dict[str, float]:
    """J&F of the masks in ``cell_dir/masks_name`` (written to ``eval_name``), flat keys."""
    from ..metrics.davis import evaluate

    result = evaluate(
        config.data.root,
        cell_dir / masks_name,
        protocol=config.measure.protocol,
        imageset=config.data.val_set,
    )
    atomic_write_text(cell_dir / eval_name, json.dumps(result, indent=1))
    global_scores = result["global"]
    return {ours: float(global_scores[theirs]) for theirs, ours in JF_KEYS_BY_DAVIS_NAME.items()}


def evaluate_best_val(
    config: CellConfig,
    cell_dir: Path,
    model: Any,
    device: Any,
    final: dict[str, float],
    show_progress: bool,
) -> tuple[dict[str, float], dict[str, str]]:
    """``best_val/*`` metrics (and artifacts) of the best-validation weights, if training kept
    any: their own inference and J&F, or the final J&F when the best epoch is the last one (the
    same weights). Loads those weights into ``model``: call it after everything that measures
    the final weights."""
    from ..engine.checkpoint import load_checkpoint, newest_best

    best = newest_best(cell_dir / CHECKPOINT_DIR)
    if best is None or not config.measure.jf:
        return {}, {}
    state = load_checkpoint(best)
    epoch = int(state["epoch"])
    metrics = {BEST_VAL_EPOCH: float(epoch)}
    if epoch == config.train.epochs:
        log.info("the best validation is the final epoch's: its J&F is the final J&F")
        metrics |= {f"{BEST_VAL_PREFIX}{key}": final[key] for key in JF_KEYS if key in final}
        return metrics, {ARTIFACT_BEST_VAL_MASKS: MASKS_DIR, ARTIFACT_BEST_VAL_EVAL: EVAL_FILE}
    log.info("inference and J&F of the best-validation weights (epoch %d, %s)", epoch, best.name)
    model.load_state_dict(state["model"])
    infer_cell(config, cell_dir, model, device, show_progress,
               masks_name=BEST_VAL_MASKS_DIR, extras=False)  # fmt: skip
    scores = evaluate_cell(
        config, cell_dir, masks_name=BEST_VAL_MASKS_DIR, eval_name=BEST_VAL_EVAL_FILE
    )
    metrics |= {f"{BEST_VAL_PREFIX}{key}": value for key, value in scores.items()}
    return metrics, {
        ARTIFACT_BEST_VAL_MASKS: BEST_VAL_MASKS_DIR,
        ARTIFACT_BEST_VAL_EVAL: BEST_VAL_EVAL_FILE,
    }


def _measure_speed(
    config: CellConfig, model: Any, device: Any
) -> tuple[dict[str, float], dict[str, Any]]:
    from ..data import list_sequences, read_frames
    from ..metrics.speed import measure_inference

    sequences = list_sequences(config.data.root, config.data.val_set)
    if config.measure.fps_videos is not None:
        sequences = sequences[: config.measure.fps_videos]
    videos = [read_frames(config.data.root, sequence) for sequence in sequences]
    report = measure_inference(
        model, videos, config.infer, device, warmup_clips=config.measure.warmup_clips
    )
    memory = report.get("memory", {})
    sources = {
        FPS: report.get("fps"),
        **{ours: memory.get(theirs) for theirs, ours in MEMORY_KEYS_BY_SPEED_KEY.items()},
    }
    metrics = {key: float(value) for key, value in sources.items() if value is not None}
    return metrics, report


def build_seeded_model(config: CellConfig) -> Any:
    """The cell's model, initialised from its seed (so a run and its resume start alike)."""
    from ..engine.checkpoint import seed_everything
    from ..models import build_model

    seed_everything(config.train.seed)
    return build_model(config.model)


def run_cell(
    config: CellConfig,
    cell_dir: Path,
    *,
    key: str | None = None,
    on_metrics: MetricsCallback | None = None,
    on_commit: CommitCallback | None = None,
    handle_signals: bool = True,
    show_progress: bool = True,
    checkpoint_every_s: float | None = None,
    on_phase: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run (or finish, or just return) one cell; see the module docstring for the layout.

    ``key`` is the study's cell key, recorded in ``result.json``: a finished result with the
    same key is returned although its config differs in machine-local keys only (the data
    moved, another card): the key holds everything else, the data and weights by digest.
    ``on_metrics`` receives the training curve as it is committed (with each checkpoint), and
    ``on_commit`` is called after each commit's last event. ``on_phase`` hears ``"train"``
    before training and ``"infer"`` before inference and the speed measurement (so a system
    metrics sampler can stop before FPS is timed).
    """
    from ..engine.distributed import DistContext, rank_device
    from ..ops.environment import collect_environment

    cell_dir = Path(cell_dir)
    cell_dir.mkdir(parents=True, exist_ok=True)
    config_dict = config_to_dict(config)
    finished = read_result(cell_dir)
    if finished is not None and (
        finished.get("config") == config_dict or (key is not None and finished.get("key") == key)
    ):
        return finished
    atomic_write_text(cell_dir / CONFIG_FILE, yaml.safe_dump(config_dict, sort_keys=False))

    with _cell_log(cell_dir):
        started = time.perf_counter()
        device = rank_device(config.device)
        what = config.model.describe()
        log.info("cell %s: %s on %s (%s)", cell_dir.name, what, device, config.data.root)
        model = build_seeded_model(config)
        metrics: dict[str, float] = {}
        if config.train.epochs > 0:
            if on_phase is not None:
                on_phase("train")
            distributed = config.train.gpus > 1 and "WORLD_SIZE" not in os.environ
            if distributed:
                metrics |= _train_with_torchrun(config, cell_dir, model, on_metrics, on_commit)
                model.to(device)
            else:
                trained = train_cell(
                    config, cell_dir, device, model, on_metrics, handle_signals, show_progress,
                    on_commit=on_commit, checkpoint_every_s=checkpoint_every_s,
                )  # fmt: skip
                trained.pop("resumed_from")
                trained.pop("best_val")
                metrics |= trained
            if not DistContext.from_environment(device).is_main:
                return {}
        else:
            model.to(device)
        if on_phase is not None:
            on_phase("infer")
        log.info("inference on %s", config.data.val_set)
        inferred = infer_cell(config, cell_dir, model, device, show_progress)
        metrics |= inferred["metrics"]
        artifacts = {**inferred["artifacts"], ARTIFACT_LOG: LOG_FILE, ARTIFACT_CURVE: METRICS_FILE}
        if config.measure.jf:
            log.info("evaluating (%s)", config.measure.protocol)
            metrics |= evaluate_cell(config, cell_dir)
            artifacts[ARTIFACT_EVAL] = EVAL_FILE
        speed: dict[str, Any] | None = None
        if config.measure.fps or config.measure.memory:
            log.info("measuring FPS and memory")
            speed_metrics, speed = _measure_speed(config, model, device)
            metrics |= speed_metrics
        best_metrics, best_artifacts = evaluate_best_val(
            config, cell_dir, model, device, metrics, show_progress
        )
        metrics |= best_metrics
        artifacts |= best_artifacts
        result = {
            "metrics": metrics,
            "speed": speed,
            "environment": collect_environment(device),
            "config": config_dict,
            "key": key,
            "artifacts": artifacts,
            "seconds": time.perf_counter() - started,
        }
        atomic_write_text(cell_dir / RESULT_FILE, json.dumps(result, indent=1, default=str))
        log.info("done in %.0f s: %s", result["seconds"], _headline(metrics))
        return result


def _headline(metrics: dict[str, float]) -> str:
    keys = (JF_MEAN, J_MEAN, F_MEAN, BEST_VAL_JF_MEAN, FPS, TRAIN_LOSS)
    return ", ".join(f"{k} {metrics[k]:.4g}" for k in keys if k in metrics)
