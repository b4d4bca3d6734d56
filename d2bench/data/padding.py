"""Zero padding to a multiple of the network's stride (the paper pads 480×854 to 480×864).

The padding is split evenly on both sides (centred), as the original does for training and
inference alike; where it is odd, the extra row or column goes to the bottom or right. The
:class:`PadBox` a pad returns crops the prediction back to the native frame.
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class PadBox:
    """Where the native frame lies in the padded one: rows top..top+H, columns left..left+W."""

    top: int
    left: int
    height: int
    width: int

    def crop(self, data: ArrayOrTensor) -> ArrayOrTensor:
        """The native region of the last two axes (…×H×W) of a padded array or tensor."""
        return data[..., self.top : self.top + self.height, self.left : self.left + self.width]


def centred_padding(height: int, width: int, multiple: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) zero rows/columns that pad H×W to a multiple, centred."""
    target_h, target_w = padded_size(height, width, multiple)
    pad_h, pad_w = target_h - height, target_w - width
    return pad_h // 2, pad_h - pad_h // 2, pad_w // 2, pad_w - pad_w // 2


def pad_to_multiple(data: ArrayOrTensor, multiple: int) -> tuple[ArrayOrTensor, PadBox]:
    """Zero-pad the last two axes (…×H×W) on both sides to a multiple of ``multiple``.

    Returns the padded array or tensor (same type, dtype and device) and the :class:`PadBox`
    that crops it back: ``box.crop(out)``.
    """
    if data.ndim < 2:
        raise ValueError(f"pad_to_multiple needs at least 2 dimensions (…×H×W), got {data.ndim}")
    height, width = int(data.shape[-2]), int(data.shape[-1])
    top, bottom, left, right = centred_padding(height, width, multiple)
    box = PadBox(top, left, height, width)
    if top == bottom == left == right == 0:
        return data, box
    if isinstance(data, np.ndarray):
        widths = [(0, 0)] * (data.ndim - 2) + [(top, bottom), (left, right)]
        return np.pad(data, widths), box
    import torch.nn.functional as F

    return F.pad(data, (left, right, top, bottom)), box
