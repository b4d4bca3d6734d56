"""The configuration of one cell: what `d2bench train` / `infer` read, what a study expands into.

One schema (pydantic, unknown keys refused) serves the single-run CLI and the study runner, so
a cell of a study is exactly a config file a user could run by hand. Torch-free: the planner
validates and hashes configs on machines without a GPU stack.

Defaults are the paper's Table 1 protocol (the original's training and inference) on DAVIS;
the tiny model and the synthetic data are chosen explicitly (see ``studies/smoke.yaml``).
"""

from __future__ import annotations

import difflib
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from .names import (
    DEFAULT_ACTIVATION,
    canonical_activation,
    canonical_variant_name,
    takes_activation,
)
from .yaml_files import YamlFileError, read_yaml_file

Precision = Literal["fp32", "bf16", "fp16"]
#: The dtype of the sampling operator under autocast (d2bench.layers.SampledConv3d).
SamplingPrecision = Literal["fp32", "autocast"]
#: How a training clip is drawn from its window (d2bench.data.windows): the original's first.
ClipSampling = Literal["random-sorted", "consecutive"]
#: Where inference clips start: every multiple of gap (the original's) or until one reaches the end.
ClipStarts = Literal["every-gap", "until-end"]
#: What the clips covering a frame average: logits (the original's) or probabilities.
ScoreAverage = Literal["logits", "probabilities"]
Backbone = Literal["csn152", "csn50", "tiny"]

#: The largest seed (torch and numpy seed from 64-bit integers; beyond is surely a typo).
MAX_SEED = 2**63 - 1
#: Device names torch knows, checked without importing torch: auto, cpu, mps, cuda[:N], xpu[:N].
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d{1,2})?|xpu(:\d{1,2})?)$")
DEVICE_FORMS = "auto, cpu, mps, cuda, cuda:N, xpu, xpu:N"
#: The decoder's refinement blocks (d2bench.models.REFINEMENT_BLOCKS, named here without torch).
DECODER_BLOCKS: tuple[str, ...] = ("rf3", "rf2", "rf1")


def _refuse_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"must be a number, not {str(value).lower()}")
    return value


#: A finite float (``allow_inf_nan=False`` below) that is not a YAML boolean. Numeric strings stay
#: accepted: PyYAML reads ``1e-5`` (no dot) as a string, and that is what people write.
Real = Annotated[float, BeforeValidator(_refuse_bool)]
#: Ints are strict: ``epochs: 1.0e+12`` or ``epochs: true`` are refused, not converted.
Int = StrictInt
Seed = Annotated[StrictInt, Field(ge=0, le=MAX_SEED)]
#: One side of a training frame size, in pixels.
FrameSide = Annotated[StrictInt, Field(ge=1, le=8192)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelConfig(_Strict):
    """The network: backbone, decoder width, conv variant and where it goes."""

    backbone: Backbone = "csn152"
    #: Channel multiplier of the tiny backbone (ignored by csn152/csn50).
    tiny_width: Int = Field(16, ge=4, le=256)
    decoder_channels: Int = Field(256, ge=8, le=4096)
    variant: str = "baseline"
    #: Dilation activation for the D² variants; None = the paper's default (1+elu).
    activation: str | None = None
    #: Decoder refinement blocks that receive the variant (paper rf1/rf2 = the two deepest).
    replace_blocks: tuple[str, ...] = ("rf3", "rf2")
    #: "none" (random init) or a path to a state dict (.pt/.pth) or the VMZ Caffe2 .pkl.
    weights: str = "none"
    #: Recompute the deformation branch in backward (saves memory, as the original did).
    checkpoint_branch: StrictBool = True
    #: Under autocast (train/infer precision fp16 or bf16), the DCN/D² sampling operator runs
    #: in "fp32" (as released: the original's operator upcast its inputs to float32) or in the
    #: autocast dtype ("autocast", half the bytes to read). Coordinates, modulation and the
    #: operator's accumulation are float32 either way. No effect at fp32 or on other variants.
    sampling_precision: SamplingPrecision = "fp32"

    @field_validator("replace_blocks")
    @classmethod
    def _known_blocks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for block in value:
            if block.split(".", 1)[0] not in DECODER_BLOCKS:
                raise ValueError(
                    f"unknown decoder block {block!r}; allowed: {', '.join(DECODER_BLOCKS)} "
                    "(or a dotted path inside one)"
                )
        return value

    @field_validator("variant")
    @classmethod
    def _known_variant(cls, value: str) -> str:
        return canonical_variant_name(value)

    @field_validator("activation")
    @classmethod
    def _known_activation(cls, value: str | None) -> str | None:
        return None if value is None else canonical_activation(value)

    def describe(self) -> str:
        """The variant as a log line names it; a D² variant with its dilation activation (the
        activation rows of a study differ in nothing else)."""
        if not takes_activation(self.variant):
            return self.variant
        return f"{self.variant} (activation {self.activation or DEFAULT_ACTIVATION})"

    @model_validator(mode="after")
    def _activation_needs_a_d2_variant(self) -> ModelConfig:
        if self.activation is not None and not takes_activation(self.variant):
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
    clip_len: Int = Field(8, ge=1, le=256)
    #: Training clip for frame i is drawn from [i - window, i + window).
    window: Int = Field(4, ge=1, le=1024)
    #: "random-sorted" (as released): sorted(random.choices(window truncated at the video's
    #: ends, k=clip_len)), drawn once per dataset build from train.seed and the DDP rank, so
    #: frames can repeat; "consecutive": clip_len consecutive frames, the window shifted inside
    #: the video (no repeats, always in order, always holding frame i). Neither is a bug of the
    #: original: a protocol choice.
    clip_sampling: ClipSampling = "random-sorted"
    #: Frames are resized to (H, W) for training; None keeps the native size.
    train_size: tuple[FrameSide, FrameSide] | None = (480, 854)
    pad_multiple: Int = Field(32, ge=1, le=1024)
    num_workers: Int = Field(2, ge=0, le=256)

    @field_validator("root")
    @classmethod
    def _names_a_folder(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name the data folder; it is empty")
        return value

    @model_validator(mode="after")
    def _clip_fits_the_window(self) -> DataConfig:
        if self.clip_len > 2 * self.window:
            raise ValueError(
                f"clip_len {self.clip_len} does not fit the window of ±{self.window} frames "
                f"(at most 2·window = {2 * self.window}); raise window or lower clip_len"
            )
        return self


class TrainConfig(_Strict):
    """Optimisation as the original: Adam, StepLR, clipping, AMP.

    ``precision``: "fp16" (as released: float16 autocast with a GradScaler), "bf16" (bfloat16
    autocast, no scaler) or "fp32". Reduced precisions apply on CUDA; on a CPU the cell runs in
    float32 and logs a warning (our CPU operators compute in float32/float64 only).
    """

    epochs: Int = Field(20, ge=0, le=10_000)
    batch_size: Int = Field(2, ge=1, le=4096)
    lr: Real = Field(1e-5, gt=0, le=10)
    weight_decay: Real = Field(0.0, ge=0, le=10)
    lr_step_epochs: Int = Field(10, ge=1, le=10_000)
    lr_gamma: Real = Field(0.1, gt=0, le=1)
    clip_grad_norm: Real | None = Field(10.0, gt=0, le=1e6)
    precision: Precision = "fp16"
    #: Cap on optimiser steps per epoch (None = one pass over the training clips).
    max_steps_per_epoch: Int | None = Field(None, ge=1, le=10_000_000)
    channels_last: StrictBool = True
    seed: Seed = 0
    #: GPUs for data-parallel training of this cell (torchrun/DDP on one node).
    gpus: Int = Field(1, ge=0, le=64)
    #: Validate on ``data.val_set`` after every this many epochs (0 = never): the same clip
    #: inference and J&F as the final evaluation, its curve logged as ``val/*``, and the weights
    #: with the best validation J&F kept beside the last ones (the original validates after
    #: every epoch and its test scripts load that best checkpoint by default).
    validate_every_epochs: Int = Field(0, ge=0, le=10_000)
    #: Validate on the first this many sequences of ``data.val_set`` only (None = all of them).
    validate_max_sequences: Int | None = Field(None, ge=1, le=100_000)


class InferConfig(_Strict):
    """Clip inference as the original: 8-frame clips every ``gap`` frames, averaged scores."""

    clip_len: Int = Field(8, ge=1, le=256)
    gap: Int = Field(5, ge=1, le=256)
    threshold: Real = Field(0.5, gt=0, lt=1)
    #: As train.precision: "fp16" as released (float16 autocast at test time too).
    precision: Precision = "fp16"
    batch_size: Int = Field(1, ge=1, le=4096)
    #: "every-gap" (as released): clips start at 0, gap, 2·gap, … < T; "until-end": the last
    #: clip is the first that reaches the end (fewer tail clips). It avoids no bug of the
    #: original while padded frames do not vote; with them voting it shrinks the reach of the
    #: original's bug that lets repeated end frames all vote for the last frame.
    clip_starts: ClipStarts = "every-gap"
    #: Whether the repeated last frames that fill a clip past the end vote for the last frame.
    #: False (our fix of the original's bug: they would all vote for the last frame); True as
    #: released.
    padded_frames_vote: bool = False
    #: "logits" (as released): mean logit over the clips covering a frame, then sigmoid;
    #: "probabilities": mean of the clips' sigmoids (what the paper's text says; not a bug).
    average: ScoreAverage = "logits"
    #: Save the dilation/modulation maps of every replaced layer for this sequence (Fig. 4).
    save_maps_for: str | None = None


class MeasureConfig(_Strict):
    """What the cell measures after training."""

    jf: StrictBool = True
    fps: StrictBool = True
    memory: StrictBool = True
    oob: StrictBool = True
    protocol: Literal["davis16", "semi", "unsupervised"] = "davis16"
    #: Clips excluded from the FPS timing at the start of the measurement.
    warmup_clips: Int = Field(2, ge=0, le=10_000)
    #: Validation videos timed for FPS/memory (None = all of them, the paper's protocol).
    fps_videos: Int | None = Field(None, ge=1, le=100_000)


class CellConfig(_Strict):
    """One fully resolved run: train, infer, evaluate, measure."""

    model: ModelConfig = ModelConfig()
    data: DataConfig
    train: TrainConfig = TrainConfig()
    infer: InferConfig = InferConfig()
    measure: MeasureConfig = MeasureConfig()
    #: "auto" = cuda when available, else cpu.
    device: str = "auto"

    @field_validator("device")
    @classmethod
    def _device_torch_knows(cls, value: str) -> str:
        if not DEVICE_PATTERN.match(value):
            raise ValueError(f"unknown device {value!r}; allowed: {DEVICE_FORMS}")
        return value


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the key path and what is allowed."""


def unknown_key_message(key: object, allowed: tuple[str, ...] | list[str]) -> str:
    """``unknown key; allowed: ...``, with the closest allowed key when one is near."""
    close = difflib.get_close_matches(str(key), list(allowed), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key{hint}; allowed: {', '.join(allowed)}"


def _model_class(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (``X``, ``X | None``, ``list[X]``...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        found = _model_class(argument)
        if found is not None:
            return found
    return None


def allowed_keys(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> tuple[str, ...] | None:
    """The keys of the mapping at ``loc`` (a pydantic error location) under ``model``."""
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int):  # a list index: the item has the list's model
            continue
        if current is None or part not in current.model_fields:
            return None
        current = _model_class(current.model_fields[part].annotation)
    return tuple(current.model_fields) if current is not None else None


def _annotated_constraints(annotation: Any) -> list[Any]:
    """The constraints of an ``Annotated[int, Field(ge=..)]`` item type (empty for others)."""
    found: list[Any] = []
    for extra in getattr(annotation, "__metadata__", ()):
        found += list(getattr(extra, "metadata", [extra]))
    return found


def _constraints(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> list[Any]:
    """The bounds (annotated-types ``Ge``, ``Le``...) of the value at ``loc``: a field, or an
    item of a list field such as ``seeds.1``. Empty where they cannot be found."""
    holder: type[BaseModel] | None = model
    annotation: Any = None
    constraints: list[Any] = []
    for part in loc:
        if isinstance(part, int):  # an item of the list field reached so far
            items = typing.get_args(annotation)
            annotation = items[0] if len(items) == 1 else None
            constraints = _annotated_constraints(annotation)
            holder = _model_class(annotation)
            continue
        if holder is None or part not in holder.model_fields:
            return []
        info = holder.model_fields[part]
        annotation, constraints = info.annotation, list(info.metadata)
        holder = _model_class(annotation)
    return constraints


def _bound_text(value: Any) -> str:
    return (
        "2**63-1" if value == MAX_SEED else f"{value:g}" if isinstance(value, float) else str(value)
    )


_SYMBOLS = (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"))


def _range_message(item: Any, model: type[BaseModel] | None) -> str:
    """``must be ≥ 1 and ≤ 256``: the field's bounds (both, not only the one hit) when known."""
    constraints = _constraints(model, tuple(item["loc"]))
    words = [
        f"{symbol} {_bound_text(getattr(constraint, name))}"
        for constraint in constraints
        for name, symbol in _SYMBOLS
        if getattr(constraint, name, None) is not None
    ]
    if not words:  # inside a tuple: the error's own bound
        context = item.get("ctx") or {}
        words = [f"{symbol} {_bound_text(context[name])}" for name, symbol in _SYMBOLS
                 if name in context]  # fmt: skip
    return f"must be {' and '.join(words)}"


_PLAIN_MESSAGES = {
    "int_type": "must be an integer (not a float or a boolean)",
    "int_from_float": "must be an integer (not a float or a boolean)",
    "bool_type": "must be true or false",
    "finite_number": "must be a finite number",
}
_RANGE_TYPES = ("greater_than_equal", "greater_than", "less_than_equal", "less_than")


def _problem(item: Any, model: type[BaseModel] | None) -> str:
    """What is wrong with one value, in words a YAML author reads (with the value when short)."""
    kind = item["type"]
    if kind == "value_error":
        return str(item["msg"]).removeprefix("Value error, ")
    message = _PLAIN_MESSAGES.get(kind) or str(item["msg"])
    if kind in _RANGE_TYPES:
        message = _range_message(item, model)
    value = item.get("input")
    if kind != "missing" and isinstance(value, str | int | float | bool):
        text = repr(value)
        if len(text) <= 60:
            message += f"; got {text}"
    return message


def describe_validation_error(
    error: ValidationError,
    source: str,
    model: type[BaseModel] | None = None,
    prefix: str = "",
    hints: dict[str, str] | None = None,
) -> str:
    """One line per problem, ``source: key.path: what is wrong; allowed: ...``.

    ``model`` (the validated class) lets an unknown key list the keys allowed where it stands;
    ``prefix`` is the path of the validated mapping inside a larger file (``rows[2]``), and
    ``hints`` adds a note to the problem at a path (which ``${VAR}`` an empty value came from).
    """
    lines = []
    for item in error.errors():
        parts = [prefix] if prefix else []
        parts += [str(part) for part in item["loc"]]
        path = ".".join(parts) or "(top level)"
        if item["type"] == "extra_forbidden":
            allowed = allowed_keys(model, tuple(item["loc"][:-1]))
            key = item["loc"][-1]
            message = unknown_key_message(key, allowed) if allowed else "unknown key"
        else:
            message = _problem(item, model)
        if hints and path in hints:
            message += f" ({hints[path]})"
        lines.append(f"{source}: {path}: {message}")
    return "\n".join(lines)


def parse_cell_config(data: dict[str, Any], source: str = "config") -> CellConfig:
    """Validate a mapping into a :class:`CellConfig` or raise :class:`ConfigError`."""
    try:
        return CellConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, source, CellConfig)) from None


def load_cell_config(path: str | Path) -> CellConfig:
    """Read and validate a YAML config file (text only, each key once)."""
    path = Path(path)
    try:
        data = read_yaml_file(path, "config file")
    except YamlFileError as error:
        raise ConfigError(str(error)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return parse_cell_config(data, str(path))


def config_to_dict(config: CellConfig) -> dict[str, Any]:
    """A plain, JSON-ready mapping (tuples as lists) that round-trips through the schema."""
    return config.model_dump(mode="json")
