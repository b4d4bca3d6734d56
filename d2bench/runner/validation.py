"""The per-epoch validation pass: the final evaluation's clip inference and J&F, during training.

The original validates on DAVIS 2016 val after every epoch and its test scripts load the weights
that scored best there by default. To be able to select the same checkpoint, a pass runs
exactly what the cell's final evaluation runs (:func:`~d2bench.engine.inference.predict_video`
under ``config.infer``, masks written as PNGs, :func:`~d2bench.metrics.davis.evaluate` under
``config.measure.protocol``) on ``data.val_set``, optionally on its first sequences only. So on
the full split a checkpoint's validation J&F is its final J&F, bit for bit. It draws no random
numbers, so validating leaves the training's RNG stream, and a resume's exactness, untouched.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch import nn

from ..core.config import CellConfig
from ..core.contract import VAL_F, VAL_J, VAL_JF


class Validator:
    """Scores a model on the cell's validation split; masks go to a scratch folder."""

    def __init__(self, config: CellConfig, scratch: Path, device: torch.device) -> None:
        from ..data import list_sequences

        self.config = config
        self.scratch = scratch
        self.device = device
        sequences = list_sequences(config.data.root, config.data.val_set)
        limit = config.train.validate_max_sequences
        self.sequences = sequences[:limit] if limit is not None else sequences

    def __call__(self, model: nn.Module) -> dict[str, float]:
        """``val/jf_mean``, ``val/j_mean``, ``val/f_mean`` of ``model`` (left in eval mode)."""
        from ..data import frame_names, read_frames
        from ..engine.inference import predict_video, write_masks
        from ..metrics.davis import evaluate

        root, infer = self.config.data.root, self.config.infer
        channels_last = self.config.train.channels_last and self.device.type == "cuda"
        shutil.rmtree(self.scratch, ignore_errors=True)
        for sequence in self.sequences:
            frames = read_frames(root, sequence)
            probabilities = predict_video(
                model, frames, infer, self.device, channels_last=channels_last
            )
            names = frame_names(root, sequence)
            write_masks(probabilities, infer.threshold, self.scratch / sequence, names)
        result = evaluate(
            root,
            self.scratch,
            protocol=self.config.measure.protocol,
            imageset=self.config.data.val_set,
            workers=1,
            sequences=list(self.sequences),
        )
        scores = result["global"]
        return {
            VAL_JF: float(scores["J&F-Mean"]),
            VAL_J: float(scores["J-Mean"]),
            VAL_F: float(scores["F-Mean"]),
        }
