"""The whole network: input normalisation, ir-CSN encoder, 3DC-Seg decoder, conv variant.

Example (a CPU-sized model)::

    >>> import torch
    >>> from d2bench.core.config import ModelConfig
    >>> from d2bench.models import build_model
    >>> cfg = ModelConfig(backbone="tiny", tiny_width=4, decoder_channels=8, variant="iv")
    >>> model = build_model(cfg)
    >>> model(torch.rand(1, 3, 8, 64, 96)).shape
    torch.Size([1, 1, 8, 64, 96])
    >>> sorted(model.replaced_layers)[:1]
    ['decoder.rf2.conv_fs1.0']
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..layers import RATES_512, RATES_1024, ASPP3d, VariantSpec, get_variant, replace_convs
from .csn import BackboneSpec, Features, IrCSN, backbone_spec
from .decoder import REFINEMENT_BLOCKS, Decoder3d
from .weights import load_backbone_weights

if TYPE_CHECKING:
    from ..core.config import ModelConfig

#: Normalisation of the pretrained ir-CSN-152 encoder (as 3DC-Seg), for RGB input in [0, 1].
INPUT_MEAN: tuple[float, float, float] = (0.43216, 0.394666, 0.37645)
INPUT_STD: tuple[float, float, float] = (0.22803, 0.22145, 0.216989)

#: The input's H and W must be multiples of this (the encoder's total stride).
SIZE_MULTIPLE = 32

#: ASPP rates by block: the paper ties them to the scale (1/16 vs 1/8), stated for the full
#: widths (1024 / 512 channels); keyed by block so the narrow tiny model gets the same rates.
ASPP_RATES_BY_BLOCK = {"rf3": RATES_1024, "rf2": RATES_512, "rf1": RATES_512}


class SegmentationModel(nn.Module):
    """B×3×T×H×W clip in [0, 1] → B×1×T×H×W foreground logits (H, W multiples of 32)."""

    def __init__(self, backbone: IrCSN, decoder: Decoder3d) -> None:
        super().__init__()
        self.backbone = backbone
        self.decoder = decoder
        shape = (1, 3, 1, 1, 1)
        device = next(backbone.parameters()).device
        mean = torch.tensor(INPUT_MEAN).view(shape).to(device)
        std = torch.tensor(INPUT_STD).view(shape).to(device)
        self.register_buffer("input_mean", mean, persistent=False)
        self.register_buffer("input_std", std, persistent=False)
        self._replaced: tuple[str, ...] = ()

    @property
    def replaced_layers(self) -> dict[str, nn.Module]:
        """Dotted name (from the model) → variant layer; empty for the baseline."""
        return {name: self.get_submodule(name) for name in self._replaced}

    def apply_variant(self, spec: VariantSpec, blocks: Sequence[str]) -> list[str]:
        """Put ``spec`` into the decoder blocks ``blocks``; returns the names replaced."""
        for block in blocks:
            check_block_name(block)
        replaced = replace_convs(self.decoder, spec, list(blocks))
        if spec.kind == "aspp":
            for name in replaced:
                _use_block_rates(self.decoder, name)
        names = [f"decoder.{name}" for name in replaced]
        self._replaced = (*self._replaced, *names)
        return names

    def normalise(self, x: Tensor) -> Tensor:
        """Validate the clip and apply the encoder's mean/std."""
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"expected a B×3×T×H×W clip, got shape {tuple(x.shape)}")
        height, width = x.shape[-2:]
        if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
            raise ValueError(
                f"H and W must be multiples of {SIZE_MULTIPLE} (pad the frames); "
                f"got {height}×{width}"
            )
        return (x - self.input_mean.to(x.dtype)) / self.input_std.to(x.dtype)

    def features(self, x: Tensor) -> Features:
        """The encoder's e1..e4 for a clip in [0, 1]."""
        return self.backbone(self.normalise(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.features(x), x.shape[-3:])


def check_block_name(block: str) -> None:
    """A refinement block name (or a dotted path inside one); ValueError listing the valid ones."""
    head = block.split(".", 1)[0] if isinstance(block, str) else None
    if head not in REFINEMENT_BLOCKS:
        valid = ", ".join(REFINEMENT_BLOCKS)
        raise ValueError(
            f"unknown decoder block {block!r} in replace_blocks; valid blocks: {valid} "
            f"(rf3 reads e3 at 1/16, rf2 e2 at 1/8, rf1 e1 at 1/4)"
        )


def _use_block_rates(decoder: Decoder3d, name: str) -> None:
    """Give an ASPP block the rates of its decoder block (rebuilt only if they differ)."""
    layer = decoder.get_submodule(name)
    rates = ASPP_RATES_BY_BLOCK[name.split(".", 1)[0]]
    if not isinstance(layer, ASPP3d) or layer.rates == rates:
        return
    weight = next(layer.parameters())
    rebuilt = ASPP3d(
        layer.in_channels,
        layer.out_channels,
        rates,
        stride=layer.stride,
        device=weight.device,
        dtype=weight.dtype,
    )
    rebuilt.train(layer.training)
    parent, _, leaf = name.rpartition(".")
    setattr(decoder.get_submodule(parent), leaf, rebuilt)


def variant_spec(cfg: ModelConfig) -> VariantSpec:
    """The layer spec of ``cfg``: variant, activation (D² variants only), branch checkpointing,
    sampling precision."""
    runtime = {
        "checkpoint_branch": cfg.checkpoint_branch,
        "sampling_precision": cfg.sampling_precision,
    }
    spec = get_variant(cfg.variant, **runtime)
    if cfg.activation is not None:
        if spec.kind != "d2":
            raise ValueError(
                f"activation={cfg.activation!r} applies only to the D²Conv3D variants "
                f"(d2conv3d_i..iv); variant {spec.name!r} has no dilation activation"
            )
        spec = get_variant(cfg.variant, activation=cfg.activation, **runtime)
    return spec


def build_backbone(cfg: ModelConfig) -> IrCSN:
    """The encoder of ``cfg`` (random initialisation)."""
    spec: BackboneSpec = backbone_spec(cfg.backbone, cfg.tiny_width)
    return IrCSN(spec)


def build_model(
    cfg: ModelConfig,
    *,
    device: torch.device | str | None = None,
    load_weights: bool = True,
) -> SegmentationModel:
    """The network ``cfg`` describes, with its variant in place and its backbone weights loaded.

    ``device="meta"`` builds it without memory (shape checks of the full-size network); weights
    are then only checked against the architecture, not copied. ``load_weights=False`` skips
    ``cfg.weights`` (e.g. when a checkpoint of the whole model is restored next).
    """
    spec = variant_spec(cfg)
    for block in cfg.replace_blocks:
        check_block_name(block)
    context = torch.device(device) if device is not None else contextlib.nullcontext()
    with context:
        backbone = build_backbone(cfg)
        decoder = Decoder3d(backbone.out_channels, cfg.decoder_channels)
        model = SegmentationModel(backbone, decoder)
        model.apply_variant(spec, cfg.replace_blocks)
    if load_weights and cfg.weights != "none":
        load_backbone_weights(model.backbone, cfg.weights)
    return model
