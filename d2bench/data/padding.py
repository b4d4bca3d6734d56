"""Zero padding to a multiple of the network's stride (the paper pads 480×854 to 480×864)."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, "torch.Tensor")


def padded_size(height: int, width: int, multiple: int) -> tuple[int, int]:
    """(H, W) rounded up to the next multiple."""
    if multiple < 1:
        raise ValueError(f"pad multiple must be a positive integer, got {multiple}")
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple


def pad_to_multiple(data: ArrayOrTensor, multiple: int) -> tuple[ArrayOrTensor, tuple[int, int]]:
    """Zero-pad the last two axes (…×H×W) at the bottom and right to a multiple of ``multiple``.

    Returns the padded array or tensor (same type, dtype and device) and the original (H, W),
    which is what cropping back after inference needs: ``out[..., :H, :W]``.
    """
    if data.ndim < 2:
        raise ValueError(f"pad_to_multiple needs at least 2 dimensions (…×H×W), got {data.ndim}")
    height, width = int(data.shape[-2]), int(data.shape[-1])
    target_h, target_w = padded_size(height, width, multiple)
    if (target_h, target_w) == (height, width):
        return data, (height, width)
    if isinstance(data, np.ndarray):
        widths = [(0, 0)] * (data.ndim - 2) + [(0, target_h - height), (0, target_w - width)]
        return np.pad(data, widths), (height, width)
    import torch.nn.functional as F

    return F.pad(data, (0, target_w - width, 0, target_h - height)), (height, width)
