"""The compiled operators against the pure-PyTorch reference, gradcheck, opcheck, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import d2bench.ops as ops
from d2bench.ops import reference
from d2bench.ops.geometry import make_geometry

pytestmark = pytest.mark.usefixtures("compiled_ops")
F64 = torch.float64


@pytest.fixture(scope="module")
def compiled_ops():
    """Build/load the compiled library once; these tests compare it with the reference."""
    if ops.selected_implementation() != "compiled":
        pytest.skip("D2BENCH_OPS=reference: the compiled operators are not under test")
    ops.ensure_loaded()


def _d2_inputs(
    n=2,
    c=3,
    o=4,
    size=(4, 5, 6),
    stride=1,
    padding=1,
    dilation=1,
    *,
    scale=2.0,
    modulated=True,
    dtype=F64,
    seed=0,
):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, *size, generator=gen, dtype=dtype)
    geom = make_geometry(x, stride, padding, dilation)
    s = (torch.rand(n, 3, *geom.out_size, generator=gen, dtype=dtype) * 2 - 1) * scale
    m = torch.rand(n, 27, *geom.out_size, generator=gen, dtype=dtype) if modulated else None
    w = torch.randn(o, c, 3, 3, 3, generator=gen, dtype=dtype)
    b = torch.randn(o, generator=gen, dtype=dtype)
    return x, s, m, w, b, geom


def _dcn_inputs(
    n=2,
    c=4,
    o=3,
    size=(4, 5, 6),
    stride=1,
    padding=1,
    dilation=1,
    *,
    groups=1,
    scale=1.5,
    modulated=True,
    dtype=F64,
    seed=0,
):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, *size, generator=gen, dtype=dtype)
    geom = make_geometry(x, stride, padding, dilation)
    off = torch.randn(n, 3 * groups * 27, *geom.out_size, generator=gen, dtype=dtype) * scale
    mask = (
        torch.rand(n, groups * 27, *geom.out_size, generator=gen, dtype=dtype)
        if modulated
        else None
    )
    w = torch.randn(o, c, 3, 3, 3, generator=gen, dtype=dtype)
    b = torch.randn(o, generator=gen, dtype=dtype)
    return x, off, mask, w, b, geom


def _compiled_d2(x, s, m, w, b, geom):
    return ops.d2conv3d(x, s, m, w, b, geom.stride, geom.padding, geom.dilation)


def _compiled_dcn(groups):
    def run(x, off, mask, w, b, geom):
        return ops.deform_conv3d(x, off, mask, w, b, geom.stride, geom.padding, geom.dilation,
                                 offset_groups=groups)  # fmt: skip

    return run


def _reference_dcn(groups):
    def run(x, off, mask, w, b, geom):
        return reference.deform_conv3d_reference(x, off, mask, w, b, geom, groups)

    return run


def _assert_same_values_and_grads(compiled, ref, inputs, geom, rtol, atol):
    leaves_a = [t.clone().requires_grad_() if t is not None else None for t in inputs]
    leaves_b = [t.clone().requires_grad_() if t is not None else None for t in inputs]
    out_a = compiled(*leaves_a, geom)
    out_b = ref(*leaves_b, geom)
    torch.testing.assert_close(out_a, out_b, rtol=rtol, atol=atol)
    grad = torch.randn_like(out_a)
    out_a.backward(grad)
    out_b.backward(grad)
    names = ["input", "coordinates", "modulation", "weight", "bias"]
    for name, a, b in zip(names, leaves_a, leaves_b, strict=True):
        if a is None:
            continue
        torch.testing.assert_close(a.grad, b.grad, rtol=rtol, atol=atol, msg=f"grad of {name}")


D2_CASES = [
    dict(),
    dict(stride=2, size=(5, 6, 7)),
    dict(padding=0, size=(5, 6, 7)),
    dict(dilation=(1, 2, 2), padding=(1, 2, 2), size=(3, 7, 8)),
    dict(n=1, c=5, o=2, size=(2, 3, 9), modulated=False),
    dict(scale=6.0),  # most samples far out of bounds
]


@pytest.mark.parametrize("case", D2_CASES, ids=[str(c) for c in D2_CASES])
def test_d2conv3d_matches_reference_float64(case):
    x, s, m, w, b, geom = _d2_inputs(**case)
    _assert_same_values_and_grads(
        _compiled_d2, reference.d2conv3d_reference, (x, s, m, w, b), geom, rtol=1e-10, atol=1e-10
    )


DCN_CASES = [
    dict(),
    dict(groups=2),
    dict(stride=2, size=(5, 6, 7), groups=4),
    dict(modulated=False, dilation=2, padding=2, size=(5, 6, 6)),
    dict(scale=5.0),
]


@pytest.mark.parametrize("case", DCN_CASES, ids=[str(c) for c in DCN_CASES])
def test_deform_conv3d_matches_reference_float64(case):
    groups = case.get("groups", 1)
    x, off, mask, w, b, geom = _dcn_inputs(**case)
    _assert_same_values_and_grads(
        _compiled_dcn(groups), _reference_dcn(groups), (x, off, mask, w, b), geom,
        rtol=1e-10, atol=1e-10,
    )  # fmt: skip


def test_float32_matches_float64_reference():
    x, s, m, w, b, geom = _d2_inputs(dtype=torch.float32, seed=3)
    out = _compiled_d2(x, s, m, w, b, geom)
    expected = reference.d2conv3d_reference(*(t.double() for t in (x, s, m, w, b)), geom)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


def test_many_column_chunks():
    """Enough channels that the output voxels are processed in several column chunks."""
    x, s, m, w, b, geom = _d2_inputs(n=1, c=160, o=3, size=(8, 10, 15), seed=5)
    _assert_same_values_and_grads(
        _compiled_d2, reference.d2conv3d_reference, (x, s, m, w, b), geom, rtol=1e-9, atol=1e-9
    )


def test_unit_dilation_is_plain_conv3d():
    x, s, _m, w, b, _geom = _d2_inputs(modulated=False)
    out = ops.d2conv3d(x, torch.ones_like(s), None, w, b)
    torch.testing.assert_close(out, F.conv3d(x, w, b, padding=1), rtol=1e-12, atol=1e-12)


def test_zero_offsets_are_plain_conv3d_with_stride():
    x, off, _, w, b, _geom = _dcn_inputs(stride=2, size=(5, 6, 7))
    out = ops.deform_conv3d(x, torch.zeros_like(off), None, w, b, stride=2)
    torch.testing.assert_close(out, F.conv3d(x, w, b, stride=2, padding=1))


def test_far_outside_samples_contribute_exactly_zero():
    x, s, m, w, _, _geom = _d2_inputs()
    s = torch.full_like(s, 1e6)  # every non-centre tap far outside the volume
    centre_only = torch.zeros_like(w)
    centre_only[:, :, 1, 1, 1] = w[:, :, 1, 1, 1]
    m_centre = m[:, 13:14]
    out = ops.d2conv3d(x, s, m, w)
    expected = F.conv3d(x * m_centre, centre_only[:, :, 1:2, 1:2, 1:2])
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


# ---- gradcheck (float64, finite differences) ----


def _gradcheck(fn, inputs):
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "case",
    [
        dict(n=2, c=2, o=2, size=(3, 4, 4), scale=2.5),  # out of bounds, negative dilations
        dict(n=1, c=2, o=2, size=(4, 5, 5), stride=2, scale=1.5),
        dict(n=2, c=2, o=1, size=(3, 3, 4), scale=0.15),  # dilations near zero, both signs
    ],
)
def test_d2conv3d_gradcheck(case):
    x, s, m, w, b, geom = _d2_inputs(**case)
    inputs = tuple(t.requires_grad_() for t in (x, s, m, w, b))
    _gradcheck(lambda *a: _compiled_d2(*a, geom), inputs)


def test_d2conv3d_gradcheck_at_exactly_zero_dilation():
    """s = 0 puts taps on integer coordinates, where ∂/∂s is one-sided: check the other inputs."""
    x, s, m, w, b, geom = _d2_inputs(n=1, c=2, o=2, size=(3, 4, 4))
    s = s.clone()
    s[:, 0] = 0.0
    s[:, 2, ..., ::2] = 0.0
    inputs = (x.requires_grad_(), s, m.requires_grad_(), w.requires_grad_(), b)
    _gradcheck(lambda x_, s_, m_, w_, b_: _compiled_d2(x_, s_, m_, w_, b_, geom), inputs)


@pytest.mark.parametrize(
    "case",
    [
        dict(n=1, c=2, o=2, size=(3, 4, 4), groups=2, scale=2.0),
        dict(n=1, c=2, o=2, size=(4, 5, 5), stride=2, modulated=False),
    ],
)
def test_deform_conv3d_gradcheck(case):
    groups = case.get("groups", 1)
    x, off, mask, w, b, geom = _dcn_inputs(**case)
    inputs = tuple(t.requires_grad_() for t in (x, off, mask, w, b) if t is not None)
    if mask is None:
        fn = lambda x_, o_, w_, b_: _compiled_dcn(groups)(x_, o_, None, w_, b_, geom)  # noqa: E731
    else:
        fn = lambda *a: _compiled_dcn(groups)(*a, geom)  # noqa: E731
    _gradcheck(fn, inputs)


# ---- torch.library integration ----


def test_opcheck_d2conv3d():
    x, s, m, w, b, geom = _d2_inputs(n=1, c=2, o=2, size=(3, 4, 4))
    args = (x, s, m, w, b, list(geom.stride), list(geom.padding), list(geom.dilation))
    torch.library.opcheck(torch.ops.d2bench.d2conv3d.default, args)
    no_mod = (x, s, None, w, None, *args[5:])
    torch.library.opcheck(torch.ops.d2bench.d2conv3d.default, no_mod)


def test_opcheck_deform_conv3d():
    x, off, mask, w, b, geom = _dcn_inputs(n=1, c=2, o=2, size=(3, 4, 4), groups=2)
    args = (x, off, mask, w, b, list(geom.stride), list(geom.padding), list(geom.dilation), 2)
    torch.library.opcheck(torch.ops.d2bench.deform_conv3d.default, args)


def test_opcheck_backward_ops():
    x, s, m, w, _, geom = _d2_inputs(n=1, c=2, o=2, size=(3, 4, 4))
    conv = [list(geom.stride), list(geom.padding), list(geom.dilation)]
    grad = torch.randn(1, 2, *geom.out_size, dtype=F64)
    for mask in ([True] * 4, [False, True, False, True]):
        torch.library.opcheck(
            torch.ops.d2bench.d2conv3d_backward.default, (grad, x, s, m, w, *conv, mask),
            test_utils=("test_schema", "test_faketensor"),
        )  # fmt: skip


def test_torch_compile_fullgraph_matches_eager():
    x, s, m, w, b, _geom = _d2_inputs(n=1, c=3, o=2, size=(3, 4, 5))

    def step(x, s, m, w, b):
        return (ops.d2conv3d(x, s, m, w, b) ** 2).sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    leaves_a = [t.clone().requires_grad_() for t in (x, s, m, w, b)]
    leaves_b = [t.clone().requires_grad_() for t in (x, s, m, w, b)]
    loss_a, loss_b = compiled(*leaves_a), step(*leaves_b)
    loss_a.backward()
    loss_b.backward()
    torch.testing.assert_close(loss_a, loss_b)
    for a, b_ in zip(leaves_a, leaves_b, strict=True):
        torch.testing.assert_close(a.grad, b_.grad)


def test_unneeded_gradients_are_not_computed():
    x, s, m, w, _b, geom = _d2_inputs(n=1, c=2, o=2, size=(3, 4, 4))
    conv = [list(geom.stride), list(geom.padding), list(geom.dilation)]
    grad = torch.randn(1, 2, *geom.out_size, dtype=F64)
    gi, gs, gm, gw = torch.ops.d2bench.d2conv3d_backward(
        grad, x, s, m, w, *conv, [False, True, False, False]
    )
    assert gi.numel() == 0 and gm.numel() == 0 and gw.numel() == 0
    assert gs.shape == s.shape
    w.requires_grad_()
    ops.d2conv3d(x, s, m, w).sum().backward()
    assert w.grad is not None and x.grad is None


# ---- bad input ----


def _good_d2():
    x, s, m, w, b, _ = _d2_inputs(n=2, c=2, o=2, size=(3, 4, 4), dtype=torch.float32)
    return dict(input=x, dilation_map=s, modulation=m, weight=w, bias=b)


BAD_D2 = [
    ("input", lambda a: a["input"][0], "5-D"),
    ("dilation_map", lambda a: a["dilation_map"][:1], "dilation_map must have shape"),
    ("dilation_map", lambda a: a["dilation_map"][..., :3], "dilation_map must have shape"),
    ("dilation_map", lambda a: a["dilation_map"][:, :2], "dilation_map must have shape"),
    ("modulation", lambda a: a["modulation"][:, :9], "modulation must have shape"),
    ("weight", lambda a: a["weight"][:, :1], "input channels"),
    ("weight", lambda a: a["weight"][..., :1], "3×3×3"),
    ("bias", lambda a: a["bias"][:1], "bias must have shape"),
    ("modulation", lambda a: a["modulation"].double(), "dtype"),
    ("weight", lambda a: a["weight"].to("meta"), "is on meta"),
    ("input", lambda a: a["input"].int(), "floating-point"),
]


@pytest.mark.parametrize("name,corrupt,message", BAD_D2, ids=[f"{b[0]}-{b[2]}" for b in BAD_D2])
def test_d2conv3d_bad_input_raises_clearly(name, corrupt, message):
    args = _good_d2()
    args[name] = corrupt(args)
    with pytest.raises((ValueError, TypeError), match=message):
        ops.d2conv3d(**args)


def test_deform_conv3d_bad_offset_channels():
    x, off, mask, w, b, _ = _dcn_inputs(groups=2)
    with pytest.raises(ValueError, match=r"3·G·27 = 162 channels"):
        ops.deform_conv3d(x, off[:, :81], mask, w, b, offset_groups=2)
    with pytest.raises(ValueError, match="divide the 4 input channels"):
        ops.deform_conv3d(x, off, mask, w, b, offset_groups=3)
    with pytest.raises(ValueError, match="mask must have shape"):
        ops.deform_conv3d(x, off, mask[:, :27], w, b, offset_groups=2)


def test_bad_conv_parameters():
    args = _good_d2()
    with pytest.raises(ValueError, match="stride must be >= 1"):
        ops.d2conv3d(**args, stride=0)
    with pytest.raises(ValueError, match="3 ints"):
        ops.d2conv3d(**args, padding=(1, 1))
    with pytest.raises(ValueError, match="too small"):
        ops.d2conv3d(**args, padding=0, dilation=3)


def test_direct_op_call_checks_in_cpp():
    """Bypassing the Python wrapper still gives an error, not a crash."""
    x, off, mask, w, b, _geom = _dcn_inputs(groups=2)
    with pytest.raises(RuntimeError, match="offset must have shape"):
        torch.ops.d2bench.deform_conv3d(x, off[:, :81], mask, w, b, [1] * 3, [1] * 3, [1] * 3, 2)
    with pytest.raises(RuntimeError, match="float32 and float64"):
        args = _good_d2()
        half = [t.bfloat16() for t in args.values()]
        torch.ops.d2bench.d2conv3d(*half, [1] * 3, [1] * 3, [1] * 3)


def test_unknown_backend_is_rejected(monkeypatch):
    monkeypatch.setenv("D2BENCH_OPS", "fast")
    with pytest.raises(ValueError, match="compiled, reference"):
        ops.d2conv3d(**_good_d2())


def test_reference_backend_selected_by_environment(monkeypatch):
    args = _good_d2()
    compiled = ops.d2conv3d(**args)
    monkeypatch.setenv("D2BENCH_OPS", "reference")
    torch.testing.assert_close(ops.d2conv3d(**args), compiled, rtol=1e-5, atol=1e-5)


def test_cuda_build_targets_sm90a_on_hopper():
    """A build for a compute-capability-9.0 GPU carries sm_90a code (wgmma) and says so."""
    from d2bench.ops._extension import SM90A_DEFINE, cuda_arch_flags

    hopper = cuda_arch_flags([(9, 0)], None, (12, 0))
    assert "-gencode=arch=compute_90a,code=sm_90a" in hopper and SM90A_DEFINE in hopper
    assert not any("code=sm_90," in flag or flag.endswith("code=sm_90") for flag in hopper)
    mixed = cuda_arch_flags([(8, 0), (9, 0)], None, (12, 0))
    assert "-gencode=arch=compute_80,code=sm_80" in mixed and SM90A_DEFINE in mixed
    ampere = cuda_arch_flags([(8, 6)], None, (12, 0))
    assert ampere == [
        "-gencode=arch=compute_86,code=sm_86",
        "-gencode=arch=compute_86,code=compute_86",
    ]
    # A newer GPU than this torch knows is built for the newest it does.
    assert cuda_arch_flags([(13, 0)], None, (12, 0))[0] == "-gencode=arch=compute_120,code=sm_120"
    # TORCH_CUDA_ARCH_LIST decides the targets; only the marker follows it.
    assert cuda_arch_flags([(9, 0)], "8.0;9.0a", (12, 0)) == [SM90A_DEFINE]
    assert cuda_arch_flags([(9, 0)], "9.0", (12, 0)) == []
    assert cuda_arch_flags([], None, (12, 0)) == []


def test_a_second_checkout_loads_the_cached_build_without_compiling(tmp_path, monkeypatch):
    """The build folder and the compiler commands in it follow the sources' content, not where
    the checkout lies: the same sources elsewhere (a second clone) load the cached build."""
    import os
    import shutil
    import subprocess
    import sys

    from d2bench.ops._extension import (
        SOURCE_ENV,
        _cuda_wanted,
        build_directory,
        load_library,
        source_dir,
    )

    load_library()  # the first checkout's build (made here if no earlier test made it)
    with_cuda = _cuda_wanted()
    build, original = build_directory(with_cuda), source_dir()
    built = {p: p.stat().st_mtime_ns for p in build.iterdir() if p.suffix in {".o", ".so"}}
    assert any(p.suffix == ".so" for p in built), f"the fixture's build is not in {build}"
    clone = tmp_path / "second-clone" / "ops_cuda"
    shutil.copytree(original, clone)
    monkeypatch.setenv(SOURCE_ENV, str(clone))
    assert build_directory(with_cuda) == build

    code = "from d2bench.ops._extension import load_library; load_library()"
    env = {**os.environ, "D2BENCH_VERBOSE_BUILD": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    output = done.stdout + done.stderr
    assert "loaded the cached operator build" in output and "[1/" not in output, output
    assert {p: p.stat().st_mtime_ns for p in built} == built
    commands = (build / "build.ninja").read_text()
    assert str(clone) not in commands and str(original) not in commands
