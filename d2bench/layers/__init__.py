"""Every row of the paper's Tables 1–2 as a drop-in replacement for a 3×3×3 ``nn.Conv3d``.

Example::

    >>> from torch import nn
    >>> from d2bench.layers import replace_convs
    >>> net = nn.Sequential(nn.Conv3d(4, 4, 3, padding=1), nn.ReLU())
    >>> replace_convs(net, "d2conv3d_iv")
    ['0']
"""

from ..core.variants import VariantInfo, register_variant, unregister_variant
from .activations import (
    ACTIVATION_ALIASES,
    ACTIVATIONS,
    DEFAULT_ACTIVATION,
    apply_activation,
    canonical_activation,
)
from .aspp import RATES_512, RATES_1024, ASPP3d, default_rates
from .base import ConvVariant
from .baseline import KeepConv3d
from .branch import BRANCH_PRECISIONS, SampledConv3d, ZeroInitConv3d, set_branch_precision
from .conv_settings import is_replaceable
from .d2 import D2Conv3d
from .deform import DeformConv3d
from .registry import (
    PAPER_LABELS,
    VARIANT_ALIASES,
    VARIANT_NAMES,
    VARIANTS,
    canonical_variant_name,
    get_variant,
    layer_types,
    variant_names,
)
from .replace import build_layer, replace_convs, resolve_block
from .spec import DILATION_AXES, KINDS, VariantSpec

__all__ = [
    "ACTIVATIONS",
    "ACTIVATION_ALIASES",
    "BRANCH_PRECISIONS",
    "DEFAULT_ACTIVATION",
    "DILATION_AXES",
    "KINDS",
    "PAPER_LABELS",
    "RATES_512",
    "RATES_1024",
    "VARIANTS",
    "VARIANT_ALIASES",
    "VARIANT_NAMES",
    "ASPP3d",
    "ConvVariant",
    "D2Conv3d",
    "DeformConv3d",
    "KeepConv3d",
    "SampledConv3d",
    "VariantInfo",
    "VariantSpec",
    "ZeroInitConv3d",
    "apply_activation",
    "build_layer",
    "canonical_activation",
    "canonical_variant_name",
    "default_rates",
    "get_variant",
    "is_replaceable",
    "layer_types",
    "register_variant",
    "replace_convs",
    "resolve_block",
    "set_branch_precision",
    "unregister_variant",
    "variant_names",
]
