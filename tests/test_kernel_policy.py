"""The kernel policy: its validation, its restoration on exit, the private operators that hand it
to the C++ launchers, and (on a GPU) that each value selects the kernels it names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import d2bench.ops as ops
from d2bench.bench.tile_bench import kernel_and_height
from d2bench.ops import KernelPolicy, current_kernel_policy, kernel_policy, routing
from d2bench.ops.environment import collect_environment

CL = torch.channels_last_3d
BF16 = torch.bfloat16
DEFAULT = KernelPolicy("auto", "auto", "auto", "auto")


@pytest.fixture(scope="module")
def compiled_ops():
    if ops.selected_implementation() != "compiled":
        pytest.skip("D2BENCH_OPS=reference: the compiled operators are not under test")
    ops.ensure_loaded()


def _library_policy() -> tuple[str, str, int, int]:
    return tuple(torch.ops.d2bench._get_kernel_policy())


def test_the_default_lets_the_launchers_choose():
    assert current_kernel_policy() == DEFAULT == KernelPolicy()


@pytest.mark.parametrize(
    "field,value,allowed",
    [
        ("forward", "wgmma", "'auto', 'mma'"),
        ("backward", "simt", "'auto', 'cuda_core'"),
        ("backward_rows", 96, "'auto', 64, 128"),
        ("backward_rows", "64", "'auto', 64, 128"),
        ("backward_rows", True, "'auto', 64, 128"),
        ("weight_grad_channels", 128, "'auto', 32, 64"),
        ("weight_grad_channels", "32", "'auto', 32, 64"),
    ],
)
def test_a_value_outside_the_allowed_ones_is_refused_before_anything_changes(field, value, allowed):
    with kernel_policy(backward_rows=64):
        message = f"{field} must be one of {allowed}, got {value!r}"
        with pytest.raises(ValueError, match=message), kernel_policy(**{field: value}):
            pass
        assert current_kernel_policy() == KernelPolicy(backward_rows=64)


def test_blocks_nest_and_restore_the_previous_policy_on_exit_and_on_error():
    with kernel_policy(forward="mma") as outer:
        assert outer == KernelPolicy(forward="mma")
        with kernel_policy(backward="cuda_core", backward_rows=128) as inner:
            assert inner == KernelPolicy("mma", "cuda_core", 128) == current_kernel_policy()
            with kernel_policy(weight_grad_channels=64) as innermost:
                assert innermost == KernelPolicy("mma", "cuda_core", 128, 64)
            assert current_kernel_policy() == inner
        assert current_kernel_policy() == outer
        with pytest.raises(KeyError), kernel_policy(backward_rows=64):
            raise KeyError("inside")
        assert current_kernel_policy() == outer
    assert current_kernel_policy() == DEFAULT


def test_a_measurement_records_the_policy_it_ran_under():
    assert collect_environment("cpu")["kernel_policy"] == DEFAULT.as_dict()
    with kernel_policy(backward="cuda_core"):
        recorded = collect_environment("cpu")["kernel_policy"]
    assert recorded == {
        "forward": "auto",
        "backward": "cuda_core",
        "backward_rows": "auto",
        "weight_grad_channels": "auto",
    }


@pytest.mark.usefixtures("compiled_ops")
def test_the_private_operators_hold_the_policy_in_force():
    assert _library_policy() == ("auto", "auto", 0, 0)
    with kernel_policy(forward="mma", backward="cuda_core", backward_rows=64):
        assert _library_policy() == ("mma", "cuda_core", 64, 0)
        with kernel_policy(backward_rows="auto", weight_grad_channels=32):
            assert _library_policy() == ("mma", "cuda_core", 0, 32)
        assert _library_policy() == ("mma", "cuda_core", 64, 0)
    assert _library_policy() == ("auto", "auto", 0, 0)


@pytest.mark.usefixtures("compiled_ops")
def test_a_policy_set_before_the_library_loads_reaches_it_when_it_loads():
    script = (
        "import torch, d2bench.ops as ops\n"
        "with ops.kernel_policy(forward='mma', backward_rows=128):\n"
        "    ops.ensure_loaded()\n"
        "    print(tuple(torch.ops.d2bench._get_kernel_policy()))\n"
        "print(tuple(torch.ops.d2bench._get_kernel_policy()))\n"
    )
    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.splitlines() == ["('mma', 'auto', 128, 0)", "('auto', 'auto', 0, 0)"]


@pytest.mark.usefixtures("compiled_ops")
def test_the_private_setter_checks_its_values_too():
    for args, message in [
        (("sm90", "auto", 0, 0), "forward must be 'auto' or 'mma', got 'sm90'"),
        (("auto", "simt", 0, 0), "backward must be 'auto' or 'cuda_core', got 'simt'"),
        (("auto", "auto", 32, 0), r"backward_rows must be 0 \(auto\), 64 or 128, got 32"),
        (("auto", "auto", 0, 128), r"weight_grad_channels must be 0 \(auto\), 32 or 64, got 128"),
    ]:
        with pytest.raises(RuntimeError, match=message):
            torch.ops.d2bench._set_kernel_policy(*args)
    assert _library_policy() == ("auto", "auto", 0, 0)


def test_the_routing_mirror_reads_the_same_policy():
    x = torch.randn(1, 64, 2, 6, 8, dtype=BF16).contiguous(memory_format=CL)
    grad = torch.randn(1, 128, 2, 6, 8, dtype=BF16).contiguous(memory_format=CL)
    weight = torch.randn(128, 64, 3, 3, 3, dtype=BF16)

    def path() -> str:
        return routing.backward_decision(grad, x, weight, device_type="cuda").path

    assert path() == "tensor_core"
    with kernel_policy(backward="cuda_core"):
        assert path() == "cuda_core"
    with kernel_policy(forward="mma", backward_rows=64):  # neither moves the backward's path
        assert path() == "tensor_core"


# -- on the GPU: each value selects the kernels it names ---------------------------------------


def _hopper() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability(0) == (9, 0)


def _layer_call(c: int = 64, o: int = 256, dtype: torch.dtype = BF16):
    """A float32-map D² call with channels_last_3d data and weight, as the layers make it."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(1, c, 4, 10, 12, device="cuda", generator=gen).to(dtype)
    x = x.contiguous(memory_format=CL).requires_grad_()
    s = (1 + 0.3 * torch.randn(1, 3, 4, 10, 12, device="cuda", generator=gen)).requires_grad_()
    w = (torch.randn(o, c, 3, 3, 3, device="cuda", generator=gen) / (27 * c) ** 0.5).to(dtype)
    return x, s, w.contiguous(memory_format=CL).requires_grad_()


def _kernels(fn) -> list[str]:
    """The full names of the CUDA kernels ``fn()`` launched."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return [event.name for event in prof.events()]


def _bare(names: list[str]) -> set[str]:
    return {name.split("<")[0].split()[-1].split("::")[-1] for name in names}


def _step(x, s, w) -> None:
    out = ops.d2conv3d(x, s, None, w)
    out.backward(torch.ones_like(out).contiguous(memory_format=CL))


@pytest.mark.parametrize(
    "backward,expected",
    [
        ("auto", {"input_grad_kernel", "weight_grad_kernel"}),
        ("cuda_core", {"simt_input_grad_kernel", "simt_weight_grad_kernel"}),
    ],
)
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.usefixtures("compiled_ops")
def test_backward_policy_selects_its_kernels(backward, expected):
    x, s, w = _layer_call()  # 16-bit, channels_last_3d, 256 outputs: tensor cores by default
    with kernel_policy(backward=backward), routing.record_backward_paths() as record:
        kernels = _bare(_kernels(lambda: _step(x, s, w)))
    backward_kernels = kernels & {
        "input_grad_kernel", "weight_grad_kernel", "simt_input_grad_kernel",
        "simt_weight_grad_kernel",
    }  # fmt: skip
    assert backward_kernels == expected, sorted(kernels)
    assert [call.path for call in record.calls] == [
        "tensor_core" if backward == "auto" else "cuda_core"
    ]


@pytest.mark.parametrize("rows", [64, 128])
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.usefixtures("compiled_ops")
def test_backward_rows_policy_sets_both_cuda_core_kernels_height(rows):
    x, s, w = _layer_call(dtype=torch.float32)  # float32: the CUDA-core backward
    with kernel_policy(backward_rows=rows):
        names = _kernels(lambda: _step(x, s, w))
    timed = {kernel_and_height(name) for name in names} - {None}
    assert timed == {f"simt_input_grad_kernel/{rows}", f"simt_weight_grad_kernel/{rows}"}, names


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.usefixtures("compiled_ops")
def test_forward_policy_mma_keeps_the_mma_sync_kernel():
    x, s, w = _layer_call()
    with torch.no_grad():
        default = _bare(_kernels(lambda: ops.d2conv3d(x, s, None, w)))
        with kernel_policy(forward="mma"):
            mma = _bare(_kernels(lambda: ops.d2conv3d(x, s, None, w)))
    assert "fused_forward_kernel" in mma and "hopper_forward_kernel" not in mma, sorted(mma)
    if _hopper():  # the wgmma forward exists only in sm_90a builds on compute capability 9.0
        assert "hopper_forward_kernel" in default and "fused_forward_kernel" not in default
    else:
        assert default == mma
