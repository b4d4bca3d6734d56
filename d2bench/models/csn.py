"""ir-CSN, the channel-separated 3D ResNet that 3DC-Seg uses as its encoder.

"Interaction-reduced" CSN (Tran et al., 2019) is a 3D bottleneck ResNet whose 3×3×3 convolution
is depthwise, so all channel interaction happens in the 1×1×1 convolutions. Module names
follow the classic ResNet layout (``conv1``, ``bn1``, ``layer1.0.conv2``, ``downsample.0``):
state dicts converted for the original 3DC-Seg load unchanged, and the VMZ Caffe2 blobs map
onto it one to one (:mod:`.vmz`).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from .frozen_bn import FrozenBatchNorm3d

#: Feature maps the encoder returns: e1 (1/4), e2 (1/8), e3 (1/16), e4 (1/32).
Features = tuple[Tensor, Tensor, Tensor, Tensor]

#: Backbone names accepted by :func:`backbone_spec` (``d2bench.core.config.Backbone``).
BACKBONE_NAMES: tuple[str, ...] = ("csn152", "csn50", "tiny")

#: Bottleneck output channels are this many times the width of its depthwise conv.
EXPANSION = 4


@dataclass(frozen=True)
class BackboneSpec:
    """Depth and widths of an ir-CSN: blocks per stage, stem channels, channels of e1..e4."""

    name: str
    blocks: tuple[int, int, int, int]
    stem_channels: int
    out_channels: tuple[int, int, int, int]


def backbone_spec(name: str, tiny_width: int = 16) -> BackboneSpec:
    """The spec of ``csn152`` ([3, 8, 36, 3]), ``csn50`` ([3, 4, 6, 3]) or ``tiny``.

    ``tiny`` has one block per stage and channels scaled by ``tiny_width`` = w (stem w, e1..e4
    = 4w, 8w, 16w, 32w; w = 64 gives the real widths): the CPU-sized model of the smoke studies.
    """
    full = (256, 512, 1024, 2048)
    if name == "csn152":
        return BackboneSpec(name, (3, 8, 36, 3), 64, full)
    if name == "csn50":
        return BackboneSpec(name, (3, 4, 6, 3), 64, full)
    if name == "tiny":
        if tiny_width < 1:
            raise ValueError(f"tiny_width must be a positive int, got {tiny_width!r}")
        w = tiny_width
        return BackboneSpec(name, (1, 1, 1, 1), w, (4 * w, 8 * w, 16 * w, 32 * w))
    raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONE_NAMES)}")


class Bottleneck(nn.Module):
    """1×1×1 → depthwise 3×3×3 (carries the stride) → 1×1×1, frozen BN after each, residual.

    A projection shortcut (1×1×1 conv + BN, same stride) is added where the channel count or
    the resolution changes, as in VMZ: the first block of every stage.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        width = out_channels // EXPANSION
        self.conv1 = nn.Conv3d(in_channels, width, 1, bias=False)
        self.bn1 = FrozenBatchNorm3d(width)
        self.conv2 = nn.Conv3d(width, width, 3, stride, padding=1, groups=width, bias=False)
        self.bn2 = FrozenBatchNorm3d(width)
        self.conv3 = nn.Conv3d(width, out_channels, 1, bias=False)
        self.bn3 = FrozenBatchNorm3d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, 1, stride, bias=False),
                FrozenBatchNorm3d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class IrCSN(nn.Module):
    """The encoder: stem, max-pool and four stages; returns the features of every stage.

    Stem conv (3, 7, 7) with stride (1, 2, 2), max-pool (1, 3, 3) with stride (1, 2, 2), stage
    strides 1, 2, 2, 2 in t, y and x. An 8×480×864 clip gives e1 8×120×216, e2 4×60×108,
    e3 2×30×54 and e4 1×15×27.
    """

    STAGE_STRIDES: tuple[int, int, int, int] = (1, 2, 2, 2)

    def __init__(self, spec: BackboneSpec) -> None:
        super().__init__()
        self.spec = spec
        self.out_channels = spec.out_channels
        stem = spec.stem_channels
        self.conv1 = nn.Conv3d(3, stem, (3, 7, 7), (1, 2, 2), (1, 3, 3), bias=False)
        self.bn1 = FrozenBatchNorm3d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))
        channels = stem
        stages = zip(spec.blocks, spec.out_channels, self.STAGE_STRIDES, strict=True)
        for index, (blocks, out_channels, stride) in enumerate(stages, start=1):
            layer = [Bottleneck(channels, out_channels, stride)]
            layer += [Bottleneck(out_channels, out_channels, 1) for _ in range(blocks - 1)]
            self.add_module(f"layer{index}", nn.Sequential(*layer))
            channels = out_channels
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He initialisation (fan-out) of every conv: the random-init start of ``weights: none``."""
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Features:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        e1 = self.layer1(x)
        e2 = self.layer2(e1)
        e3 = self.layer3(e2)
        e4 = self.layer4(e3)
        return e1, e2, e3, e4
