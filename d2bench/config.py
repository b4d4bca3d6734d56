"""The configuration of one cell: what `d2bench train` / `infer` read, what a study expands into.

One schema (pydantic, unknown keys refused) serves the single-run CLI and the study runner, so
a cell of a study is exactly a config file a user could run by hand. Torch-free: the planner
validates and hashes configs on machines without a GPU stack.

Defaults are the paper's Table 1 protocol (seed-facts §4) on DAVIS; the tiny model and the
synthetic data are chosen explicitly (see ``studies/smoke.yaml``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .names import canonical_activation, canonical_variant_name

Precision = Literal["fp32", "bf16", "fp16"]
#: How a training clip is drawn from its window (d2bench.data.windows): the original's first.
ClipSampling = Literal["random-sorted", "consecutive"]
#: Where inference clips start: every multiple of gap (the original's) or until one reaches the end.
ClipStarts = Literal["every-gap", "until-end"]
#: What the clips covering a frame average: logits (the original's) or probabilities.
ScoreAverage = Literal["logits", "probabilities"]
Backbone = Literal["csn152", "csn50", "tiny"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Strict):
    """The network: backbone, decoder width, conv variant and where it goes."""

    backbone: Backbone = "csn152"
    #: Channel multiplier of the tiny backbone (ignored by csn152/csn50).
    tiny_width: int = Field(16, ge=4, le=256)
    decoder_channels: int = Field(256, ge=8)
    variant: str = "baseline"
    #: Dilation activation for the D² variants; None = the paper's default (1+elu).
    activation: str | None = None
    #: Decoder refinement blocks that receive the variant (paper rf1/rf2 = the two deepest).
    replace_blocks: tuple[str, ...] = ("rf3", "rf2")
    #: "none" (random init) or a path to a state dict (.pt/.pth) or the VMZ Caffe2 .pkl.
    weights: str = "none"
    #: Recompute the deformation branch in backward (saves memory, as the original did).
    checkpoint_branch: bool = True

    @field_validator("variant")
    @classmethod
    def _known_variant(cls, value: str) -> str:
        return canonical_variant_name(value)

    @field_validator("activation")
    @classmethod
    def _known_activation(cls, value: str | None) -> str | None:
        return None if value is None else canonical_activation(value)

    @model_validator(mode="after")
    def _activation_needs_a_d2_variant(self) -> ModelConfig:
        if self.activation is not None and not self.variant.startswith("d2conv3d"):
            raise ValueError(
                f"activation applies to the D²Conv3D variants (d2conv3d_i..iv) only; "
                f"variant {self.variant!r} has no dilation to activate: remove activation"
            )
        return self


class DataConfig(_Strict):
    """Where the DAVIS-layout data lives and how clips are cut from it."""

    #: DAVIS root (holding JPEGImages/, Annotations/, ImageSets/); "${DAVIS_ROOT}" in studies.
    root: str
    train_set: str = "2017/train"
    val_set: str = "2016/val"
    clip_len: int = Field(8, ge=1)
    #: Training clip for frame i is drawn from [i - window, i + window).
    window: int = Field(4, ge=1)
    #: "random-sorted" (as released): sorted(random.choices(window truncated at the video's
    #: ends, k=clip_len)), drawn once per dataset build from train.seed and the DDP rank, so
    #: frames can repeat; "consecutive": clip_len consecutive frames, the window shifted inside
    #: the video (no repeats, always in order, always holding frame i). Neither is a bug of
    #: seed-facts §5: a protocol choice.
    clip_sampling: ClipSampling = "random-sorted"
    #: Frames are resized to (H, W) for training; None keeps the native size.
    train_size: tuple[int, int] | None = (480, 854)
    pad_multiple: int = Field(32, ge=1)
    num_workers: int = Field(2, ge=0)

    @model_validator(mode="after")
    def _clip_fits_the_window(self) -> DataConfig:
        if self.clip_len > 2 * self.window:
            raise ValueError(
                f"clip_len {self.clip_len} does not fit the window of ±{self.window} frames "
                f"(at most 2·window = {2 * self.window}); raise window or lower clip_len"
            )
        return self


class TrainConfig(_Strict):
    """Optimisation (seed-facts §4): Adam, StepLR, clipping, AMP."""

    epochs: int = Field(20, ge=0)
    batch_size: int = Field(2, ge=1)
    lr: float = Field(1e-5, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    lr_step_epochs: int = Field(10, ge=1)
    lr_gamma: float = Field(0.1, gt=0)
    clip_grad_norm: float | None = Field(10.0, gt=0)
    precision: Precision = "bf16"
    #: Cap on optimiser steps per epoch (None = one pass over the training clips).
    max_steps_per_epoch: int | None = Field(None, ge=1)
    channels_last: bool = True
    seed: int = 0
    #: GPUs for data-parallel training of this cell (torchrun/DDP on one node).
    gpus: int = Field(1, ge=0)


class InferConfig(_Strict):
    """Clip inference (seed-facts §4): 8-frame clips every ``gap`` frames, averaged scores."""

    clip_len: int = Field(8, ge=1)
    gap: int = Field(5, ge=1)
    threshold: float = Field(0.5, gt=0, lt=1)
    precision: Precision = "bf16"
    batch_size: int = Field(1, ge=1)
    #: "every-gap" (as released): clips start at 0, gap, 2·gap, … < T; "until-end": the last
    #: clip is the first that reaches the end (fewer tail clips). It avoids no bug of seed-facts
    #: §5 while padded frames do not vote; with them voting it shrinks that bug's reach.
    clip_starts: ClipStarts = "every-gap"
    #: Whether the repeated last frames that fill a clip past the end vote for the last frame.
    #: False (our fix of seed-facts §5: they would all vote for the last frame); True as released.
    padded_frames_vote: bool = False
    #: "logits" (as released): mean logit over the clips covering a frame, then sigmoid;
    #: "probabilities": mean of the clips' sigmoids (what the paper's text says; no §5 bug).
    average: ScoreAverage = "logits"
    #: Save the dilation/modulation maps of every replaced layer for this sequence (Fig. 4).
    save_maps_for: str | None = None


class MeasureConfig(_Strict):
    """What the cell measures after training."""

    jf: bool = True
    fps: bool = True
    memory: bool = True
    oob: bool = True
    protocol: Literal["davis16", "semi", "unsupervised"] = "davis16"
    #: Clips excluded from the FPS timing at the start of the measurement.
    warmup_clips: int = Field(2, ge=0)
    #: Validation videos timed for FPS/memory (None = all of them, the paper's protocol).
    fps_videos: int | None = Field(None, ge=1)


class CellConfig(_Strict):
    """One fully resolved run: train, infer, evaluate, measure."""

    model: ModelConfig = ModelConfig()
    data: DataConfig
    train: TrainConfig = TrainConfig()
    infer: InferConfig = InferConfig()
    measure: MeasureConfig = MeasureConfig()
    #: "auto" = cuda when available, else cpu.
    device: str = "auto"


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the key path and what is allowed."""


def describe_validation_error(error: ValidationError, source: str) -> str:
    """One line per problem: ``key.path: message`` — what users need to fix a YAML file."""
    lines = [f"{source}: invalid configuration"]
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"  {path}: {message}")
    return "\n".join(lines)


def parse_cell_config(data: dict[str, Any], source: str = "config") -> CellConfig:
    """Validate a mapping into a :class:`CellConfig` or raise :class:`ConfigError`."""
    try:
        return CellConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, source)) from None


def load_cell_config(path: str | Path) -> CellConfig:
    """Read and validate a YAML config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return parse_cell_config(data, str(path))


def config_to_dict(config: CellConfig) -> dict[str, Any]:
    """A plain, JSON-ready mapping (tuples as lists) that round-trips through the schema."""
    return config.model_dump(mode="json")
