"""The training loop of one cell (the original's protocol), resumable to the exact step.

Adam, StepLR per epoch, the Lovász hinge per clip, gradient-norm clipping at every precision (the
original skipped it at fp32), autocast bf16/fp16 on CUDA (a GradScaler for fp16 only; what a step
the scaler skips means for the curve and the LR schedule: :mod:`d2bench.engine.amp`). The
order of training clips is a pure function of (seed, epoch), and checkpoints record the epoch
and the batches done in it plus every RNG state, so a run killed and resumed from its newest
checkpoint produces the same weights as one that never stopped (on deterministic kernels).
Under ``torchrun`` it trains data-parallel (DDP): each rank takes its slice of every global batch
and rank 0 alone writes checkpoints and reports metrics.

What a mid-epoch resume needs, and where it comes from: the epoch's batch order is recomputed
from (seed, epoch) and its first ``batches_done`` batches skipped; model, optimiser, scheduler,
scaler and the global RNG states come from the checkpoint. The DataLoader draws its workers' base
seed from a generator of its own, seeded by (seed, epoch), not from the global RNG: otherwise the
resumed epoch's new loader would consume one extra draw and every RNG state after it would
differ from an uninterrupted run's. The curve is committed with each checkpoint (see
:mod:`d2bench.engine.journal`), which is why single-process training also checkpoints every
``checkpoint_every_s`` seconds mid-epoch: the live curve lags by that much at most.

With ``train.validate_every_epochs`` the loop validates at the end of those epochs (see
:mod:`d2bench.runner.validation`), logs ``val/*`` through the same journal (so once across
resumes) and keeps the weights with the best validation J&F as ``best-eEEEE.pt`` beside the
training checkpoints. The best-so-far score and file name live in every training checkpoint, so
a resumed run compares against the same best as one that never stopped; best files that no
committed checkpoint names (a lost attempt's) are removed on resume.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..core.config import CellConfig
from ..core.contract import F_MEAN, J_MEAN, JF_MEAN, VAL_F, VAL_J, VAL_JF
from ..engine.lovasz import lovasz_hinge
from .amp import Amp
from .checkpoint import (
    atomic_torch_save,
    best_checkpoint_name,
    load_newest_intact,
    prune_best,
    restore_rng_state,
    rng_state,
    save_checkpoint,
    seed_everything,
)
from .distributed import DistContext
from .journal import MetricsJournal
from .progress import Progress
from .signals import CellInterrupted, StopFlag

#: Scores a model on the validation split: ``val/jf_mean``, ``val/j_mean``, ``val/f_mean``.
ValidateFn = Callable[[nn.Module], dict[str, float]]

log = logging.getLogger("d2bench.cell.trainer")

#: Seconds of training between mid-epoch checkpoints (the most the committed curve lags behind).
DEFAULT_CHECKPOINT_EVERY_S = 300.0
#: Environment override of :data:`DEFAULT_CHECKPOINT_EVERY_S` (an operator's knob, not the
#: experiment's: it changes when checkpoints are written, never what is trained).
CHECKPOINT_EVERY_ENV = "D2BENCH_CHECKPOINT_EVERY_S"


def checkpoint_interval(seconds: float | None = None) -> float:
    """``seconds``, else ``$D2BENCH_CHECKPOINT_EVERY_S``, else the default."""
    if seconds is not None:
        return float(seconds)
    text = os.environ.get(CHECKPOINT_EVERY_ENV, "").strip()
    try:
        value = float(text) if text else DEFAULT_CHECKPOINT_EVERY_S
    except ValueError:
        raise ValueError(
            f"{CHECKPOINT_EVERY_ENV}={text!r}: expected a number of seconds > 0"
        ) from None
    if not value > 0:
        raise ValueError(f"{CHECKPOINT_EVERY_ENV}={text!r}: expected a number of seconds > 0")
    return value


_SCHEDULER_ORDER_WARNING = re.escape("Detected call of `lr_scheduler.step()` before")

#: What :meth:`Trainer._resume` reads from a checkpoint (one without them cannot be resumed).
RESUME_KEYS = ("model", "optimizer", "scheduler", "scaler", "rng", "epoch", "batches_done",
               "epoch_losses", "steps")  # fmt: skip


@dataclass
class TrainSummary:
    """What the loop did: per-epoch mean loss, optimiser steps, seconds, where it resumed."""

    epoch_losses: list[float] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    resumed_from: str | None = None
    #: The best validation so far: epoch (epochs done), jf_mean, j_mean, f_mean and the file
    #: name of its weights in the checkpoint folder; None when nothing was validated.
    best_val: dict[str, Any] | None = None

    @property
    def final_loss(self) -> float:
        return self.epoch_losses[-1] if self.epoch_losses else math.nan


def epoch_batches(
    num_items: int, batch_size: int, seed: int, epoch: int, max_steps: int | None
) -> list[list[int]]:
    """Global batches of one epoch: a permutation seeded by (seed, epoch), last partial batch
    dropped (so every rank of a DDP run gets equal work), capped at ``max_steps``."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(num_items, generator=generator).tolist()
    batches = [order[i : i + batch_size] for i in range(0, num_items - batch_size + 1, batch_size)]
    if not batches and order:  # fewer items than one batch: train on what there is
        batches = [order]
    return batches[:max_steps] if max_steps is not None else batches


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        "frames": torch.stack([item["frames"] for item in items]),
        "masks": torch.stack([item["masks"] for item in items]),
        "sequence": [item["sequence"] for item in items],
    }


class Trainer:
    """Trains ``model`` on ``dataset`` under ``config``, checkpointing into ``checkpoint_dir``."""

    def __init__(
        self,
        config: CellConfig,
        model: nn.Module,
        dataset: Dataset,
        checkpoint_dir: Path,
        device: torch.device,
        *,
        journal: MetricsJournal | None = None,
        handle_signals: bool = True,
        show_progress: bool = True,
        checkpoint_every_s: float | None = None,
        amp: Amp | None = None,
        validator: ValidateFn | None = None,
    ) -> None:
        """``amp`` replaces the mixed-precision policy of ``train.precision`` on ``device``
        (tests use it to run the fp16 GradScaler on a CPU)."""
        self.config = config
        self.validator = validator
        self.train_cfg = config.train
        self.dataset = dataset
        self.checkpoint_dir = checkpoint_dir
        self.device = device
        self.journal = journal or MetricsJournal()
        self.checkpoint_every_s = checkpoint_interval(checkpoint_every_s)
        self.handle_signals = handle_signals
        self.show_progress = show_progress
        self.dist = DistContext.from_environment(device)
        self.channels_last = self.train_cfg.channels_last and device.type == "cuda"
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed clip shapes: pick the fastest convs

        seed_everything(self.train_cfg.seed)
        model.to(device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last_3d)
        self.model = model
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(
            self.parameters, lr=self.train_cfg.lr, weight_decay=self.train_cfg.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.StepLR(
            self.optimizer, step_size=self.train_cfg.lr_step_epochs, gamma=self.train_cfg.lr_gamma
        )
        self.amp = amp or Amp.for_training(device, self.train_cfg.precision)
        self.network = self.dist.wrap(model)

    # -- checkpoints ---------------------------------------------------------------------------

    def _state(self, epoch: int, batches_done: int, summary: TrainSummary) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.amp.state_dict(),
            "rng": rng_state(),
            "epoch": epoch,
            "batches_done": batches_done,
            "epoch_losses": list(summary.epoch_losses),
            "steps": summary.steps,
            "partial_epoch_loss": list(self._epoch_losses),
            "curve": self.journal.state(),
            "best_val": dict(summary.best_val) if summary.best_val else None,
        }

    def _save(self, epoch: int, batches_done: int, summary: TrainSummary) -> Path | None:
        """Checkpoint, then commit the curve up to here (in that order: see the journal)."""
        path = None
        if self.dist.is_main:
            state = self._state(epoch, batches_done, summary)
            path = save_checkpoint(self.checkpoint_dir, state, epoch, batches_done)
            self.journal.commit()
            best = summary.best_val
            prune_best(self.checkpoint_dir, best["file"] if best else None)
        self._last_save = time.monotonic()
        self.dist.barrier()
        return path

    def _resume(self, summary: TrainSummary) -> tuple[int, int]:
        """Continue from the newest checkpoint that loads (damaged newer ones are skipped)."""
        found = load_newest_intact(
            self.checkpoint_dir, required=RESUME_KEYS, quarantine=self.dist.is_main
        )
        if found is None:
            if self.dist.is_main:
                self.journal.restore(None)
                prune_best(self.checkpoint_dir, None)  # a lost attempt's, if any
            return 0, 0
        path, state = found
        if self.dist.is_main and "curve" in state:  # older checkpoints: leave the curve as is
            self.journal.restore(state["curve"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.amp.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"])
        summary.epoch_losses = list(state["epoch_losses"])
        summary.steps = int(state["steps"])
        summary.resumed_from = path.name
        summary.best_val = self._restore_best(state.get("best_val"))
        self._epoch_losses = list(state.get("partial_epoch_loss", []))
        return int(state["epoch"]), int(state["batches_done"])

    def _restore_best(self, best: dict[str, Any] | None) -> dict[str, Any] | None:
        """The checkpoint's best validation, if its weights file is still there."""
        if best is not None and not (self.checkpoint_dir / best["file"]).is_file():
            log.warning(
                "best-validation weights %s are missing; the best is chosen again from the "
                "epochs validated from now on",
                best["file"],
            )
            best = None
        if self.dist.is_main:
            prune_best(self.checkpoint_dir, best["file"] if best else None)
        return dict(best) if best else None

    def _validate(self, epochs_done: int, summary: TrainSummary) -> None:
        """Validate when due; keep the weights when they beat the best so far (strictly)."""
        every = self.train_cfg.validate_every_epochs
        if self.validator is None or every == 0 or epochs_done % every:
            return
        if not self.dist.is_main:
            return
        scores = self.validator(self.model)
        self._emit(scores, epochs_done)
        best = summary.best_val
        if best is not None and scores[VAL_JF] <= best[JF_MEAN]:
            return
        name = best_checkpoint_name(epochs_done)
        state = {"model": self.model.state_dict(), "epoch": epochs_done, "val": scores}
        atomic_torch_save(state, self.checkpoint_dir / name)
        summary.best_val = {
            "epoch": epochs_done,
            JF_MEAN: scores[VAL_JF],
            J_MEAN: scores[VAL_J],
            F_MEAN: scores[VAL_F],
            "file": name,
        }

    # -- the loop ------------------------------------------------------------------------------

    def _step(self, batch: dict[str, Any]) -> dict[str, float]:
        """One optimiser step; its metrics (loss, and under fp16 the scale and whether the
        scaler skipped the step)."""
        frames = batch["frames"].to(self.device, non_blocking=True)
        masks = batch["masks"].to(self.device, non_blocking=True)
        if self.channels_last:
            frames = frames.contiguous(memory_format=torch.channels_last_3d)
        with self.amp.autocast():
            logits = self.network(frames)
        loss = lovasz_hinge(logits.float(), masks)
        result = self.amp.step(loss, self.optimizer, self.parameters, self.train_cfg.clip_grad_norm)
        metrics = {"train/loss": float(loss.detach())}
        if self.amp.scaling:
            metrics["train/loss_scale"] = result.scale
            metrics["train/skipped_step"] = 0.0 if result.applied else 1.0
        return metrics

    def _emit(self, metrics: dict[str, float], step: int) -> None:
        if self.dist.is_main:
            self.journal.record(metrics, step)

    def _checkpoint_due(self) -> bool:
        """Time for a mid-epoch checkpoint? Single-process only: under DDP the ranks' clocks
        would disagree on when, and rank 0 would wait alone at the barrier."""
        if self.dist.world_size > 1:
            return False
        return time.monotonic() - self._last_save >= self.checkpoint_every_s

    def _loader(self, batches: list[list[int]], epoch: int) -> DataLoader:
        shards = [self.dist.shard(batch) for batch in batches]
        workers = self.config.data.num_workers
        seeds = torch.Generator().manual_seed(self.train_cfg.seed * 100_003 + epoch)
        return DataLoader(
            self.dataset,
            batch_sampler=shards,
            num_workers=workers,
            collate_fn=collate,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            generator=seeds,  # keeps the global RNG untouched (see the module docstring)
        )

    def fit(self) -> TrainSummary:
        """Train to ``train.epochs``, resuming from the newest checkpoint if there is one."""
        summary = TrainSummary()
        self._epoch_losses: list[float] = []
        start_epoch, skip = self._resume(summary)
        started = time.perf_counter()
        self._last_save = time.monotonic()
        global_batch = self.train_cfg.batch_size * self.dist.world_size
        with StopFlag(self.handle_signals) as stop:
            for epoch in range(start_epoch, self.train_cfg.epochs):
                batches = epoch_batches(
                    len(self.dataset),
                    global_batch,
                    self.train_cfg.seed,
                    epoch,
                    self.train_cfg.max_steps_per_epoch,
                )
                self.model.train()
                progress = Progress(
                    f"epoch {epoch + 1}/{self.train_cfg.epochs}",
                    len(batches),
                    enabled=self.show_progress and self.dist.is_main,
                )
                if skip == 0:
                    self._epoch_losses = []
                tick = time.perf_counter()
                for index, batch in enumerate(self._loader(batches[skip:], epoch), start=skip):
                    step_metrics = self._step(batch)
                    loss = step_metrics["train/loss"]
                    summary.steps += 1
                    self._epoch_losses.append(loss)
                    now = time.perf_counter()
                    clips_per_s = global_batch / max(now - tick, 1e-9)
                    tick = now
                    lr = self.optimizer.param_groups[0]["lr"]
                    self._emit(
                        {**step_metrics, "train/lr": lr, "train/clips_per_s": clips_per_s},
                        summary.steps,
                    )
                    progress.update(index + 1, loss=loss, lr=lr, clips_per_s=clips_per_s)
                    if index + 1 == len(batches):
                        continue  # the epoch's end checkpoints below
                    if stop:
                        path = self._save(epoch, index + 1, summary)
                        raise CellInterrupted(stop.received or 0, str(path))
                    if self._checkpoint_due():
                        self._save(epoch, index + 1, summary)
                skip = 0
                with warnings.catch_warnings():
                    # Under fp16 the scaler may have skipped every step of the epoch; the
                    # per-epoch schedule still moves on (see d2bench.engine.amp), so torch's
                    # warning about a schedule stepped before the optimiser is noise here.
                    warnings.filterwarnings("ignore", message=_SCHEDULER_ORDER_WARNING)
                    self.scheduler.step()
                mean_loss = sum(self._epoch_losses) / max(len(self._epoch_losses), 1)
                summary.epoch_losses.append(mean_loss)
                self._emit({"epoch/loss": mean_loss}, epoch + 1)
                self._validate(epoch + 1, summary)
                path = self._save(epoch + 1, 0, summary)
                if stop:
                    raise CellInterrupted(stop.received or 0, str(path))
        summary.seconds = time.perf_counter() - started
        return summary
