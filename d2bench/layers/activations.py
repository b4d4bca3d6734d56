"""Dilation activations of Table 2: how the raw branch output h becomes a dilation factor s.

They are applied to the dilation channels only (never to offsets or modulation). The choice
matters at initialisation: with a zero-initialised branch, h = 0 and the layer starts as the
plain convolution only when the activation maps 0 to exactly 1.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

import torch.nn.functional as F
from torch import Tensor

from ..core.names import (
    ACTIVATION_ALIASES,
    ACTIVATION_NAMES,
    DEFAULT_ACTIVATION,
    canonical_activation,
)

__all__ = [
    "ACTIVATIONS",
    "ACTIVATION_ALIASES",
    "DEFAULT_ACTIVATION",
    "apply_activation",
    "canonical_activation",
]

ActivationFn = Callable[[Tensor], Tensor]

#: The shift inside "1+relu" keeps s strictly above 1 at h = 0, as in the original code.
RELU_SHIFT = 1e-3


def _none(h: Tensor) -> Tensor:
    return h


def _one_plus_relu(h: Tensor) -> Tensor:
    return F.relu(h + RELU_SHIFT) + 1


def _relu(h: Tensor) -> Tensor:
    return F.relu(h + 1)


def _one_plus_elu(h: Tensor) -> Tensor:
    return F.elu(h) + 1


#: Canonical name → function, in the column order of Table 2.
ACTIVATIONS: Mapping[str, ActivationFn] = MappingProxyType(
    {"none": _none, "1+relu": _one_plus_relu, "relu": _relu, "1+elu": _one_plus_elu}
)

if tuple(ACTIVATIONS) != ACTIVATION_NAMES:
    raise ImportError("d2bench.core.names.ACTIVATION_NAMES and ACTIVATIONS disagree")


def apply_activation(name: str, h: Tensor) -> Tensor:
    """Turn raw branch output ``h`` into dilation factors with the named activation."""
    return ACTIVATIONS[canonical_activation(name)](h)
