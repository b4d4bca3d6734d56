"""``d2bench bench tiles``: parsing of kernel names, the verdict, the report, and a GPU run."""

from __future__ import annotations

import json

import pytest
import torch

from d2bench.bench import tile_bench
from d2bench.cli import main
from d2bench.ops import current_kernel_policy, kernel_policy

INPUT_64 = (
    "void (anonymous namespace)::simt_input_grad_kernel<float, (anonymous namespace)::"
    "DilationTaps, 64>(float const*, Layout, DilationTaps, float const*, Layout)"
)
WEIGHT_128 = "void simt_weight_grad_kernel<c10::BFloat16, OffsetTaps, 128>(c10::BFloat16 const*)"


def test_kernel_times_are_keyed_by_kernel_and_height_per_call():
    events = [(INPUT_64, 300.0), (INPUT_64, 100.0), (WEIGHT_128, 50.0), ("fused_forward", 150.0)]
    times = tile_bench.kernel_times_ms(events, calls=2)
    assert times == {
        "simt_input_grad_kernel/64": pytest.approx(0.2),
        "simt_weight_grad_kernel/128": pytest.approx(0.025),
        "total": pytest.approx(0.3),
    }


def _measured(input_ms: tuple[float, float], weight_ms: tuple[float, float], chosen: int):
    def run(height: int) -> dict[str, float]:
        index = tile_bench.HEIGHTS.index(height)
        return {
            f"simt_input_grad_kernel/{height}": input_ms[index],
            f"simt_weight_grad_kernel/{height}": weight_ms[index],
        }

    return {"64": run(64), "128": run(128), "chosen": run(chosen)}


def test_verdict_names_the_faster_height_and_whether_the_launcher_chose_it():
    verdict = tile_bench.judge_shape(_measured((8.6, 10.7), (16.2, 9.1), chosen=128))
    assert verdict["simt_input_grad_kernel"]["faster"] == 64
    assert verdict["simt_input_grad_kernel"]["chose_faster"] is False
    assert verdict["simt_weight_grad_kernel"]["faster"] == 128
    assert verdict["simt_weight_grad_kernel"]["chose_faster"] is True


def test_report_marks_the_faster_height_and_counts_the_launchers_hits():
    shape = tile_bench.QUICK_SHAPES[0]
    measured = _measured((8.6, 10.7), (16.2, 9.1), chosen=64)
    verdict = tile_bench.judge_shape(measured)
    report = {
        "environment": {"gpu_name": "Test GPU", "git_revision": "abcdef0123"},
        "protocol": {"repeats": 5, "warmup": 2},
        "results": [{"label": shape.label, "measured": measured, "verdict": verdict}],
        "wall_s": 3.0,
    }
    text = tile_bench.render_markdown(report)
    assert "| **8.60** / 10.70 ms | 64 ✓ | 16.20 / **9.10** ms | 64 ✗ |" in text
    assert "chose the faster height in 1 of 2 cases" in text


def test_forced_rows_sets_the_kernel_policy_and_restores_it():
    with kernel_policy(backward_rows=128):
        with tile_bench.forced_rows(64):
            assert current_kernel_policy().backward_rows == 64
        with tile_bench.forced_rows(None):
            assert current_kernel_policy().backward_rows == "auto"
        assert current_kernel_policy().backward_rows == 128
    assert current_kernel_policy().backward_rows == "auto"


def test_without_a_gpu_the_command_says_what_it_needs(capsys, tmp_path):
    assert main(["bench", "tiles", "--device", "cpu", "--out", str(tmp_path)]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_bad_repeats_are_refused(capsys):
    assert main(["bench", "tiles", "--repeats", "0"]) == 2
    assert "--repeats must be ≥ 1" in capsys.readouterr().err


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_quick_run_times_each_forced_height_alone(tmp_path):
    path = tile_bench.run_tile_benchmark(tmp_path, quick=True, repeats=2, warmup=1)
    report = json.loads(path.read_text())
    assert len(report["results"]) == len(tile_bench.QUICK_SHAPES)
    for entry in report["results"]:
        for height in tile_bench.HEIGHTS:
            run = entry["measured"][str(height)]
            for kernel in tile_bench.KERNELS:
                assert run.get(f"{kernel}/{height}", 0) > 0, (entry["label"], height, run)
                other = 192 - height
                assert f"{kernel}/{other}" not in run, (entry["label"], height, run)
        for verdict in entry["verdict"].values():
            assert verdict["chosen"] in tile_bench.HEIGHTS
    assert path.with_suffix(".md").read_text().startswith("# CUDA-core backward tile heights")
