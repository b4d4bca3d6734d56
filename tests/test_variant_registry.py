"""A conv variant is one class registered once: names, specs and replace_convs all find it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from d2bench.core.config import ModelConfig
from d2bench.core.names import VARIANT_NAMES, canonical_variant_name, variant_names
from d2bench.core.variants import CATALOGUE, declared_in_source
from d2bench.layers import (
    PAPER_LABELS,
    VARIANTS,
    ConvVariant,
    VariantInfo,
    VariantSpec,
    get_variant,
    layer_types,
    register_variant,
    replace_convs,
    unregister_variant,
)
from d2bench.study.spec import parse_study


def _define_toy() -> type:
    """The whole of a new variant: one class, one decorator."""

    @register_variant(VariantInfo("toy_double", "Toy (×2)", kind="toy", aliases=("toy",)))
    class DoubledConv3d(ConvVariant, nn.Module):
        """The replaced conv, its output doubled."""

        def __init__(self, conv: nn.Conv3d) -> None:
            super().__init__()
            self.conv = conv

        @classmethod
        def from_conv(cls, conv: nn.Conv3d, spec: VariantSpec) -> nn.Module:
            return cls(conv)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * self.conv(x)

    return DoubledConv3d


@pytest.fixture
def toy() -> Iterator[type]:
    layer = _define_toy()
    try:
        yield layer
    finally:
        unregister_variant("toy_double")


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(2, 2, 3, padding=1), nn.ReLU(), nn.Conv3d(2, 2, 3, padding=1))


def test_a_registered_variant_is_named_validated_and_replaces_convs(toy, tmp_path):
    assert canonical_variant_name("Toy") == "toy_double"
    assert variant_names()[-1] == "toy_double"
    assert VARIANT_NAMES[-1] == "d2conv3d_iv"  # the package's rows stay the paper's
    assert PAPER_LABELS["toy_double"] == "Toy (×2)"
    assert ModelConfig(variant="TOY").variant == "toy_double"
    with pytest.raises(ValueError, match="has no dilation to activate"):
        ModelConfig(variant="toy", activation="relu")
    tree = {
        "name": "toy-study",
        "base": {"model": {"backbone": "tiny"}, "data": {"root": str(tmp_path)}},
        "rows": [{"name": "toy", "model": {"variant": "toy"}}],
        "seeds": [0],
    }
    assert parse_study(tree).row_variant("toy") == "toy_double"

    spec = get_variant("toy")
    assert spec == VARIANTS["toy_double"] and spec.kind == "toy"
    assert spec.branch_channels == 0 and spec.replaces_convs and toy in layer_types()
    net, x = _net(), torch.randn(1, 2, 3, 4, 4)
    expected = net[2](net[1](2 * net[0](x))) * 2
    assert replace_convs(net, "toy") == ["0", "2"]
    assert isinstance(net[0], toy) and isinstance(net[2], toy)
    torch.testing.assert_close(net(x), expected)
    assert replace_convs(net, "toy") == []  # converted layers are recognised
    with pytest.raises(ValueError, match="already a DoubledConv3d of another variant"):
        replace_convs(net, "dcnv1")


def test_unregistering_forgets_the_variant():
    _define_toy()
    unregister_variant("toy_double")
    with pytest.raises(ValueError, match="unknown variant 'toy'"):
        canonical_variant_name("toy")
    with pytest.raises(ValueError, match=r"VariantSpec\.kind must be one of"):
        VariantSpec("toy_double", "toy")


def test_a_name_given_twice_is_rejected_naming_its_owner(toy):
    with pytest.raises(ValueError, match=r"'toy_double' .* already registered by .*DoubledConv3d"):
        register_variant(VariantInfo("toy_double", "Again", kind="other"))(type("Again", (), {}))
    with pytest.raises(ValueError, match=r"'dcnv1' .* already registered by .*DeformConv3d"):
        register_variant(VariantInfo("dcnv1", "Again", kind="other"))(type("B", (), {}))
    with pytest.raises(ValueError, match=r"'iv' .* already registered by .*D2Conv3d"):
        register_variant(VariantInfo("mine", "Mine", kind="other", aliases=("IV",)))(
            type("C", (), {})
        )
    with pytest.raises(ValueError, match=r"kind 'toy' .* already implemented by .*DoubledConv3d"):
        register_variant(VariantInfo("toy_two", "Two", kind="toy"))(type("D", (), {}))
    assert variant_names().count("toy_double") == 1 and "mine" not in variant_names()


def test_built_in_variants_are_read_from_the_layer_sources_without_torch():
    code = (
        "import sys\nfrom d2bench.core.names import VARIANT_NAMES, PAPER_LABELS\n"
        "assert PAPER_LABELS['d2conv3d_iv'] == '(IV) S+T (|D|=3)'\n"
        "sys.exit(len(VARIANT_NAMES) != 8 or 'torch' in sys.modules"
        " or 'd2bench.layers' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    owners = {CATALOGUE.owner(name).rpartition(".")[2] for name in VARIANT_NAMES}
    assert owners == {"KeepConv3d", "ASPP3d", "DeformConv3d", "D2Conv3d"}
    assert {layer.__name__ for layer in CATALOGUE.layers()} >= owners  # each class bound


def test_a_declaration_the_torch_free_side_cannot_read_fails_loudly(tmp_path: Path):
    source = tmp_path / "computed.py"
    source.write_text(
        "LABEL = 'X'\n@register_variant(VariantInfo('x', LABEL, kind='x'))\nclass X: ...\n"
    )
    with pytest.raises(ValueError, match="must be literals"):
        declared_in_source(source, "pkg.computed")
    source.write_text("@register_variant(make_info())\nclass X: ...\n")
    with pytest.raises(ValueError, match="takes VariantInfo"):
        declared_in_source(source, "pkg.computed")
