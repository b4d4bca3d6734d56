"""The 3DC-Seg decoder: a global conv on e4, then refinement blocks up to 1/4 scale.

Naming: a refinement block is named after the encoder level it reads. ``rf3`` reads e3 (1/16,
T = 2 for an 8-frame clip), ``rf2`` reads e2 (1/8, T = 4), ``rf1`` reads e1 (1/4, T = 8). The
D²Conv3D paper counts the same blocks from the deep end and calls ``rf3``/``rf2`` "rf1"/"rf2";
its code names them rf3/rf2 like we do. The paper puts the variants into ``rf3`` and ``rf2``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .csn import Features
from .norm import SingleGroupNorm

#: Blocks that hold 3×3×3 convolutions a variant may replace, deepest first.
REFINEMENT_BLOCKS: tuple[str, ...] = ("rf3", "rf2", "rf1")


def upsample_to(x: Tensor, size: tuple[int, ...] | list[int]) -> Tensor:
    """Trilinear resize to ``size`` (T, H, W) with ``align_corners=True``, as the original's
    refinement blocks do."""
    if tuple(x.shape[-3:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="trilinear", align_corners=True)


def upsample_logits(logits: Tensor, size: tuple[int, ...] | list[int]) -> Tensor:
    """The head's final trilinear ×(1, 4, 4) resize to ``size`` (T, H, W), with
    ``align_corners=False``: the original calls ``F.interpolate`` there with the default."""
    if tuple(logits.shape[-3:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="trilinear", align_corners=False)


class ConvReluNorm(nn.Sequential):
    """Conv 3×3×3 → ReLU → GroupNorm(1, C): the unit of a refinement block.

    GroupNorm is :class:`.norm.SingleGroupNorm` (same result, no single-block reduction).

    The conv is child ``0``, so a replaced conv is named e.g. ``rf3.conv_fs1.0``. The ReLU is
    not in place: a variant layer may itself end in an in-place ReLU (ASPP does), and a second
    in-place op on its output would corrupt what autograd saved.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv3d(in_channels, out_channels, 3, padding=1),
            nn.ReLU(),
            SingleGroupNorm(out_channels),
        )


class GlobalConv3d(nn.Module):
    """GC3d: (1, 7, 1) → (1, 1, 7) plus (1, 1, 7) → (1, 7, 1), summed: a large spatial kernel."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 7) -> None:
        super().__init__()
        pad = kernel // 2
        tall, wide = (1, kernel, 1), (1, 1, kernel)
        self.conv_l1 = nn.Conv3d(in_channels, out_channels, tall, padding=(0, pad, 0))
        self.conv_l2 = nn.Conv3d(out_channels, out_channels, wide, padding=(0, 0, pad))
        self.conv_r1 = nn.Conv3d(in_channels, out_channels, wide, padding=(0, 0, pad))
        self.conv_r2 = nn.Conv3d(out_channels, out_channels, tall, padding=(0, pad, 0))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_l2(self.conv_l1(x)) + self.conv_r2(self.conv_r1(x))


class RefinementBlock(nn.Module):
    """Merge an encoder feature map with the upsampled coarser decoder state.

    ``s = FS1(f); s = s + FS3(FS2(s)); m = s + up(previous); m = m + MM2(MM1(m))``.
    """

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.conv_fs1 = ConvReluNorm(in_channels, channels)
        self.conv_fs2 = ConvReluNorm(channels, channels)
        self.conv_fs3 = ConvReluNorm(channels, channels)
        self.conv_mm1 = ConvReluNorm(channels, channels)
        self.conv_mm2 = ConvReluNorm(channels, channels)

    def forward(self, features: Tensor, previous: Tensor) -> Tensor:
        s = self.conv_fs1(features)
        s = s + self.conv_fs3(self.conv_fs2(s))
        m = s + upsample_to(previous, s.shape[-3:])
        return m + self.conv_mm2(self.conv_mm1(m))


class Decoder3d(nn.Module):
    """GC3d on e4 → residual pair of 3×3×3 convs → rf3(e3) → rf2(e2) → rf1(e1) → 1 logit.

    The logit is predicted at 1/4 scale (from ReLU of the last state, as in the original) and
    upsampled trilinearly to the clip size (:func:`upsample_logits`, align_corners=False).
    """

    def __init__(self, encoder_channels: tuple[int, int, int, int], channels: int = 256) -> None:
        super().__init__()
        c1, c2, c3, c4 = encoder_channels
        self.channels = channels
        self.gc = GlobalConv3d(c4, channels)
        self.conv_g1 = nn.Conv3d(channels, channels, 3, padding=1)
        self.conv_g2 = nn.Conv3d(channels, channels, 3, padding=1)
        self.rf3 = RefinementBlock(c3, channels)
        self.rf2 = RefinementBlock(c2, channels)
        self.rf1 = RefinementBlock(c1, channels)
        self.pred = nn.Conv3d(channels, 1, 3, padding=1)

    def forward(self, features: Features, out_size: tuple[int, ...] | list[int]) -> Tensor:
        e1, e2, e3, e4 = features
        x = self.gc(e4)
        r = self.conv_g1(F.relu(x))
        r = self.conv_g2(F.relu(r))
        m = x + r
        m = self.rf3(e3, m)
        m = self.rf2(e2, m)
        m = self.rf1(e1, m)
        logits = self.pred(F.relu(m))
        return upsample_logits(logits, out_size)
