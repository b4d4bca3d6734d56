"""``d2bench bench wgrad``: kernel names, the verdict, the report, and a GPU run."""

from __future__ import annotations

import json

import pytest
import torch

from d2bench.bench import wgrad_bench


def test_only_the_tensor_core_weight_gradient_is_keyed_by_its_channels():
    key = wgrad_bench.kernel_and_channels
    taps = "d2bench::DilationTaps<float, float>"
    name = f"void d2bench::cuda::weight_grad_kernel<c10::BFloat16, {taps}, 64>(x)"
    assert key(name) == "weight_grad_kernel/64"
    assert key(name.replace(", 64>", ", 32>")) == "weight_grad_kernel/32"
    assert key(name.replace("weight_grad", "simt_weight_grad")) is None
    assert key("void d2bench::cuda::input_grad_kernel<c10::BFloat16, T>(x)") is None


def _measured(ms32, ms64, chosen):
    times = {"32": ms32, "64": ms64}
    measured = {c: {f"weight_grad_kernel/{c}": t, "total": 2 * t} for c, t in times.items()}
    measured["chosen"] = {f"weight_grad_kernel/{chosen}": times[str(chosen)], "total": 1.0}
    return measured


def test_the_verdict_names_the_faster_block_and_whether_the_launcher_took_it():
    verdict = wgrad_bench.judge_shape(_measured(1.3, 0.9, chosen=32))
    assert verdict["faster"] == 64 and verdict["chosen"] == 32
    assert verdict["chose_faster"] is False
    assert verdict["total_ms"] == {"32": 2.6, "64": 1.8}
    assert wgrad_bench.judge_shape(_measured(0.5, 0.9, chosen=32))["chose_faster"] is True


def test_the_report_bolds_the_faster_block_and_counts_agreement():
    verdict = wgrad_bench.judge_shape(_measured(1.3, 0.9, chosen=64))
    report = {
        "environment": {"gpu_name": "GPU X", "git_revision": "abcdef1234"},
        "protocol": {"repeats": 10, "warmup": 3},
        "results": [{"label": "bf16 1, 256→256, 4, 60×108", "verdict": verdict}],
        "wall_s": 3.0,
    }
    text = wgrad_bench.render_markdown(report)
    assert "1.300 / **0.900** ms" in text and "64 ✓" in text
    assert "chose the faster block in 1 of 1 shapes" in text


def test_bench_wgrad_needs_a_gpu(tmp_path, capsys):
    from d2bench.cli import main

    assert main(["bench", "wgrad", "--device", "cpu", "--out", str(tmp_path)]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
    assert main(["bench", "wgrad", "--repeats", "0"]) == 2


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_quick_run_on_a_gpu_times_both_blocks(tmp_path):
    path = wgrad_bench.run_wgrad_benchmark(tmp_path, quick=True, repeats=2, warmup=1)
    report = json.loads(path.read_text())
    (entry,) = report["results"]
    assert all(entry["verdict"]["ms"][str(c)] > 0 for c in wgrad_bench.CHANNELS)
    assert entry["verdict"]["chosen"] in wgrad_bench.CHANNELS
    assert path.with_suffix(".md").read_text().startswith("# Tensor-core weight gradient")
