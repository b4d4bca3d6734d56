"""Mixed precision of a cell: which autocast dtype runs where, and the fp16 training step.

``fp16`` is the precision the paper's numbers were produced with (``precision=16``): float16
autocast with a GradScaler in training, float16 autocast at inference. ``bf16`` autocasts to
bfloat16 (its range is float32's, so no scaler). Autocast applies on CUDA only: on a CPU a
reduced precision runs in float32, with a warning, because our CPU operators compute in
float32/float64 only and half convolutions on a CPU are slow emulations; the cell's records name
the dtype it actually used (float32). A test may still build :class:`Amp` for the CPU by hand to
exercise the scaler there.

The fp16 step (:meth:`Amp.step`): backward of the scaled loss, ``unscale_`` (so clipping sees
true gradient norms), clipping, then ``scaler.step``, which skips the optimiser step when a
gradient is inf/NaN, and ``scaler.update``, which then halves the scale. What a skipped step
does to the rest of training, on purpose:

- it still counts as a step: it consumed its batch, ``train/loss`` records its (finite) loss, the
  step counter and ``max_steps_per_epoch`` advance, and the curve's x-axis stays the number of
  batches seen; ``train/skipped_step`` is 1 for it (0 otherwise) and ``train/loss_scale`` shows
  the scale, so skipped steps are visible in the curve;
- the LR schedule is per epoch (StepLR stepped at each epoch's end), so a skipped step never
  shifts it; the epoch's boundary stays where it is.

The scaler's state (scale and growth tracker) goes into every checkpoint and is restored on
resume, so a resumed run scales exactly as one that never stopped.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

#: The autocast dtype of each reduced precision.
AUTOCAST_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: Device types whose autocast a cell uses.
AUTOCAST_DEVICES = ("cuda",)

#: A child of the cell runner's logger, so that the warning lands in ``cell.log``.
log = logging.getLogger("d2bench.cell.precision")
_warned: set[tuple[str, str, str]] = set()


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The dtype autocast lowers to for ``precision`` on ``device``; None for full precision."""
    if precision not in AUTOCAST_DTYPES and precision != "fp32":
        raise ValueError(f"unknown precision {precision!r}; allowed: fp32, bf16, fp16")
    if device.type in AUTOCAST_DEVICES:
        return AUTOCAST_DTYPES.get(precision)
    return None


def warn_if_full_precision(device: torch.device, precision: str, key: str) -> None:
    """Warn (once per process, key and device type) that ``precision`` runs as float32 here."""
    if precision == "fp32" or device.type in AUTOCAST_DEVICES:
        return
    seen = (key, precision, device.type)
    if seen in _warned:
        return
    _warned.add(seen)
    log.warning(
        "%s=%s on device %s: autocast is used on CUDA only (our %s operators compute in "
        "float32/float64), so this runs in float32 and records dtype float32",
        key,
        precision,
        device.type,
        device.type.upper(),
    )


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast for bf16/fp16 on CUDA; full precision elsewhere (see the module docstring)."""
    dtype = autocast_dtype(device, precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@dataclass
class StepResult:
    """What one optimiser step did."""

    #: False when the GradScaler found inf/NaN gradients and skipped the optimiser step.
    applied: bool
    #: The loss scale used for this step's backward (1.0 without a scaler).
    scale: float


class Amp:
    """Autocast and (fp16 only) a GradScaler for one device type and dtype.

    ``dtype=None`` is full precision (the scaler is then disabled and keeps no state).
    """

    def __init__(
        self, device_type: str, dtype: torch.dtype | None, *, init_scale: float = 2.0**16
    ) -> None:
        self.device_type = device_type
        self.dtype = dtype
        self.scaler = torch.amp.GradScaler(
            device_type, init_scale=init_scale, enabled=dtype == torch.float16
        )

    @classmethod
    def for_training(cls, device: torch.device, precision: str) -> Amp:
        """The policy of ``train.precision`` on ``device`` (warns where it runs as float32)."""
        warn_if_full_precision(device, precision, "train.precision")
        return cls(device.type, autocast_dtype(device, precision))

    @property
    def scaling(self) -> bool:
        return self.scaler.is_enabled()

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def step(
        self,
        loss: Tensor,
        optimizer: torch.optim.Optimizer,
        parameters: Iterable[Tensor],
        clip_grad_norm: float | None,
    ) -> StepResult:
        """Backward, unscale, clip, optimiser step (skipped on inf/NaN under fp16), update."""
        scale = float(self.scaler.get_scale()) if self.scaling else 1.0
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(optimizer)  # clipping must see the true gradients
        if clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(list(parameters), clip_grad_norm)
        self.scaler.step(optimizer)
        self.scaler.update()
        # update() lowers the scale exactly when this step found inf/NaN and was skipped.
        applied = not self.scaling or float(self.scaler.get_scale()) >= scale
        return StepResult(applied=applied, scale=scale)

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the scaler; a checkpoint of another precision (no scaler state) is refused."""
        if self.scaling and not state:
            raise ValueError(
                "the checkpoint holds no GradScaler state (written at another train.precision "
                "than fp16); resume it with the precision it was written with"
            )
        self.scaler.load_state_dict(state)
