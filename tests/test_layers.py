"""Tests of the layer variants (d2bench.layers): specs, identities, counts, replacement, grads."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import d2bench.ops as ops
from d2bench.layers import (
    ACTIVATIONS,
    RATES_512,
    RATES_1024,
    VARIANT_NAMES,
    VARIANTS,
    ASPP3d,
    D2Conv3d,
    DeformConv3d,
    VariantSpec,
    apply_activation,
    build_layer,
    get_variant,
    replace_convs,
)
from d2bench.ops.geometry import TAPS

F64 = torch.float64
DEFORMABLE = [name for name in VARIANT_NAMES if VARIANTS[name].kind in ("dcn", "d2")]
BRANCH_CHANNELS = {
    "dcnv1": 81,
    "dcnv2": 81 + 27,
    "d2conv3d_i": 1 + 27,
    "d2conv3d_ii": 2 + 27,
    "d2conv3d_iii": 3,
    "d2conv3d_iv": 3 + 27,
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The tensors here are tiny: extra threads only add overhead (and contention)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def close(actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-10) -> None:
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)


def make_input(seed: int = 0, shape: tuple[int, ...] = (2, 4, 5, 6, 7)) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=F64)


SMALL = (1, 4, 3, 4, 5)  # for tests that differentiate through the operator


def make_conv(cin: int = 4, cout: int = 3, **kwargs) -> nn.Conv3d:
    torch.manual_seed(1)
    conv = nn.Conv3d(cin, cout, 3, dtype=F64, **{"padding": 1, **kwargs})
    assert conv.bias is not None and conv.bias.abs().min() > 0  # a bias the tests can see
    return conv


def set_branch_bias(layer: nn.Module, values: list[float]) -> None:
    """Make the branch output constant: zero weight, bias = values."""
    with torch.no_grad():
        layer.branch.weight.zero_()
        layer.branch.bias.copy_(torch.tensor(values, dtype=layer.branch.bias.dtype))


# --- identities of the zero-initialised layers ---------------------------------------------

GEOMETRIES = [
    {"padding": 1},
    {"padding": 1, "stride": 2},
    {"padding": 2, "dilation": 2},
    {"padding": (0, 1, 1), "stride": (1, 2, 1)},
]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
@pytest.mark.parametrize("name", DEFORMABLE)
def test_zero_init_equals_replaced_conv(name: str, geometry: dict) -> None:
    spec = get_variant(name)
    conv = make_conv(**geometry)
    x = make_input()
    out = build_layer(conv, spec)(x)
    if spec.modulation:
        # sigmoid(0) = 0.5 scales every sample, not the bias: W * (0.5 x) + b.
        expected = F.conv3d(
            0.5 * x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation
        )
        close(out, expected)
        halved_output = 0.5 * conv(x)
        assert not torch.allclose(out, halved_output, atol=1e-6)
    else:
        close(out, conv(x))


def test_zero_init_relu_activation_is_identity() -> None:
    conv, x = make_conv(), make_input()
    layer = build_layer(conv, get_variant("d2conv3d_iii", activation="relu"))
    close(layer(x), conv(x))


def test_zero_init_one_plus_relu_is_slightly_dilated() -> None:
    conv, x = make_conv(), make_input()
    layer = build_layer(conv, get_variant("d2conv3d_iii", activation="1+relu"))
    out = layer(x)
    assert not torch.allclose(out, conv(x), atol=1e-6)
    close(out, conv(x), atol=0.1)


# --- the dilation map -------------------------------------------------------------------------


def test_constant_dilation_map_is_dilated_conv() -> None:
    conv, x = make_conv(), make_input()
    s = torch.tensor([1.0, 2.0, 2.0], dtype=F64).view(1, 3, 1, 1, 1).expand(2, 3, 5, 6, 7)
    out = ops.d2conv3d(x, s.contiguous(), None, conv.weight, conv.bias, padding=1, dilation=1)
    close(out, F.conv3d(x, conv.weight, conv.bias, padding=(1, 2, 2), dilation=(1, 2, 2)))


def collapsed_weight(weight: torch.Tensor, axis: int) -> torch.Tensor:
    """The kernel with its taps along ``axis`` (0 = t) summed into the centre slice."""
    dim = 2 + axis
    collapsed = torch.zeros_like(weight)
    collapsed.narrow(dim, 1, 1).copy_(weight.sum(dim=dim, keepdim=True))
    return collapsed


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_zero_dilation_collapses_taps_onto_centre(axis: int) -> None:
    conv, x = make_conv(), make_input()
    s = torch.ones(2, 3, 5, 6, 7, dtype=F64)
    s[:, axis] = 0
    out = ops.d2conv3d(x, s, None, conv.weight, conv.bias, padding=1)
    expected = F.conv3d(x, collapsed_weight(conv.weight, axis), conv.bias, padding=1)
    close(out, expected)
    assert not torch.allclose(out, conv(x), atol=1e-6)


def test_negative_dilation_mirrors_kernel() -> None:
    conv, x = make_conv(), make_input()
    s = torch.ones(2, 3, 5, 6, 7, dtype=F64)
    s[:, 1] = -1
    out = ops.d2conv3d(x, s, None, conv.weight, conv.bias, padding=1)
    close(out, F.conv3d(x, conv.weight.flip(3), conv.bias, padding=1))


@pytest.mark.parametrize(
    ("name", "bias", "s"),
    [  # 1 + elu: raw output 1 gives dilation 2, raw output 0 gives 1
        ("d2conv3d_i", [1.0] + [0.0] * 27, (1, 2, 2)),
        ("d2conv3d_ii", [1.0, 0.0] + [0.0] * 27, (1, 2, 1)),
        ("d2conv3d_ii", [0.0, 1.0] + [0.0] * 27, (1, 1, 2)),
        ("d2conv3d_iii", [1.0, 0.0, 1.0], (2, 1, 2)),
        ("d2conv3d_iv", [0.0, 1.0, 0.0] + [0.0] * 27, (1, 2, 1)),
    ],
)
def test_layer_builds_dilation_map_per_axes(name: str, bias: list[float], s: tuple) -> None:
    conv, x = make_conv(), make_input()
    layer = build_layer(conv, get_variant(name))
    set_branch_bias(layer, bias)
    scale = 0.5 if layer.modulation else 1.0
    expected = F.conv3d(scale * x, conv.weight, conv.bias, padding=s, dilation=s)
    close(layer(x), expected)


def test_shared_spatial_dilation_keeps_time_exactly_one() -> None:
    # With the "none" activation an activated constant 1 would be 0: time must not collapse.
    conv, x = make_conv(), make_input()
    layer = build_layer(conv, get_variant("d2conv3d_i", activation="none"))
    dilation_map, _ = layer.predict(x)
    assert torch.equal(dilation_map[:, 0], torch.ones_like(dilation_map[:, 0]))
    assert torch.equal(dilation_map[:, 1:], torch.zeros_like(dilation_map[:, 1:]))
    spatially_collapsed = collapsed_weight(collapsed_weight(conv.weight, 1), 2)
    expected = F.conv3d(0.5 * x, spatially_collapsed, conv.bias, padding=1)
    close(layer(x), expected)


def test_none_activation_at_zero_init_collapses_all_axes() -> None:
    conv, x = make_conv(), make_input()
    layer = build_layer(conv, get_variant("d2conv3d_iii", activation="none"))
    summed = conv.weight.sum(dim=(2, 3, 4), keepdim=True)
    close(layer(x), F.conv3d(x, summed, conv.bias))


def test_deform_layer_passes_offsets_in_tap_order() -> None:
    # Offsets p_k * (s - 1) turn the deformable conv into one dilated by s.
    conv, x = make_conv(), make_input()
    layer = build_layer(conv, get_variant("dcnv1"))
    scale = (2, 1, 3)
    offsets = [float(p * (s - 1)) for tap in TAPS for p, s in zip(tap, scale, strict=True)]
    set_branch_bias(layer, offsets)
    expected = F.conv3d(x, conv.weight, conv.bias, padding=scale, dilation=scale)
    close(layer(x), expected)


# --- branch sizes and construction --------------------------------------------------------


@pytest.mark.parametrize("name", DEFORMABLE)
def test_branch_channels_and_parameter_count(name: str) -> None:
    cin = 4
    conv = make_conv(cin=cin)
    spec = get_variant(name)
    layer = build_layer(conv, spec)
    channels = BRANCH_CHANNELS[name]
    assert spec.branch_channels == channels
    assert layer.branch_channels == channels
    assert layer.branch.out_channels == channels
    branch_params = sum(p.numel() for p in layer.branch.parameters())
    assert branch_params == cin * 27 * channels + channels
    conv_params = sum(p.numel() for p in conv.parameters())
    assert sum(p.numel() for p in layer.parameters()) == conv_params + branch_params
    assert not layer.branch.weight.any() and not layer.branch.bias.any()
    assert f"branch_channels={channels}" in repr(layer)


def test_branch_stays_zero_after_reset_parameters() -> None:
    layer = build_layer(make_conv(), get_variant("d2conv3d_iv"))
    with torch.no_grad():
        layer.branch.weight.normal_()
    layer.apply(lambda m: m.reset_parameters() if hasattr(m, "reset_parameters") else None)
    assert not layer.branch.weight.any()


def test_branch_has_conv_geometry() -> None:
    conv = make_conv(stride=(1, 2, 2), padding=2, dilation=2)
    layer = build_layer(conv, get_variant("d2conv3d_iv"))
    assert layer.stride == layer.branch.stride == (1, 2, 2)
    assert layer.padding == layer.branch.padding == (2, 2, 2)
    assert layer.dilation == layer.branch.dilation == (2, 2, 2)


def test_from_conv_copies_weights_independently() -> None:
    conv = make_conv()
    conv.bias.requires_grad_(False)
    layer = D2Conv3d.from_conv(conv, get_variant("d2conv3d_iv"))
    assert torch.equal(layer.weight, conv.weight) and torch.equal(layer.bias, conv.bias)
    assert layer.weight.data_ptr() != conv.weight.data_ptr()
    assert layer.weight.requires_grad and not layer.bias.requires_grad
    with torch.no_grad():
        layer.weight.add_(1)
    assert not torch.equal(layer.weight, conv.weight)


def test_from_conv_without_bias() -> None:
    conv = nn.Conv3d(4, 3, 3, padding=1, bias=False, dtype=F64)
    x = make_input()
    layer = DeformConv3d.from_conv(conv, get_variant("dcnv1"))
    assert layer.bias is None
    close(layer(x), conv(x))


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv3d(4, 4, 1),
        nn.Conv3d(4, 4, 3, padding=1, groups=4),
        nn.Conv3d(4, 4, (1, 3, 3), padding=(0, 1, 1)),
        nn.Conv3d(4, 4, 3, padding=1, padding_mode="reflect"),
    ],
    ids=["1x1x1", "depthwise", "1x3x3", "reflect"],
)
def test_from_conv_rejects_convs_it_cannot_reproduce(conv: nn.Conv3d) -> None:
    with pytest.raises(ValueError):
        D2Conv3d.from_conv(conv, get_variant("d2conv3d_iv"))


def test_from_conv_rejects_spec_of_other_kind() -> None:
    with pytest.raises(ValueError, match="kind"):
        DeformConv3d.from_conv(make_conv(), get_variant("d2conv3d_iv"))


def test_same_padding_is_resolved() -> None:
    conv, x = make_conv(padding="same", dilation=(1, 2, 2)), make_input()
    layer = build_layer(conv, get_variant("dcnv1"))
    assert layer.padding == (1, 2, 2)
    close(layer(x), conv(x))


# --- activations ------------------------------------------------------------------------------


def test_activation_values_at_zero() -> None:
    h = torch.zeros(3, dtype=F64)
    expected = {"none": 0.0, "1+relu": 1.001, "relu": 1.0, "1+elu": 1.0}
    assert set(ACTIVATIONS) == set(expected)
    for name, value in expected.items():
        close(apply_activation(name, h), torch.full_like(h, value), atol=1e-12)


@pytest.mark.parametrize("h", [-2.5, -1.0005, -0.5, 0.3, 1.7])
def test_activation_formulas(h: float) -> None:
    t = torch.tensor([h], dtype=F64)
    expected = {
        "none": h,
        "1+relu": max(h + 1e-3, 0.0) + 1,
        "relu": max(h + 1, 0.0),
        "1+elu": h + 1 if h > 0 else math.exp(h),
        "linear": h,
        "relu_plus_one": max(h + 1e-3, 0.0) + 1,
        "elu": h + 1 if h > 0 else math.exp(h),
    }
    for name, value in expected.items():
        close(apply_activation(name, t), torch.tensor([value], dtype=F64), atol=1e-12)


def test_unknown_activation_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="1\\+elu"):
        apply_activation("softplus", torch.zeros(1))


# --- specs and the registry ---------------------------------------------------------------


def test_registry_rows() -> None:
    assert VARIANT_NAMES == (
        "baseline", "aspp", "dcnv1", "dcnv2",
        "d2conv3d_i", "d2conv3d_ii", "d2conv3d_iii", "d2conv3d_iv",
    )  # fmt: skip
    iv = get_variant("d2conv3d_iv")
    assert (iv.kind, iv.modulation, iv.dilation_axes, iv.activation) == ("d2", True, "tyx", "1+elu")
    assert not get_variant("d2conv3d_iii").modulation
    assert get_variant("d2conv3d_i").dilation_axes == "s"
    assert get_variant("d2conv3d_ii").dilation_axes == "yx"
    assert get_variant("dcnv2").modulation and not get_variant("dcnv1").modulation
    assert get_variant("baseline").kind == "conv" and not get_variant("baseline").replaces_convs


@pytest.mark.parametrize(
    ("alias", "name"),
    [("I", "d2conv3d_i"), ("ii", "d2conv3d_ii"), ("iIi", "d2conv3d_iii"), ("IV", "d2conv3d_iv"),
     ("Revised_Baseline", "baseline"), ("DCNv2", "dcnv2")],
)  # fmt: skip
def test_aliases(alias: str, name: str) -> None:
    assert get_variant(alias) == VARIANTS[name]


def test_get_variant_overrides() -> None:
    spec = get_variant("iv", activation="relu_plus_one", blocks=["rf2"], checkpoint_branch=True)
    assert spec.activation == "1+relu" and spec.blocks == ("rf2",) and spec.checkpoint_branch
    assert spec.name == "d2conv3d_iv"
    assert VARIANTS["d2conv3d_iv"].activation == "1+elu"  # the registry is not modified


def test_get_variant_errors() -> None:
    with pytest.raises(ValueError, match="d2conv3d_iv"):
        get_variant("dcnv3")
    with pytest.raises(ValueError, match="dilation_axes"):
        get_variant("iv", dilation_axis="s")


def test_spec_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_variant("iv").activation = "relu"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"kind": "d2", "dilation_axes": "tyx", "activation": "softplus"}, "activation"),
        ({"kind": "d2", "dilation_axes": "tyx", "activation": ""}, "activation"),
        ({"kind": "d2", "dilation_axes": "xy", "activation": "elu"}, "dilation_axes"),
        ({"kind": "d2", "activation": "elu"}, "dilation_axes"),
        ({"kind": "dcn", "dilation_axes": "tyx"}, "dilation_axes"),
        ({"kind": "dcn", "activation": "1+elu"}, "activation"),
        ({"kind": "conv", "modulation": True}, "modulation"),
        ({"kind": "aspp", "modulation": True}, "modulation"),
        ({"kind": "dcn", "modulation": 1}, "modulation"),
        ({"kind": "deform"}, "kind"),
        ({"kind": "dcn", "blocks": "rf2"}, "blocks"),
        ({"kind": "dcn", "blocks": ["rf2", 3]}, "blocks"),
        ({"kind": "dcn", "checkpoint_branch": "yes"}, "checkpoint_branch"),
        ({"kind": "dcn", "name": " "}, "name"),
    ],
)
def test_bad_spec_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=rf"VariantSpec\.{field}\b"):
        VariantSpec(**{"name": "x", **kwargs})


def test_spec_normalises_aliases_and_blocks() -> None:
    spec = VariantSpec("x", "d2", True, "tyx", "ELU", blocks=["a", "b.c"])
    assert spec.activation == "1+elu" and spec.blocks == ("a", "b.c")
    assert spec == VariantSpec("x", "d2", True, "tyx", "1+elu", blocks=("a", "b.c"))


# --- replace_convs --------------------------------------------------------------------------


class Block(nn.Module):
    """Dense 3×3×3 convs mixed with a 1×1×1 and a depthwise 3×3×3 conv (never replaced)."""

    def __init__(self, c: int, stride: int = 1) -> None:
        super().__init__()
        self.first = nn.Conv3d(c, c, 3, padding=1)
        self.point = nn.Conv3d(c, c, 1)
        self.depthwise = nn.Conv3d(c, c, 3, padding=1, groups=c)
        self.units = nn.Sequential(nn.Conv3d(c, c, 3, stride=stride, padding=1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.units(self.depthwise(self.point(torch.relu(self.first(x)))))


class Net(nn.Module):
    def __init__(self, c: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv3d(c, c, 3, padding=1)
        self.decoder = nn.ModuleDict({"rf2": Block(c), "rf3": Block(c, stride=2)})
        self.head = nn.Conv3d(c, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.decoder["rf3"](self.decoder["rf2"](self.stem(x)))
        return self.head(x)


BLOCKS = ["decoder.rf2", "decoder.rf3"]
BLOCK_CONVS = [
    "decoder.rf2.first",
    "decoder.rf2.units.0",
    "decoder.rf3.first",
    "decoder.rf3.units.0",
]


def make_net() -> Net:
    torch.manual_seed(2)
    return Net().to(F64)


@pytest.mark.parametrize("name", ["dcnv1", "d2conv3d_iii"])
def test_replace_convs_in_blocks(name: str) -> None:
    net, x = make_net(), make_input()
    original = copy.deepcopy(net)
    untouched = {n: m for n, m in net.named_modules() if n and not n.startswith(tuple(BLOCK_CONVS))}
    names = replace_convs(net, name, BLOCKS)
    assert names == BLOCK_CONVS
    modules = dict(net.named_modules())
    layer_type = DeformConv3d if name == "dcnv1" else D2Conv3d
    for n in names:
        assert isinstance(modules[n], layer_type)
        assert torch.equal(modules[n].weight, original.get_submodule(n).weight)
        assert torch.equal(modules[n].bias, original.get_submodule(n).bias)
    for n, m in untouched.items():
        if not isinstance(m, (Block, nn.ModuleDict, nn.Sequential)):
            assert modules[n] is m, n
    out = net(x)
    assert out.shape == (2, 1, 3, 3, 4)  # the stride-2 conv keeps its output shape
    close(out, original(x))
    assert replace_convs(net, name, BLOCKS) == []  # already converted: a no-op


def test_replace_convs_whole_module_and_spec_blocks() -> None:
    net = make_net()
    names = replace_convs(net, get_variant("d2conv3d_iv"))
    assert names == ["stem", *BLOCK_CONVS, "head"]
    assert isinstance(net.decoder["rf2"].depthwise, nn.Conv3d)
    assert type(net.decoder["rf2"].point) is nn.Conv3d
    net = make_net()
    assert replace_convs(net, get_variant("dcnv2", blocks=("decoder.rf3",))) == BLOCK_CONVS[2:]
    net = make_net()
    spec = get_variant("dcnv2", blocks=("decoder.rf3",))
    assert replace_convs(net, spec, blocks=["decoder.rf2"]) == BLOCK_CONVS[:2]


def test_replace_convs_baseline_replaces_nothing() -> None:
    net = make_net()
    before = list(net.modules())
    assert replace_convs(net, "baseline", BLOCKS) == []
    assert replace_convs(net, "revised_baseline") == []
    assert all(a is b for a, b in zip(before, net.modules(), strict=True))


def test_replace_convs_single_conv_block() -> None:
    net = make_net()
    assert replace_convs(net, "dcnv1", ["decoder.rf2.first"]) == ["decoder.rf2.first"]
    assert isinstance(net.decoder["rf2"].first, DeformConv3d)


def test_replace_convs_bad_block_leaves_model_untouched() -> None:
    net = make_net()
    with pytest.raises(ValueError, match=r"rf2.*rf3"):
        replace_convs(net, "dcnv1", ["decoder.rf9"])
    with pytest.raises(ValueError, match="stem"):
        replace_convs(net, "dcnv1", ["decoder.rf2", "encoder"])
    assert type(net.decoder["rf2"].first) is nn.Conv3d


def test_replace_convs_block_without_dense_conv() -> None:
    net = make_net()
    with pytest.raises(ValueError, match="3×3×3"):
        replace_convs(net, "dcnv1", ["decoder.rf2.point"])
    with pytest.raises(ValueError, match="3×3×3"):
        replace_convs(net, "dcnv1", ["decoder.rf2.depthwise"])


def test_replace_convs_unknown_variant() -> None:
    with pytest.raises(ValueError, match="d2conv3d_iv"):
        replace_convs(make_net(), "d2conv3d_v", BLOCKS)


def test_replace_convs_refuses_mixing_variants() -> None:
    net = make_net()
    replace_convs(net, "dcnv1", BLOCKS)
    with pytest.raises(ValueError, match="another variant"):
        replace_convs(net, "d2conv3d_iv", BLOCKS)
    with pytest.raises(ValueError, match="another variant"):
        replace_convs(net, "d2conv3d_iv")
    assert replace_convs(net, get_variant("dcnv1", checkpoint_branch=True), BLOCKS) == []


def test_replace_convs_keeps_eval_mode() -> None:
    net = make_net().eval()
    replace_convs(net, "aspp", BLOCKS)
    replace_convs(net, "dcnv2", ["stem"])
    assert not any(m.training for m in net.modules())


def test_replace_convs_aspp_first_conv_per_block() -> None:
    net, x = make_net().eval(), make_input()
    shape = net(x).shape
    names = replace_convs(net, "aspp", BLOCKS)
    assert names == ["decoder.rf2.first", "decoder.rf3.first"]
    for block in net.decoder.values():
        assert isinstance(block.first, ASPP3d)
        assert type(block.units[0]) is nn.Conv3d
    assert sum(isinstance(m, ASPP3d) for m in net.modules()) == 2
    assert net(x).shape == shape
    assert replace_convs(net, "aspp", BLOCKS) == []


def test_aspp_rates_and_structure() -> None:
    assert ASPP3d(1024, 2).rates == RATES_1024 == ((1, 3, 3), (1, 6, 6), (1, 9, 9))
    assert ASPP3d(512, 2).rates == RATES_512 == ((1, 6, 6), (1, 12, 12), (1, 18, 18))
    assert ASPP3d(4, 2).rates == RATES_512
    aspp = ASPP3d(4, 3, rates=[2, (1, 3, 4)])
    assert aspp.rates == ((1, 2, 2), (1, 3, 4))
    assert len(aspp.branches) == 3
    assert [b[0].kernel_size for b in aspp.branches] == [(1, 1, 1), (3, 3, 3), (3, 3, 3)]
    assert aspp.branches[2][0].padding == aspp.branches[2][0].dilation == (1, 3, 4)
    assert aspp.fuse[0].in_channels == 9 and aspp.fuse[0].out_channels == 3
    assert isinstance(aspp.fuse[1], nn.BatchNorm3d) and isinstance(aspp.fuse[2], nn.ReLU)


@pytest.mark.parametrize("stride", [1, 2, (1, 2, 2)])
def test_aspp_keeps_conv_output_shape(stride) -> None:
    conv, x = make_conv(stride=stride), make_input()
    aspp = ASPP3d.from_conv(conv).eval()
    assert aspp(x).shape == conv(x).shape
    assert aspp.out_channels == conv.out_channels


def test_aspp_rejects_size_changing_conv() -> None:
    with pytest.raises(ValueError, match="padding"):
        ASPP3d.from_conv(make_conv(padding=0))


# --- gradients, checkpointing, precision ---------------------------------------------------


def loss_of(out: torch.Tensor) -> torch.Tensor:
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(5), dtype=out.dtype)
    return (out * weights).sum()


@pytest.mark.parametrize("name", ["dcnv2", "d2conv3d_iv"])
def test_gradients_reach_branch(name: str) -> None:
    layer, x = build_layer(make_conv(), get_variant(name)), make_input(shape=SMALL)
    loss_of(layer(x)).backward()
    grad = layer.branch.weight.grad
    assert grad is not None
    deform_channels = 81 if name == "dcnv2" else 3
    assert grad[:deform_channels].abs().sum() > 0  # offsets / dilations learn
    assert grad[deform_channels:].abs().sum() > 0  # modulation learns
    assert layer.branch.bias.grad.abs().sum() > 0


def count_branch_calls(layer: nn.Module) -> list[int]:
    calls = [0]
    original = layer.deformation_from_branch

    def counted(h: torch.Tensor):
        calls[0] += 1
        return original(h)

    layer.deformation_from_branch = counted
    return calls


@pytest.mark.parametrize("name", ["dcnv2", "d2conv3d_iv"])
def test_checkpoint_branch_same_output_and_grads(name: str) -> None:
    reference = build_layer(make_conv(), get_variant(name))
    with torch.no_grad():
        reference.branch.weight.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(3))
    checkpointed = copy.deepcopy(reference)
    checkpointed.checkpoint_branch = True
    results = []
    for layer in (reference, checkpointed):
        calls = count_branch_calls(layer)
        x = make_input(shape=SMALL).requires_grad_(True)
        out = layer(x)
        loss_of(out).backward()
        grads = [x.grad, layer.weight.grad, layer.bias.grad, layer.branch.weight.grad]
        results.append((out.detach(), grads, calls[0]))
    (out_a, grads_a, calls_a), (out_b, grads_b, calls_b) = results
    close(out_b, out_a, atol=0)
    for grad_a, grad_b in zip(grads_a, grads_b, strict=True):
        close(grad_b, grad_a, atol=1e-12)
    assert (calls_a, calls_b) == (1, 2)  # the checkpointed branch is recomputed in backward
    assert "checkpoint_branch=True" in repr(checkpointed)


def test_checkpoint_branch_only_when_training() -> None:
    layer = build_layer(make_conv(), get_variant("d2conv3d_iv", checkpoint_branch=True)).eval()
    calls = count_branch_calls(layer)
    loss_of(layer(make_input(shape=SMALL))).backward()
    assert calls[0] == 1


def test_branch_runs_in_float32_under_autocast(monkeypatch: pytest.MonkeyPatch) -> None:
    conv = nn.Conv3d(4, 3, 3, padding=1)
    layer = build_layer(conv, get_variant("d2conv3d_iv"))
    seen: dict[str, torch.dtype] = {}

    def fake_op(x, dilation_map, modulation, weight, bias, stride, padding, dilation):
        seen.update(x=x.dtype, map=dilation_map.dtype, mod=modulation.dtype, weight=weight.dtype)
        return F.conv3d(x, weight, bias, stride, padding, dilation)

    monkeypatch.setattr(ops, "d2conv3d", fake_op)
    x = make_input().to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        dilation_map, modulation = layer.predict(x)
        out = layer(x)
    assert dilation_map.dtype == modulation.dtype == torch.float32
    assert out.dtype == torch.bfloat16
    # The op sees bf16 data and weights, but float32 sampling arguments.
    assert seen == {
        "x": torch.bfloat16,
        "map": torch.float32,
        "mod": torch.float32,
        "weight": torch.bfloat16,
    }


def test_extra_repr_names_the_variant() -> None:
    text = repr(build_layer(make_conv(), get_variant("d2conv3d_i", activation="relu")))
    assert "dilation_axes='s'" in text and "activation='relu'" in text
    assert "modulation=True" in text and "branch_channels=28" in text
    assert "modulation=False" in repr(build_layer(make_conv(), get_variant("dcnv1")))
    assert "rates=" in repr(ASPP3d(4, 2))
