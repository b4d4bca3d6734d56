"""The CUDA kernels compiled for the CPU and run in emulation, since CI has no GPU: both backward
paths (CUDA-core and mma.sync tensor-core) and the mma.sync and CUDA-core forwards; only the
Hopper (wgmma) forward is left to the GPU tests.

This does not replace the GPU tests (tests/test_ops_cuda.py runs the same kernels on a device).
It checks the kernels' logic on every CI run against the float64 reference: indexing, tiling,
the launcher's grid choices on a 4-SM device, and the reductions. tests/cuda_emulation/ says
what is emulated and how.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from cuda_emulation import harness

from d2bench.ops import reference
from d2bench.ops.geometry import make_geometry

pytestmark = pytest.mark.slow
CL = torch.channels_last_3d
F64 = torch.float64


@pytest.fixture(scope="module")
def emulated(tmp_path_factory) -> Iterator:
    # 16-bit calls take the CUDA-core backward unless a test asks for the tensor-core one (the
    # emulated module keeps its own kernel policy, apart from the compiled operators').
    module = harness.build(tmp_path_factory.mktemp("cuda-emulation"))
    module.set_kernel_policy("auto", "cuda_core", 0, 0)
    yield module


@pytest.fixture
def tensor_core(emulated) -> Iterator:
    """The emulated module with the tensor-core (mma.sync) backward allowed, for one test."""
    emulated.set_kernel_policy("auto", "auto", 0, 0)
    emulated.launched_kernels()
    try:
        yield emulated
    finally:
        emulated.set_kernel_policy("auto", "cuda_core", 0, 0)


def _inputs(kind, dtype, n=2, c=8, o=6, size=(3, 5, 6), stride=1, groups=1, scale=2.0):
    """Float64 values already rounded to ``dtype`` (float32 maps for 16-bit data)."""
    gen = torch.Generator().manual_seed(0)
    map_dtype = F64 if dtype == F64 else torch.float32

    def rand(*shape, dt=dtype):
        return torch.randn(*shape, generator=gen, dtype=F64).to(dt).double()

    x = rand(n, c, *size)
    geom = make_geometry(x, stride, 1, 1)
    channels = 3 if kind == "d2" else 81 * groups
    coords = rand(n, channels, *geom.out_size, dt=map_dtype) * scale
    mask = torch.sigmoid(rand(n, 27 * groups, *geom.out_size, dt=map_dtype)).to(map_dtype).double()
    w = rand(o, c, 3, 3, 3) / (c * 27) ** 0.5
    w = w.to(dtype).double()
    return (x, coords, mask, w), geom


def _reference_grads(kind, inputs, geom, groups, grad):
    leaves = [t.clone().requires_grad_() for t in inputs]
    if kind == "d2":
        out = reference.d2conv3d_reference(*leaves[:4], None, geom)
    else:
        out = reference.deform_conv3d_reference(*leaves[:4], None, geom, groups)
    return torch.autograd.grad(out, leaves, grad)


def _emulated_grads(emulated, kind, inputs, geom, groups, grad, dtype, layout, mask):
    fmt = layout or torch.contiguous_format
    map_dtype = F64 if dtype == F64 else torch.float32
    x, coords, modulation, w = inputs
    args = (
        grad.to(dtype).contiguous(memory_format=fmt),
        x.to(dtype).contiguous(memory_format=fmt),
        coords.to(map_dtype),
        modulation.to(map_dtype),
        w.to(dtype).contiguous(memory_format=fmt),
        list(geom.stride),
        list(geom.padding),
        list(geom.dilation),
    )
    if kind == "d2":
        return emulated.d2conv3d_backward(*args, list(mask))
    return emulated.deform_conv3d_backward(*args, groups, list(mask))


def _rel(a, b):
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


CASES = [
    ("d2", dict(), torch.float32, CL),
    ("d2", dict(), F64, None),
    ("d2", dict(), torch.bfloat16, None),  # float32 accumulator of 4 channels per launch
    ("d2", dict(stride=2, size=(5, 7, 9), scale=6.0), torch.float32, None),  # mostly outside
    ("dcn", dict(c=16, o=8, groups=2), torch.float32, CL),
    ("dcn", dict(c=16, o=8, groups=2), torch.bfloat16, CL),
    ("d2", dict(c=6, o=5), torch.float32, None),  # 6 channels: the scalar paths
    ("d2", dict(c=256, o=8, n=1, size=(2, 4, 5)), torch.float32, CL),  # shares; 128-channel tiles
    ("d2", dict(c=8, o=8, n=1, size=(8, 16, 8)), torch.float32, CL),  # 128-voxel tiles
]


@pytest.mark.parametrize("kind,case,dtype,layout", CASES, ids=[f"{c[0]}-{i}" for i, c in
                                                               enumerate(CASES)])  # fmt: skip
def test_emulated_cuda_core_backward_matches_reference(emulated, kind, case, dtype, layout):
    groups = case.get("groups", 1)
    inputs, geom = _inputs(kind, dtype, **case)
    out_shape = (inputs[0].shape[0], inputs[3].shape[0], *geom.out_size)
    grad = torch.randn(out_shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    grad = grad.to(dtype).double()
    want = _reference_grads(kind, inputs, geom, groups, grad)
    got = _emulated_grads(emulated, kind, inputs, geom, groups, grad, dtype, layout, [True] * 4)
    tolerance = {F64: 1e-10, torch.float32: 1e-5}.get(dtype, 1e-2)
    for name, a, b in zip(["input", "coords", "mask", "weight"], got, want, strict=True):
        assert _rel(a, b) < tolerance, name


def test_emulated_coordinate_gradients_alone_are_deterministic(emulated):
    """Without the input gradient nothing is added atomically: two calls give the same bits."""
    inputs, geom = _inputs("dcn", torch.float32, c=16, o=8, groups=2)
    grad = torch.randn(2, 8, *geom.out_size, generator=torch.Generator().manual_seed(1), dtype=F64)
    mask = [False, True, True, True]
    first = _emulated_grads(emulated, "dcn", inputs, geom, 2, grad, torch.float32, CL, mask)
    second = _emulated_grads(emulated, "dcn", inputs, geom, 2, grad, torch.float32, CL, mask)
    assert first[0].numel() == 0
    for a, b in zip(first[1:], second[1:], strict=True):
        assert torch.equal(a, b)
    want = _reference_grads("dcn", inputs, geom, 2, grad)
    assert _rel(first[1], want[1]) < 1e-5 and _rel(first[3], want[3]) < 1e-5


# Tensor-core backward cases: channels_last_3d 16-bit data with at least 128 output channels per
# input voxel's 64-channel float32 accumulator, so the fused backward takes them.
TENSOR_CORE_CASES = [
    ("d2", dict(c=16, o=128, n=1, size=(2, 3, 4)), torch.bfloat16),
    ("d2", dict(c=80, o=128, n=1, size=(2, 3, 4), scale=4.0), torch.float16),  # 64 + 16 channels
    ("dcn", dict(c=32, o=128, n=1, size=(2, 3, 4), groups=2), torch.bfloat16),
]


@pytest.mark.parametrize("channels", [32, 64])
@pytest.mark.parametrize("kind,case,dtype", TENSOR_CORE_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(TENSOR_CORE_CASES)])  # fmt: skip
def test_emulated_tensor_core_backward_matches_reference(tensor_core, kind, case, dtype, channels):
    """The mma.sync backward (weight gradient at 32 or 64 input channels per CTA, input gradient
    by channel blocks of 64) against float64, and the kernels it launched."""
    groups = case.get("groups", 1)
    inputs, geom = _inputs(kind, dtype, **case)
    out_shape = (inputs[0].shape[0], inputs[3].shape[0], *geom.out_size)
    grad = torch.randn(out_shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    grad = grad.to(dtype).double()
    want = _reference_grads(kind, inputs, geom, groups, grad)
    tensor_core.set_kernel_policy("auto", "auto", 0, channels)
    got = _emulated_grads(tensor_core, kind, inputs, geom, groups, grad, dtype, CL, [True] * 4)
    launched = tensor_core.launched_kernels()
    assert any("weight_grad_kernel<" in k and f", {channels}>" in k for k in launched), launched
    assert any(k.startswith("void d2bench::cuda::input_grad_kernel<") for k in launched), launched
    assert not any("simt_" in k for k in launched), launched
    for name, a, b in zip(["input", "coords", "mask", "weight"], got, want, strict=True):
        assert _rel(a, b) < 1e-2, name


# Forward cases: 16-bit data in channels_last_3d take the mma.sync kernel (the Hopper one is not
# emulated), float32 the CUDA-core tile; both against float64 with a bias.
FORWARD_CASES = [
    ("d2", dict(c=16, o=24, n=1, size=(2, 3, 4)), torch.bfloat16, "MmaTile"),
    ("d2", dict(c=40, o=16, n=2, size=(2, 3, 4), scale=4.0), torch.float16, "MmaTile"),
    ("dcn", dict(c=32, o=8, n=1, size=(2, 3, 4), groups=2), torch.bfloat16, "MmaTile"),
    ("d2", dict(c=8, o=8, n=1, size=(2, 3, 4)), torch.float32, "SimtTile"),
]


@pytest.mark.parametrize("kind,case,dtype,tile", FORWARD_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(FORWARD_CASES)])  # fmt: skip
def test_emulated_forward_matches_reference(emulated, kind, case, dtype, tile):
    groups = case.get("groups", 1)
    (x, coords, mask, w), geom = _inputs(kind, dtype, **case)
    bias = torch.randn(w.shape[0], generator=torch.Generator().manual_seed(2), dtype=F64)
    if kind == "d2":
        want = reference.d2conv3d_reference(x, coords, mask, w, bias, geom)
    else:
        want = reference.deform_conv3d_reference(x, coords, mask, w, bias, geom, groups)
    map_dtype = torch.float32
    args = (
        x.to(dtype).contiguous(memory_format=CL),
        coords.to(map_dtype),
        mask.to(map_dtype),
        w.to(dtype).contiguous(memory_format=CL),
        bias.to(dtype),
        list(geom.stride),
        list(geom.padding),
        list(geom.dilation),
    )
    emulated.launched_kernels()
    got = emulated.d2conv3d(*args) if kind == "d2" else emulated.deform_conv3d(*args, groups)
    launched = emulated.launched_kernels()
    assert any("fused_forward_kernel<" in name and tile in name for name in launched), launched
    assert got.dtype == dtype
    assert _rel(got, want) < (1e-5 if dtype == torch.float32 else 1e-2)


@pytest.mark.parametrize(("channels", "expected"), [(16, 32), (80, 64)])
def test_emulated_launcher_gives_the_weight_gradient_64_channels_where_a_group_has_more_than_32(
    tensor_core, channels, expected
):
    """`auto` takes 64 input channels per CTA (measured faster on every benchmarked layer) unless
    a group has 32 or fewer, where half of a 64-channel tile would stay empty."""
    inputs, geom = _inputs("d2", torch.bfloat16, c=channels, o=128, n=1, size=(2, 3, 4))
    out_shape = (1, 128, *geom.out_size)
    grad = torch.randn(out_shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    grad = grad.to(torch.bfloat16).double()
    mask = [False, False, False, True]
    got = _emulated_grads(tensor_core, "d2", inputs, geom, 1, grad, torch.bfloat16, CL, mask)
    launched = [k for k in tensor_core.launched_kernels() if "weight_grad_kernel<" in k]
    assert launched and all(f", {expected}>" in k for k in launched), launched
    want = _reference_grads("d2", inputs, geom, 1, grad)
    assert _rel(got[3], want[3]) < 1e-2
