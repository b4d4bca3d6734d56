"""``bench train --profile``: a training step's GPU time split by kind of kernel."""

from __future__ import annotations

import json

import pytest
import torch

from d2bench.bench.step_profile import (
    CATEGORIES,
    categorise,
    heaviest_kernels,
    kernel_category,
    profile_step,
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("void d2bench::cuda::hopper_forward_kernel<__nv_bfloat16, 64>(Params)", "forward"),
        ("void d2bench::cuda::simt_input_grad_kernel<float, 3, 64>(Args)", "input gradient"),
        ("d2bench::cuda::weight_grad_kernel<c10::Half>", "weight gradient"),
        ("sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_ndhwc_kernel", "convolutions (cuDNN)"),
        ("cudnn::engines_precompiled::nchwToNhwcKernel", "convolutions (cuDNN)"),
        ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128", "convolutions (cuDNN)"),
        ("ampere_sgemm_128x64_tn", "matrix products"),
        ("void at::native::vectorized_elementwise_kernel<4, sigmoid>", "element-wise and other"),
        ("Memcpy DtoD (Device -> Device)", "element-wise and other"),
        (
            "void at::native::(anonymous namespace)::distribution_elementwise_grid_stride_kernel"
            "<float, 4>(long, at::PhiloxCudaState)",
            "element-wise and other",
        ),
        (
            "void d2bench::cuda::(anonymous namespace)::input_grad_kernel<float>(int)",
            "input gradient",
        ),
        ("::<lambda>", "element-wise and other"),
    ],
)
def test_kernels_fall_into_their_category(name: str, expected: str) -> None:
    category = kernel_category(name)
    assert category in CATEGORIES
    assert category.endswith(expected)


def test_categories_sum_to_the_total_per_call() -> None:
    kernels = [
        ("d2bench::cuda::fused_forward_kernel<half>", 300.0),
        ("d2bench::cuda::input_grad_kernel<half>", 500.0),
        ("cudnn_convolution_fprop", 1000.0),
        ("elementwise_kernel", 200.0),
    ]
    split = categorise(kernels, calls=2)
    assert set(split) == {*CATEGORIES, "total"}
    assert split["sampling operator: forward"] == pytest.approx(0.15)
    assert split["sampling operator: input gradient"] == pytest.approx(0.25)
    assert split["sampling operator: weight gradient"] == 0.0
    assert split["total"] == pytest.approx(1.0)
    assert sum(split[c] for c in CATEGORIES) == pytest.approx(split["total"])


def test_heaviest_kernels_are_summed_per_symbol_and_ordered() -> None:
    kernels = [
        ("void at::native::elementwise_kernel<sigmoid>(int)", 30.0),
        ("d2bench::cuda::input_grad_kernel<half>", 500.0),
        ("void at::native::elementwise_kernel<sigmoid>(int)", 50.0),
        ("cudnn_convolution_fprop", 100.0),
    ]
    top = heaviest_kernels(kernels, calls=2, count=2)
    assert [row["kernel"] for row in top] == ["input_grad_kernel", "cudnn_convolution_fprop"]
    assert top[0]["ms"] == pytest.approx(0.25) and top[0]["launches"] == 0.5
    every = heaviest_kernels(kernels, calls=1)
    assert every[-1]["ms"] == pytest.approx(0.08) and every[-1]["launches"] == 2
    assert every[-1]["category"] == "element-wise and other"


def test_nothing_is_profiled_off_cuda() -> None:
    calls = []
    assert profile_step(lambda: calls.append(1), torch.device("cpu")) == ({}, [])
    assert calls == []


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bench_train_profiles_the_sampling_operator_apart(tmp_path) -> None:
    from d2bench import ops
    from d2bench.bench.train_bench import run_train_benchmark

    if ops.selected_implementation() != "compiled":
        pytest.skip("D2BENCH_OPS=reference: the compiled operators are not under test")

    path = run_train_benchmark(
        tmp_path, variants=["baseline", "d2conv3d_iv"], quick=True, profile=True
    )
    record = json.loads(path.read_text())
    baseline, d2 = (row["train_profile_ms"] for row in record["results"])
    operator = [c for c in CATEGORIES if c.startswith("sampling operator")]
    assert all(baseline[c] == 0.0 for c in operator)
    assert all(d2[c] > 0.0 for c in operator)
    assert d2["convolutions (cuDNN)"] > 0.0 and d2["total"] > baseline["total"] * 0.5
    assert "GPU time of one profiled training step" in path.with_suffix(".md").read_text()
    heaviest = record["results"][1]["train_profile_heaviest"]
    assert any(row["category"].startswith("sampling operator") for row in heaviest)
