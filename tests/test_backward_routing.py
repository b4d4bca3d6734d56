"""Which backward kernels a call takes: the Python mirror of the CUDA routing, the upstream
gradient's copy into channels_last_3d that keeps 16-bit training steps on the tensor-core
backward, and the record of each layer's path. The CUDA tests check the mirror against the
kernels the profiler sees."""

from __future__ import annotations

import copy

import pytest
import torch

import d2bench.ops as ops
from d2bench.core.config import ModelConfig
from d2bench.layers import D2Conv3d, SampledConv3d
from d2bench.ops import routing
from d2bench.ops.routing import backward_decision, grad_for_backward, record_backward_paths

CL = torch.channels_last_3d
BF16 = torch.bfloat16


@pytest.fixture(scope="module")
def compiled_ops():
    if ops.selected_implementation() != "compiled":
        pytest.skip("D2BENCH_OPS=reference: the compiled operators are not under test")
    ops.ensure_loaded()


def _call(n=1, c=64, o=128, size=(2, 6, 8), stride=1, dtype=BF16, layout=CL, device="cpu"):
    """Input, upstream gradient (channels_last_3d) and weight of a call, as the kernels see them."""
    x = torch.randn(n, c, *size, dtype=dtype, device=device).contiguous(memory_format=layout)
    out = [(s + 2 - 3) // stride + 1 for s in size]
    grad = torch.randn(n, o, *out, dtype=dtype, device=device).contiguous(memory_format=CL)
    weight = torch.randn(o, c, 3, 3, 3, dtype=dtype, device=device)
    return x, grad, weight


def _cuda(grad, x, weight, groups=1, input_grad=True):
    return backward_decision(grad, x, weight, groups, input_grad, device_type="cuda")


# -- the decision (CUDA routing examined on CPU tensors) -------------------------------------


def test_cpu_calls_take_the_cpu_kernels():
    x, grad, weight = _call()
    assert backward_decision(grad, x, weight).path == "cpu"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16_bit_channels_last_call_takes_tensor_cores(dtype):
    x, grad, weight = _call(dtype=dtype)
    assert _cuda(grad, x, weight) == routing.BackwardDecision("tensor_core")


@pytest.mark.parametrize(
    "grad_layout,reason",
    [(torch.contiguous_format, "upstream gradient contiguous"), (CL, "")],
)
def test_upstream_gradient_layout_decides(grad_layout, reason):
    x, grad, weight = _call()
    decision = _cuda(grad.contiguous(memory_format=grad_layout), x, weight)
    assert decision.path == ("tensor_core" if not reason else "cuda_core")
    assert decision.reason == reason


@pytest.mark.parametrize(
    "change,reason",
    [
        (dict(dtype=torch.float32), "float32 input"),
        (dict(layout=torch.contiguous_format), "input not channels_last_3d"),
        (dict(o=64), "accumulator would be larger than the output"),
        (dict(stride=2), "accumulator would be larger than the output"),
        (dict(c=12), "multiple of 8"),
        (dict(o=132), "multiple of 8"),
    ],
)
def test_other_conditions_send_calls_to_cuda_cores(change, reason):
    x, grad, weight = _call(**change)
    decision = _cuda(grad, x, weight)
    assert decision.path == "cuda_core"
    assert reason in decision.reason


def test_accumulator_matters_only_for_the_input_gradient():
    x, grad, weight = _call(o=64)
    assert _cuda(grad, x, weight, input_grad=True).path == "cuda_core"
    assert _cuda(grad, x, weight, input_grad=False).path == "tensor_core"


def test_offset_groups_split_the_channels():
    x, grad, weight = _call(c=32)
    assert _cuda(grad, x, weight, groups=2).path == "tensor_core"  # 16 per group
    assert "multiple of 8" in _cuda(grad, x, weight, groups=8).reason  # 4 per group


def test_misaligned_tensors_take_cuda_cores():
    x, grad, weight = _call()
    # One element past a 16-byte boundary, channels still innermost.
    flat = torch.empty(x.numel() + 1, dtype=x.dtype)
    shifted = flat[1:].view(x.shape[0], *x.shape[2:], x.shape[1]).permute(0, 4, 1, 2, 3)
    assert shifted.is_contiguous(memory_format=CL) and shifted.data_ptr() % 16 != 0
    assert _cuda(grad, shifted, weight).reason == "input not 16-byte aligned"
    flat = torch.empty(grad.numel() + 1, dtype=grad.dtype)
    g = flat[1:].view(grad.shape[0], *grad.shape[2:], grad.shape[1]).permute(0, 4, 1, 2, 3)
    assert _cuda(g, x, weight).reason == "upstream gradient channels_last_3d"


def test_forced_cuda_core_backward_is_mirrored():
    x, grad, weight = _call()
    with ops.kernel_policy(backward="cuda_core"):
        assert _cuda(grad, x, weight) == routing.BackwardDecision(
            "cuda_core", "kernel policy backward='cuda_core'"
        )
    assert _cuda(grad, x, weight) == routing.BackwardDecision("tensor_core")


# -- the upstream gradient handed to the kernels ---------------------------------------------


def _upstream(kind: str, like: torch.Tensor) -> torch.Tensor:
    if kind == "contiguous":
        return like.contiguous()
    if kind == "expanded":  # what out.sum().backward() hands the layer
        return torch.ones((), dtype=like.dtype).expand(like.shape)
    return like.contiguous(memory_format=CL)


@pytest.mark.parametrize("kind", ["contiguous", "expanded"])
def test_gradient_copied_to_channels_last_where_only_it_lacks(kind):
    x, grad, weight = _call()
    upstream = _upstream(kind, grad)
    given, decision, converted = grad_for_backward(upstream, x, weight, device_type="cuda")
    assert converted and decision.path == "tensor_core"
    assert given.is_contiguous(memory_format=CL) and not given.is_contiguous()
    assert torch.equal(given, upstream)


def test_channels_last_gradient_goes_as_it_is():
    x, grad, weight = _call()
    given, decision, converted = grad_for_backward(grad, x, weight, device_type="cuda")
    assert given is grad and not converted and decision.path == "tensor_core"


@pytest.mark.parametrize(
    "change", [dict(dtype=torch.float32), dict(o=64), dict(layout=torch.contiguous_format)]
)
def test_no_copy_where_the_tensor_cores_would_not_run_anyway(change):
    x, grad, weight = _call(**change)
    upstream = grad.contiguous()
    given, decision, converted = grad_for_backward(upstream, x, weight, device_type="cuda")
    assert given is upstream and not converted and decision.path == "cuda_core"


def test_conversion_can_be_switched_off():
    x, grad, weight = _call()
    upstream = grad.contiguous()
    with routing.grad_conversion(False):
        given, decision, converted = grad_for_backward(upstream, x, weight, device_type="cuda")
    assert given is upstream and not converted
    assert decision.reason == "upstream gradient contiguous"
    assert grad_for_backward(upstream, x, weight, device_type="cuda")[2]  # on again after


@pytest.mark.parametrize("kind", ["contiguous", "expanded", "channels_last_3d"])
def test_cpu_gradient_handling_unchanged(kind):
    """On a CPU the kernels get what they got before: packed layouts as they are, anything else
    made contiguous."""
    x, grad, weight = _call(dtype=torch.float32)
    upstream = _upstream(kind, grad)
    given, decision, converted = grad_for_backward(upstream, x, weight)
    assert decision.path == "cpu" and not converted
    if kind == "expanded":
        assert given.is_contiguous() and torch.equal(given, upstream)
    else:
        assert given is upstream


# -- the record, through the layers ----------------------------------------------------------


def _layer(c=8, o=16, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    layer = D2Conv3d(c, o, dtype=dtype)
    with torch.no_grad():  # a branch that moves the samples off the plain grid
        layer.branch.weight.normal_(0, 0.05)
        layer.branch.bias.normal_(0, 0.3)
    return layer


def _layer_grads(layer, x):
    layer.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    layer(x).sum().backward()
    return [x.grad] + [p.grad for p in layer.parameters()]


@pytest.mark.usefixtures("compiled_ops")
def test_layer_records_its_backward_and_keeps_its_gradients(monkeypatch):
    """A D²Conv3D layer followed by .sum().backward() on a CPU: one call recorded under the
    layer's name (the gradient arrives expanded; the CPU kernels take it made contiguous), and
    the gradients equal the pure-PyTorch reference's."""
    layer = _layer()
    model = torch.nn.Sequential(layer)
    x = torch.randn(2, 8, 3, 5, 6, dtype=torch.float64)
    with record_backward_paths(model) as record:
        got = _layer_grads(layer, x)
    assert [(c.op, c.layer, c.path, c.grad_layout, c.converted) for c in record.calls] == [
        ("d2conv3d", "0", "cpu", "strided", False)
    ]
    assert record.counts() == {"cpu": 1, "converted": 0}
    monkeypatch.setenv("D2BENCH_OPS", "reference")
    want = _layer_grads(layer, x)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.usefixtures("compiled_ops")
def test_nothing_recorded_outside_the_block():
    layer = _layer()
    x = torch.randn(1, 8, 3, 4, 5, dtype=torch.float64)
    with record_backward_paths(torch.nn.Sequential(layer)) as record:
        pass
    _layer_grads(layer, x)
    assert record.calls == [] and routing.current_layer() is None


@pytest.mark.usefixtures("compiled_ops")
def test_every_d2_layer_of_a_model_is_recorded():
    """A tiny model's training step: one backward call per D² layer, each named after it."""
    from d2bench.models import build_model

    torch.manual_seed(0)
    cfg = ModelConfig(backbone="tiny", tiny_width=4, decoder_channels=8, variant="iv")
    model = build_model(cfg)
    x = torch.rand(1, 3, 4, 32, 32)
    with record_backward_paths(model) as record:
        model(x).sum().backward()
    layers = {n for n, m in model.named_modules() if isinstance(m, SampledConv3d)}
    assert layers == set(model.replaced_layers) and len(layers) == 10
    assert sorted(c.layer for c in record.calls) == sorted(layers)
    assert {c.path for c in record.calls} == {"cpu"}


# -- on the GPU: the mirror against the kernels that ran -------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _kernels(fn) -> set[str]:
    """The bare names of the CUDA kernels ``fn()`` launched."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return {e.name.split("<")[0].split()[-1].split("::")[-1] for e in prof.events()}


def _path_from_kernels(kernels: set[str]) -> str:
    tensor = {"input_grad_kernel", "weight_grad_kernel"} & kernels
    simt = {"simt_input_grad_kernel", "simt_weight_grad_kernel"} & kernels
    assert bool(tensor) != bool(simt), sorted(kernels)
    return "tensor_core" if tensor else "cuda_core"


MIRROR_CASES = [
    dict(),
    dict(grad_layout=torch.contiguous_format),
    dict(grad_layout=torch.contiguous_format, convert=False),
    dict(o=64),
    dict(o=64, wanted=(False, True, True, True)),
    dict(dtype=torch.float32),
    dict(layout=torch.contiguous_format),
    dict(stride=2),
    dict(dtype=torch.float16, c=24, o=136),
]


@pytest.mark.cuda
@cuda
@pytest.mark.usefixtures("compiled_ops")
@pytest.mark.parametrize("case", MIRROR_CASES, ids=[str(c) for c in MIRROR_CASES])
def test_recorded_path_is_the_path_the_kernels_took(case):
    case = dict(case)
    grad_layout = case.pop("grad_layout", CL)
    convert = case.pop("convert", True)
    wanted = case.pop("wanted", (True, True, True, True))
    x, grad, weight = _call(device="cuda", **case)
    stride = case.get("stride", 1)
    coords = torch.rand(x.shape[0], 3, *grad.shape[2:], device="cuda") * 2
    mask = torch.rand(x.shape[0], 27, *grad.shape[2:], device="cuda")
    tensors = (x, coords, mask, weight)
    leaves = [t.detach().requires_grad_(w) for t, w in zip(tensors, wanted, strict=True)]
    out = ops.d2conv3d(*leaves, None, stride)
    upstream = grad.contiguous(memory_format=grad_layout)
    with routing.grad_conversion(convert), record_backward_paths() as record:
        kernels = _kernels(lambda: out.backward(upstream))
    (call,) = record.calls
    assert call.path == _path_from_kernels(kernels), (call, sorted(kernels))


@pytest.mark.cuda
@cuda
@pytest.mark.usefixtures("compiled_ops")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_layer_sum_backward_takes_tensor_cores(dtype, monkeypatch):
    """A 16-bit D²Conv3D layer followed by .sum().backward(): the expanded upstream gradient is
    copied into channels_last_3d, the tensor-core kernels run, and every gradient matches the
    float64 reference."""
    layer = _layer(c=64, o=128, dtype=dtype).cuda()
    x = torch.randn(2, 64, 4, 10, 12, device="cuda", dtype=dtype)
    got: list[torch.Tensor] = []
    with record_backward_paths(torch.nn.Sequential(layer)) as record:
        kernels = _kernels(lambda: got.extend(_layer_grads(layer, x)))
    assert _path_from_kernels(kernels) == "tensor_core", sorted(kernels)
    (call,) = record.calls
    assert (call.path, call.grad_layout, call.converted) == ("tensor_core", "strided", True)
    monkeypatch.setenv("D2BENCH_OPS", "reference")
    want = _layer_grads(copy.deepcopy(layer).double(), x.double())
    for a, b in zip(got, want, strict=True):
        rel = float((a.double() - b).norm() / b.norm().clamp_min(1e-30))
        assert rel < 1e-2, rel


@pytest.mark.cuda
@cuda
@pytest.mark.usefixtures("compiled_ops")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_tiny_model_training_step_keeps_every_d2_layer_on_tensor_cores(precision):
    """A whole training step of a tiny model (channels_last_3d, autocast, Lovász loss, as
    ``bench train`` runs it): every D² layer's backward takes the tensor-core kernels."""
    from d2bench.engine.amp import Amp, autocast_dtype
    from d2bench.engine.lovasz import lovasz_hinge
    from d2bench.models import build_model

    torch.manual_seed(0)
    # Sampling in the autocast dtype, as bench train runs it by default (the protocol's float32
    # sampling takes the CUDA-core kernels by design).
    cfg = ModelConfig(
        backbone="tiny",
        tiny_width=8,
        decoder_channels=128,
        variant="iv",
        sampling_precision="autocast",
    )
    model = build_model(cfg).cuda().to(memory_format=CL)
    device = torch.device("cuda")
    x = torch.rand(2, 3, 4, 64, 64, device="cuda").contiguous(memory_format=CL)
    y = (torch.rand(2, 1, 4, 64, 64, device="cuda") > 0.7).float()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-5)
    amp = Amp("cuda", autocast_dtype(device, precision))
    with record_backward_paths(model) as record:
        with amp.autocast():
            logits = model(x)
        amp.step(lovasz_hinge(logits.float(), y), optimizer, params, 10.0)
    assert sorted(c.layer for c in record.calls) == sorted(model.replaced_layers)
    slow = [c for c in record.calls if c.path != "tensor_core"]
    assert not slow, slow


# -- the benchmark ---------------------------------------------------------------------------


@pytest.mark.usefixtures("compiled_ops")
def test_bench_train_reports_each_layers_backward_path(tmp_path):
    import json

    from d2bench.bench.train_bench import run_train_benchmark

    path = run_train_benchmark(
        tmp_path, variants=["baseline", "d2conv3d_iv"], device="cpu", quick=True
    )
    record = json.loads(path.read_text())
    baseline, d2 = record["results"]
    assert baseline["backward_paths"]["calls"] == []
    calls = d2["backward_paths"]["calls"]
    assert len(calls) == 10 and all(c["layer"].startswith("decoder.rf") for c in calls)
    assert d2["backward_paths"]["counts"] == {"cpu": 10, "converted": 0}
    assert record["settings"]["convert_grads"] is True
    markdown = path.with_suffix(".md").read_text()
    assert "| 10 CPU |" in markdown
    layer_rows = [line for line in markdown.splitlines() if "| decoder.rf" in line]
    assert len(layer_rows) == 10
