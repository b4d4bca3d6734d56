"""The segmentation network of the paper: ir-CSN encoder, 3DC-Seg decoder, conv variants.

``build_model(cfg.model)`` turns a :class:`d2bench.core.config.ModelConfig` into a
:class:`SegmentationModel`; ``load_backbone_weights`` reads the pretrained encoder (a state
dict or the VMZ Caffe2 ``.pkl``).
"""

from .csn import BACKBONE_NAMES, BackboneSpec, Bottleneck, IrCSN, backbone_spec
from .decoder import REFINEMENT_BLOCKS, Decoder3d, GlobalConv3d, RefinementBlock
from .errors import WeightsError
from .frozen_bn import CSN_BN_EPS, FrozenBatchNorm3d
from .segmentation import (
    ASPP_RATES_BY_BLOCK,
    INPUT_MEAN,
    INPUT_STD,
    SegmentationModel,
    build_backbone,
    build_model,
    variant_spec,
)
from .vmz import convert_vmz_blobs, read_vmz_blobs
from .weights import (
    WEIGHTS_SOURCE,
    check_state_dict,
    load_backbone_weights,
    read_backbone_state_dict,
)

__all__ = [
    "ASPP_RATES_BY_BLOCK",
    "BACKBONE_NAMES",
    "CSN_BN_EPS",
    "INPUT_MEAN",
    "INPUT_STD",
    "REFINEMENT_BLOCKS",
    "WEIGHTS_SOURCE",
    "BackboneSpec",
    "Bottleneck",
    "Decoder3d",
    "FrozenBatchNorm3d",
    "GlobalConv3d",
    "IrCSN",
    "RefinementBlock",
    "SegmentationModel",
    "WeightsError",
    "backbone_spec",
    "build_backbone",
    "build_model",
    "check_state_dict",
    "convert_vmz_blobs",
    "load_backbone_weights",
    "read_backbone_state_dict",
    "read_vmz_blobs",
    "variant_spec",
]
