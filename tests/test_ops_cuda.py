"""The CUDA kernels against the reference: every dtype, layout and gradient (needs a CUDA GPU)."""

from __future__ import annotations

import functools
import re

import pytest
import torch
import torch.nn.functional as F

import d2bench.ops as ops
from d2bench.bench.timing import peak_extra_memory
from d2bench.layers import get_variant
from d2bench.layers.replace import build_layer
from d2bench.ops import reference, routing
from d2bench.ops.geometry import make_geometry

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
F64 = torch.float64
CL = torch.channels_last_3d


@pytest.fixture(scope="module", autouse=True)
def cuda_ops():
    if ops.selected_implementation() != "compiled":
        pytest.skip("D2BENCH_OPS=reference: the compiled operators are not under test")
    from d2bench.ops._registration import load_and_register

    assert load_and_register(), "the operator library was built without its CUDA kernels"


def _inputs(
    kind,
    n=2,
    c=8,
    o=6,
    size=(4, 6, 7),
    stride=1,
    padding=1,
    dilation=1,
    *,
    groups=1,
    scale=2.0,
    modulated=True,
    dtype=F64,
    map_dtype=None,
    layout=None,
    seed=0,
):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    map_dtype = map_dtype or dtype

    def rand(*shape, dt=dtype):
        return torch.randn(*shape, generator=gen, device="cuda", dtype=dt)

    x = rand(n, c, *size)
    if layout is not None:
        x = x.contiguous(memory_format=layout)
    geom = make_geometry(x, stride, padding, dilation)
    if kind == "d2":
        coords = rand(n, 3, *geom.out_size, dt=map_dtype) * scale
        mask = torch.sigmoid(rand(n, 27, *geom.out_size, dt=map_dtype)) if modulated else None
    else:
        coords = rand(n, 81 * groups, *geom.out_size, dt=map_dtype) * scale
        mask = (
            torch.sigmoid(rand(n, 27 * groups, *geom.out_size, dt=map_dtype)) if modulated else None
        )
    w = rand(o, c, 3, 3, 3) / (c * 27) ** 0.5
    b = rand(o)
    return (x, coords, mask, w, b), geom


def _run(kind, groups, geom):
    def run(x, coords, mask, w, b):
        if kind == "d2":
            return ops.d2conv3d(x, coords, mask, w, b, geom.stride, geom.padding, geom.dilation)
        return ops.deform_conv3d(
            x, coords, mask, w, b, geom.stride, geom.padding, geom.dilation, offset_groups=groups
        )

    return run


def _oracle(kind, groups, geom):
    def run(x, coords, mask, w, b):
        if kind == "d2":
            return reference.d2conv3d_reference(x, coords, mask, w, b, geom)
        return reference.deform_conv3d_reference(x, coords, mask, w, b, geom, groups)

    return run


def _values_and_grads(fn, inputs, grad_seed=1, grad_layout=torch.contiguous_format):
    """The output and every input's gradient. ``grad_layout`` is the upstream gradient's memory
    format: the tensor-core backward needs channels_last_3d."""
    leaves = [None if t is None else t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*leaves)
    gen = torch.Generator(device="cuda").manual_seed(grad_seed)
    # Drawn in float64 and cast, so that every dtype sees the same upstream gradient.
    grad = torch.randn(out.shape, generator=gen, device="cuda", dtype=F64).to(out.dtype)
    out.backward(grad.contiguous(memory_format=grad_layout))
    return [out.detach()] + [None if t is None else t.grad for t in leaves]


def _rel(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


CASES = [
    ("d2", dict()),
    ("d2", dict(stride=2, size=(5, 7, 9))),
    ("d2", dict(scale=6.0)),  # most samples out of bounds, negative dilations
    ("d2", dict(modulated=False, dilation=(1, 2, 2), padding=(1, 2, 2))),
    ("d2", dict(layout=CL)),
    ("dcn", dict()),
    ("dcn", dict(groups=2)),
    ("dcn", dict(stride=2, size=(5, 7, 9), modulated=False)),
    ("dcn", dict(layout=CL, groups=2)),
]


@pytest.mark.parametrize("kind,case", CASES, ids=[f"{k}-{c}" for k, c in CASES])
def test_float64_matches_reference(kind, case):
    groups = case.get("groups", 1)
    inputs, geom = _inputs(kind, **case)
    got = _values_and_grads(_run(kind, groups, geom), inputs)
    want = _values_and_grads(_oracle(kind, groups, geom), inputs)
    names = ["output", "input", "coords", "mask", "weight", "bias"]
    for name, a, b in zip(names, got, want, strict=True):
        if b is not None:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)


@pytest.mark.parametrize("kind", ["d2", "dcn"])
@pytest.mark.parametrize("layout", [None, CL])
def test_float32_matches_reference(kind, layout):
    inputs, geom = _inputs(kind, c=16, o=8, dtype=torch.float32, layout=layout, groups=1)
    got = _values_and_grads(_run(kind, 1, geom), inputs)
    want = _values_and_grads(_oracle(kind, 1, geom), [None if t is None else t.double()
                                                       for t in inputs])  # fmt: skip
    for a, b in zip(got, want, strict=True):
        if b is not None:
            assert _rel(a, b) < 1e-5


@pytest.mark.parametrize("kind", ["d2", "dcn"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", [None, CL])
def test_half_precision_matches_reference(kind, dtype, layout):
    """bf16/fp16 data with float32 maps, against float64 on the same (rounded) values."""
    inputs, geom = _inputs(kind, c=32, o=16, size=(4, 10, 12), dtype=dtype,
                           map_dtype=torch.float32, layout=layout)  # fmt: skip
    got = _values_and_grads(_run(kind, 1, geom), inputs)
    want = _values_and_grads(
        _oracle(kind, 1, geom), [None if t is None else t.double() for t in inputs]
    )
    assert got[0].dtype == dtype
    for name, a, b in zip(["out", "x", "coords", "mask", "w", "b"], got, want, strict=True):
        if b is not None:
            assert _rel(a, b) < 1e-2, name


# Each case has at least 128 output channels per input voxel's 64-channel float32 accumulator
# (stride 2: the output has 5.25× fewer voxels than the input), so the tensor-core backward takes
# it; _check_fused_backward asserts that it did.
FUSED_BACKWARD_CASES = [
    ("d2", dict(c=96, o=136)),  # a full and a partial block of 64 input channels
    ("d2", dict(c=16, o=264, scale=6.0)),  # two blocks of 256 output channels; most samples out
    ("dcn", dict(c=48, o=128, groups=2)),  # 24 channels per offset group
    ("dcn", dict(c=32, o=768, stride=2, size=(5, 7, 9))),
]


FUSED_IDS = [f"{kind}-{i}" for i, (kind, _) in enumerate(FUSED_BACKWARD_CASES)]


@pytest.mark.parametrize("kind,case", FUSED_BACKWARD_CASES, ids=FUSED_IDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("channels", [32, 64])
def test_fused_backward_matches_reference(kind, case, dtype, channels):
    """channels_last_3d input and upstream gradient: the backward without a column buffer, with
    the weight gradient at both channel blocks per CTA (forced by the kernel policy)."""
    with ops.kernel_policy(weight_grad_channels=channels):
        kernels = _check_fused_backward(kind, dict(case), dtype, n=2)
    pattern = re.compile(rf"weight_grad_kernel<.*, {channels}>")
    assert any(pattern.search(name) for name in kernels), sorted(_kernel_names(kernels))


@pytest.mark.parametrize("waves", [2.0, 1.5])
@pytest.mark.parametrize("kind", ["d2", "dcn"])
def test_fused_backward_tap_shares_match_reference(kind, waves):
    """Grids of 64-voxel tiles that fill whole waves of two CTAs per SM keep each tile's 27 taps
    in one CTA; at 1.5 waves the launcher splits them over two CTAs per tile, which then share
    the coordinate gradients atomically. (The small cases above split into more shares.)"""
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    tiles = int(waves * 2 * sms)
    _check_fused_backward(kind, dict(c=16, o=128, size=(tiles, 8, 8)), torch.bfloat16, n=1)


def _check_fused_backward(kind: str, case: dict, dtype: torch.dtype, n: int) -> list[str]:
    """Checks the call against float64; returns the names of the kernels the backward ran."""
    groups = case.pop("groups", 1)
    inputs, geom = _inputs(kind, n=n, groups=groups, dtype=dtype, map_dtype=torch.float32,
                           layout=CL, **{"size": (4, 10, 12), **case})  # fmt: skip
    run = _run(kind, groups, geom)
    got, kernels = _kernels_run(lambda: _values_and_grads(run, inputs, grad_layout=CL))
    assert "input_grad_kernel" in _kernel_names(kernels), sorted(_kernel_names(kernels))
    want = _values_and_grads(
        _oracle(kind, groups, geom), [None if t is None else t.double() for t in inputs]
    )
    for name, a, b in zip(["out", "x", "coords", "mask", "w", "b"], got, want, strict=True):
        if b is not None:
            assert _rel(a, b) < 1e-2, name
    # The same call with a contiguous upstream gradient, left as it is, takes the CUDA-core
    # backward (by default autograd copies it into channels_last_3d for the tensor cores).
    with routing.grad_conversion(False):
        plain, plain_kernels = _kernels_run(lambda: _values_and_grads(run, inputs))
    assert "simt_input_grad_kernel" in _kernel_names(plain_kernels)
    for name, a, b in zip(["x", "coords", "mask", "w"], got[1:5], plain[1:5], strict=True):
        if b is not None:
            assert _rel(a, b) < 1e-2, name
    return list(kernels)


def _cuda_core_backward_cases() -> list[tuple[str, dict]]:
    """Shapes that make the CUDA-core backward's launcher pick each of its grids."""
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    return [
        ("d2", dict(c=16, o=8)),  # 64-voxel tiles, one block of input channels
        ("d2", dict(c=256, o=8, size=(2, 6, 8))),  # two channel blocks over 6 tiles: two shares
        ("dcn", dict(c=48, o=136, groups=2)),  # 24 channels per group; a partial output block
        ("d2", dict(c=6, o=5, scale=6.0)),  # 6 channels: scalar paths; most samples outside
        ("d2", dict(c=1024, o=8, size=(2, 4, 6))),  # weight-gradient tiles of 128 channels
        ("d2", dict(n=1, c=8, o=8, size=(4, sms, 128))),  # 4·SMs tiles of 128 voxels
    ]


def _away_from_whole(coords: torch.Tensor, margin: float = 0.05) -> torch.Tensor:
    """Dilations / offsets whose fractional part lies in [margin, 1 - margin].

    Trilinear sampling has kinks at whole-pixel positions: a position within float32 rounding of
    one can fall on different sides in float32 and float64 and take different corners, which
    changes that voxel's coordinate gradient by O(1). Over tens of thousands of voxels a few such
    positions occur (seen on the CPU kernels too); kept off them, the gradients must agree.
    """
    whole = coords.floor()
    return whole + margin + (1 - 2 * margin) * (coords - whole)


@pytest.mark.parametrize(
    "dtype,layout", [(torch.float32, None), (torch.float32, CL), (torch.bfloat16, None)]
)
def test_cuda_core_backward_grids_match_reference(dtype, layout):
    """float32 (either layout) and 16-bit calls outside the tensor-core backward: every gradient
    against float64, at each tile height of both kernels (forced, so that the launcher's cost
    model cannot leave one untested) and at the height the launcher picks."""
    for kind, case in _cuda_core_backward_cases():
        case = dict(case)
        groups, n = case.pop("groups", 1), case.pop("n", 2)
        inputs, geom = _inputs(kind, n=n, groups=groups, dtype=dtype, map_dtype=torch.float32,
                               layout=layout, **case)  # fmt: skip
        inputs = (inputs[0], _away_from_whole(inputs[1]), *inputs[2:])
        run = _run(kind, groups, geom)
        want = _values_and_grads(
            _oracle(kind, groups, geom), [None if t is None else t.double() for t in inputs]
        )
        tolerance = 1e-5 if dtype == torch.float32 else 1e-2
        for rows in ("64", "128", ""):
            with ops.kernel_policy(backward_rows=int(rows) if rows else "auto"):
                got, kernels = _kernels_run(functools.partial(_values_and_grads, run, inputs))
            for kernel in ("simt_weight_grad_kernel", "simt_input_grad_kernel") if rows else ():
                pattern = re.compile(rf"{kernel}<.*, {rows}>")
                assert any(pattern.search(name) for name in kernels), (kernel, rows, case)
            for name, a, b in zip(["out", "x", "coords", "mask", "w", "b"], got, want, strict=True):
                if b is not None:
                    assert _rel(a, b) < tolerance, (kind, case, rows or "chosen", name)


def test_forced_backward_tile_height_rejects_other_values():
    message = "backward_rows must be one of 'auto', 64, 128"
    with pytest.raises(ValueError, match=message), ops.kernel_policy(backward_rows=96):
        pass
    with pytest.raises(RuntimeError, match="backward_rows must be 0 \\(auto\\), 64 or 128"):
        torch.ops.d2bench._set_kernel_policy("auto", "auto", 96, 0)
    assert ops.current_kernel_policy().backward_rows == "auto"


MEMORY_CASES = [
    (torch.float32, CL, 64),
    (torch.float32, None, 64),
    (torch.bfloat16, None, 64),  # CUDA-core backward: its accumulator sized to the output
    (torch.bfloat16, CL, 256),  # tensor-core backward: 64 accumulator channels, half the output
    (torch.bfloat16, CL, 64),  # CUDA-core backward: the tensor-core one's would be 2× the output
]


@pytest.mark.parametrize("o,kernel", [(256, "input_grad_kernel"), (64, "simt_input_grad_kernel")])
def test_tensor_core_backward_only_where_its_accumulator_fits(o, kernel):
    """16-bit channels_last_3d: the tensor-core backward's 64-channel float32 accumulator must
    fit within the output's size, else the CUDA-core backward takes the call."""
    inputs, geom = _inputs("d2", n=1, c=64, o=o, size=(2, 6, 8), dtype=torch.bfloat16,
                           map_dtype=torch.float32, layout=CL)  # fmt: skip
    run = _run("d2", 1, geom)
    got, kernels = _kernels_run(lambda: _values_and_grads(run, inputs, grad_layout=CL))
    launched = _kernel_names(kernels)
    assert kernel in launched, sorted(launched)
    other = "simt_input_grad_kernel" if kernel == "input_grad_kernel" else "input_grad_kernel"
    assert other not in launched, sorted(launched)
    want = _values_and_grads(_oracle("d2", 1, geom), [t.double() for t in inputs])
    for name, a, b in zip(["out", "x", "coords", "mask", "w", "b"], got, want, strict=True):
        assert _rel(a, b) < 1e-2, name


@pytest.mark.parametrize("kind", ["d2", "dcn"])
@pytest.mark.parametrize("dtype,layout,o", MEMORY_CASES)
def test_backward_extra_memory_within_the_output(kind, dtype, layout, o):
    """No column buffer: the backward call asks for no more memory than the output's size.

    The weight is held in the input's layout, as the layers pass it: the tensor-core backward
    reads it in channels_last_3d order and copies a weight held otherwise (the weight's size,
    which here, at 2×12×14 voxels, is larger than the output)."""
    inputs, geom = _inputs(kind, n=1, c=256, o=o, size=(2, 12, 14), dtype=dtype,
                           map_dtype=torch.float32, layout=layout)  # fmt: skip
    if layout is not None:
        inputs = (*inputs[:3], inputs[3].contiguous(memory_format=layout), inputs[4])
    leaves = [None if t is None else t.detach().clone().requires_grad_() for t in inputs]
    out = _run(kind, 1, geom)(*leaves)
    grad = torch.randn_like(out)
    wanted = [t for t in leaves if t is not None]
    memory = peak_extra_memory(lambda g: torch.autograd.grad(out, wanted, g), grad, "cuda")
    assert memory["extra_bytes"] <= out.numel() * out.element_size(), memory


def _grid_sizes():
    """Output voxels that make the forward launch each of its tile configurations.

    The launcher halves the rows per CTA when a grid would leave SMs idle, runs one CTA per SM
    when the grid fills them exactly (and, for 16-bit types, when it is ≥ 8 waves long), and two
    otherwise: SMs and 2·SMs tiles of the full height reach the last two.
    """
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    return {"two CTAs per SM": 2 * sms, "one CTA per SM": sms}


@pytest.mark.parametrize("config", ["two CTAs per SM", "one CTA per SM"])
@pytest.mark.parametrize("dtype,rows_per_cta", [(torch.bfloat16, 64), (torch.float32, 128)])
def test_every_tile_configuration_matches_reference(config, dtype, rows_per_cta):
    ctas = _grid_sizes()[config]
    size = (ctas, rows_per_cta // 8, 8)  # T·H·W = ctas · rows_per_cta output voxels
    inputs, geom = _inputs("d2", n=1, c=16, o=8, size=size, dtype=dtype,
                           map_dtype=torch.float32, layout=CL)  # fmt: skip
    got = _run("d2", 1, geom)(*inputs)
    want = _oracle("d2", 1, geom)(*[None if t is None else t.double() for t in inputs])
    assert _rel(got, want) < (1e-2 if dtype == torch.bfloat16 else 1e-5)


def _hopper() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability(0) == (9, 0)


def _kernel_names(events: set[str]) -> set[str]:
    """The bare kernel names (no namespace, template arguments or parameters) among ``events``."""
    return {name.split("<")[0].split()[-1].split("::")[-1] for name in events}


def _kernels_run(fn):
    """The result of ``fn()`` and the names of the CUDA kernels it launched."""
    activities = [torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        result = fn()
        torch.cuda.synchronize()
    return result, {event.name for event in prof.events()}


HOPPER_CASES = [
    ("d2", dict(c=32, o=256)),
    ("d2", dict(c=96, o=264, scale=6.0)),  # two blocks of 256 outputs; most samples outside
    ("d2", dict(c=64, o=24, stride=2, size=(5, 9, 11))),
    ("d2", dict(c=32, o=15)),  # an odd channel count: outputs stored one at a time
    ("d2", dict(c=32, o=32, scale=0.0)),  # every tap on the centre: one corner per sample
    ("dcn", dict(c=64, o=32, groups=2)),
    ("dcn", dict(c=32, o=256, modulated=False)),
]


@pytest.mark.skipif(not _hopper(), reason="needs a compute-capability-9.0 GPU (sm_90a kernel)")
@pytest.mark.parametrize("kind,case", HOPPER_CASES, ids=[f"{k}-{i}" for i, (k, _) in
                                                         enumerate(HOPPER_CASES)])  # fmt: skip
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_hopper_forward_matches_reference(kind, case, dtype):
    """The wgmma forward (the default on Hopper) against float64 and the mma.sync forward."""
    case = dict(case)
    groups = case.pop("groups", 1)
    inputs, geom = _inputs(kind, n=2, groups=groups, dtype=dtype, map_dtype=torch.float32,
                           layout=CL, **{"size": (4, 10, 12), **case})  # fmt: skip
    got, kernels = _kernels_run(lambda: _run(kind, groups, geom)(*inputs))
    assert any("hopper_forward_kernel" in name for name in kernels), sorted(kernels)
    want = _oracle(kind, groups, geom)(*[None if t is None else t.double() for t in inputs])
    assert got.dtype == dtype and got.is_contiguous(memory_format=CL)
    assert _rel(got, want) < 1e-2
    with ops.kernel_policy(forward="mma"):
        plain, kernels = _kernels_run(lambda: _run(kind, groups, geom)(*inputs))
    assert not any("hopper_forward_kernel" in name for name in kernels)
    assert _rel(got, plain) < 1e-2


@pytest.mark.skipif(not _hopper(), reason="needs a compute-capability-9.0 GPU (sm_90a kernel)")
def test_hopper_forward_fills_every_sm():
    """A grid of one 128-voxel tile per SM: all CTAs resident at once, each its own rows."""
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    inputs, geom = _inputs("d2", n=1, c=32, o=64, size=(sms, 16, 8), dtype=torch.bfloat16,
                           map_dtype=torch.float32, layout=CL)  # fmt: skip
    got, kernels = _kernels_run(lambda: _run("d2", 1, geom)(*inputs))
    assert any("hopper_forward_kernel" in name for name in kernels)
    want = _oracle("d2", 1, geom)(*[t.double() for t in inputs])
    assert _rel(got, want) < 1e-2


def _inputs_past_2_pow_31(c: int, o: int, h: int, w: int, weight_scale: float) -> tuple:
    """bf16 input of > 2³¹ elements (T = 4), dilations near 1 and small weights."""
    free, _ = torch.cuda.mem_get_info()
    if free < 24 * 2**30:
        pytest.skip("needs 24 GiB of free GPU memory")
    t = 4
    assert c * t * h * w > 2**31
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(1, c, t, h, w, device="cuda", dtype=torch.bfloat16, generator=gen)
    s = 1 + 0.3 * torch.randn(1, 3, t, h, w, device="cuda", generator=gen)
    wgt = torch.randn(o, c, 3, 3, 3, device="cuda", dtype=torch.bfloat16, generator=gen)
    return x, s, wgt / weight_scale


def _check_far_end(out: torch.Tensor, x: torch.Tensor, s: torch.Tensor, wgt: torch.Tensor):
    """The last 12 rows of the output equal the reference run on the last 24 rows of the input."""
    h = x.shape[-2]
    crop = slice(h - 24, h)  # |s| < 3 keeps every sample of the last 12 rows inside the crop
    assert float(s[..., crop, :].abs().max()) < 3
    want = reference.d2conv3d_reference(
        x[..., crop, :].double(), s[..., crop, :].double(), None, wgt.double(), None,
        make_geometry(x[..., crop, :], 1, 1, 1),
    )  # fmt: skip
    assert _rel(out[..., h - 12 :, :], want[..., 12:, :]) < 1e-2


@pytest.mark.skipif(not _hopper(), reason="needs a compute-capability-9.0 GPU (sm_90a kernel)")
def test_hopper_forward_index_past_2_pow_31_elements():
    """64-bit addressing in the wgmma forward: input and output of > 2³¹ elements."""
    x, s, wgt = _inputs_past_2_pow_31(c=32, o=32, h=4096, w=4200, weight_scale=30)
    x = x.contiguous(memory_format=CL)  # the wgmma forward's layout (the old copy is freed)
    out, kernels = _kernels_run(lambda: ops.d2conv3d(x, s, None, wgt))
    assert any("hopper_forward_kernel" in name for name in kernels)
    _check_far_end(out, x, s, wgt)


def test_odd_channel_count_uses_the_scalar_path():
    inputs, geom = _inputs("d2", c=3, o=5, dtype=torch.bfloat16, map_dtype=torch.float32)
    got = _run("d2", 1, geom)(*inputs)
    want = _oracle("d2", 1, geom)(*[t.double() for t in inputs])
    assert _rel(got, want) < 1e-2


def test_channels_last_output_follows_input():
    inputs, geom = _inputs("d2", dtype=torch.float32, layout=CL)
    out = _run("d2", 1, geom)(*inputs)
    assert out.is_contiguous(memory_format=CL)
    plain = _run("d2", 1, geom)(inputs[0].contiguous(), *inputs[1:])
    torch.testing.assert_close(out, plain)


def test_gradcheck_float64():
    for kind, groups in (("d2", 1), ("dcn", 2)):
        inputs, geom = _inputs(kind, n=1, c=2, o=2, size=(3, 4, 4), groups=groups, scale=1.5)
        leaves = tuple(t.requires_grad_() for t in inputs)
        assert torch.autograd.gradcheck(_run(kind, groups, geom), leaves, eps=1e-6, atol=1e-6)


def test_opcheck_cuda():
    for kind, op, groups in (("d2", torch.ops.d2bench.d2conv3d.default, 1),
                             ("dcn", torch.ops.d2bench.deform_conv3d.default, 2)):  # fmt: skip
        inputs, geom = _inputs(kind, n=1, c=4, o=2, size=(3, 4, 4), groups=groups)
        conv = [list(geom.stride), list(geom.padding), list(geom.dilation)]
        args = (*inputs, *conv) if kind == "d2" else (*inputs, *conv, groups)
        torch.library.opcheck(op, args)


def test_index_past_2_pow_31_elements():
    """Input and output of > 2³¹ elements: compare a crop at the far end with the reference."""
    x, s, wgt = _inputs_past_2_pow_31(c=8, o=8, h=8192, w=8200, weight_scale=15)
    h = x.shape[-2]
    out = ops.d2conv3d(x, s, None, wgt)
    _check_far_end(out, x, s, wgt)
    del out
    s.requires_grad_()
    x.requires_grad_()
    ops.d2conv3d(x, s, None, wgt)[..., h - 12 :, :].float().sum().backward()
    assert torch.isfinite(s.grad).all() and s.grad[..., h - 12 :, :].abs().sum() > 0
    assert float(s.grad[..., : h - 13, :].abs().max()) == 0.0
    assert x.grad[..., h - 14 :, :].abs().sum() > 0


def test_torch_compile_fullgraph_over_a_d2_layer():
    conv = torch.nn.Conv3d(8, 8, 3, padding=1).cuda()
    layer = build_layer(conv, get_variant("d2conv3d_iv"))
    with torch.no_grad():
        layer.branch.weight.normal_(0, 0.05)
    x = torch.randn(2, 8, 4, 10, 12, device="cuda")
    compiled = torch.compile(layer, fullgraph=True)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = compiled(xa), layer(xb)
    assert _rel(ya, yb) < 1e-5
    ya.square().sum().backward()
    grads_a = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    yb.square().sum().backward()
    # float32 atomics and inductor's own fusion reorder sums: compare by relative norm.
    for a, b in zip(grads_a, [p.grad for p in layer.parameters()], strict=True):
        assert _rel(a, b) < 1e-4
    assert _rel(xa.grad, xb.grad) < 1e-4


def test_autocast_runs_bf16_with_float32_coordinates():
    conv = torch.nn.Conv3d(16, 16, 3, padding=1).cuda()
    layer = build_layer(conv, get_variant("d2conv3d_iv"))
    with torch.no_grad():
        layer.branch.weight.normal_(0, 0.02)
    x = torch.randn(1, 16, 4, 12, 14, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        dilation_map, modulation = layer.predict(x)
        out = layer(x)
    assert dilation_map.dtype == modulation.dtype == torch.float32
    assert out.dtype == torch.bfloat16
    assert _rel(out, layer(x)) < 1e-2


def test_deterministic_mode_is_honoured():
    inputs, geom = _inputs("d2", dtype=torch.float32)
    x, s, m, w, b = (t.requires_grad_() for t in inputs)
    torch.use_deterministic_algorithms(True)
    try:
        out = _run("d2", 1, geom)(x, s, m, w, b)  # the forward is deterministic
        with pytest.raises(RuntimeError, match="deterministic"):
            out.sum().backward()
    finally:
        torch.use_deterministic_algorithms(False)
    # Without the input gradient the backward is deterministic and allowed.
    torch.use_deterministic_algorithms(True)
    try:
        x2 = x.detach()
        first = torch.autograd.grad(_run("d2", 1, geom)(x2, s, m, w, b).sum(), [s, w])
        second = torch.autograd.grad(_run("d2", 1, geom)(x2, s, m, w, b).sum(), [s, w])
    finally:
        torch.use_deterministic_algorithms(False)
    for a, b_ in zip(first, second, strict=True):
        assert torch.equal(a, b_)


def test_runs_on_the_current_stream():
    inputs, geom = _inputs("dcn", dtype=torch.float32)
    expected = _run("dcn", 1, geom)(*inputs)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        got = _run("dcn", 1, geom)(*inputs)
    torch.cuda.current_stream().wait_stream(stream)
    torch.testing.assert_close(got, expected)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs a second CUDA GPU")
def test_second_device():
    inputs, geom = _inputs("d2", dtype=torch.float32)
    expected = _run("d2", 1, geom)(*inputs)
    moved = [t.to("cuda:1") for t in inputs]
    torch.testing.assert_close(_run("d2", 1, geom)(*moved).cpu(), expected.cpu())


def test_zero_offsets_equal_cudnn_conv3d_bf16():
    inputs, _geom = _inputs("dcn", c=32, o=16, size=(4, 12, 12), dtype=torch.bfloat16,
                           map_dtype=torch.float32, layout=CL, modulated=False)  # fmt: skip
    x, off, _, w, b = inputs
    got = ops.deform_conv3d(x, torch.zeros_like(off), None, w, b)
    want = F.conv3d(x.double(), w.double(), b.double(), padding=1)
    assert _rel(got, want) < 1e-2
