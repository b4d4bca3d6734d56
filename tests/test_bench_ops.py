"""The timing protocol and the operator benchmark, run on the CPU with tiny shapes."""

from __future__ import annotations

import copy
import json
import time

import pytest
import torch

from d2bench.bench import timing
from d2bench.bench.ops_bench import KERNELS as VARIANTS
from d2bench.bench.ops_bench import QUICK_SHAPES, TARGETS, gpu_slug, run_ops_benchmark
from d2bench.ops.environment import collect_environment

FP32_ENTRIES = ("cudnn_fp32", "d2conv3d_fp32", "reference_fp32")
OURS_BF16 = ("d2conv3d_bf16", "dcnv2_bf16")


def test_bench_package_import_is_light():
    import subprocess
    import sys

    code = "import sys, d2bench.bench; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


class _Counter:
    """make_inputs that counts its calls and hands out tagged input sets."""

    def __init__(self, numel: int = 1024):
        self.calls: list[int] = []
        self.numel = numel

    def __call__(self, i: int) -> dict:
        self.calls.append(i)
        return {"tag": torch.tensor([i]), "x": torch.randn(self.numel)}


def test_time_fn_rotates_over_all_input_sets():
    make_inputs = _Counter()
    seen: list[int] = []

    def fn(inputs):
        seen.append(int(inputs["tag"]))
        return inputs["x"] * 2

    result = timing.time_fn(fn, make_inputs, warmup=2, repeats=7, device="cpu")
    assert make_inputs.calls == list(range(result.input_sets))
    assert result.input_sets == timing.MIN_INPUT_SETS  # no L2 size on the CPU
    assert len(seen) == 2 + 7
    assert set(seen) == set(range(result.input_sets))
    assert result.repeats == 7 and len(result.samples_ms) == 7
    assert result.timer == "perf_counter"
    assert 0 < result.min_ms <= result.p10_ms <= result.median_ms <= result.p90_ms <= result.max_ms
    assert result.std_ms >= 0 and result.mean_ms > 0


def test_time_fn_builds_enough_sets_to_exceed_twice_the_l2():
    set_bytes = timing.tensor_bytes(_Counter()(0))
    # Three sets are needed to exceed 2 × L2 when one set is 0.9 × L2.
    l2 = int(set_bytes / 0.9)
    make_inputs = _Counter()
    result = timing.time_fn(
        lambda inputs: None, make_inputs, warmup=0, repeats=3, device="cpu", l2_bytes=l2
    )
    assert result.input_sets == 3 and result.input_set_bytes == set_bytes
    assert result.input_sets * set_bytes > 2 * l2
    assert timing.input_set_count(set_bytes, set_bytes * 100) == timing.MAX_INPUT_SETS
    assert timing.input_set_count(set_bytes, set_bytes // 10) == timing.MIN_INPUT_SETS


def test_time_fn_orders_functions_by_cost():
    def cheap(inputs):
        return None

    def sleepy(inputs):
        time.sleep(0.002)

    fast = timing.time_fn(cheap, _Counter(), warmup=1, repeats=5, device="cpu")
    slow = timing.time_fn(sleepy, _Counter(), warmup=1, repeats=5, device="cpu")
    assert slow.median_ms >= 2.0
    assert fast.median_ms < slow.median_ms
    stats = slow.to_dict(samples=False)
    assert "samples_ms" not in stats and stats["median_ms"] == slow.median_ms


def test_time_fn_rejects_bad_counts():
    with pytest.raises(ValueError, match="repeats"):
        timing.time_fn(lambda x: x, _Counter(), warmup=0, repeats=0, device="cpu")


def test_peak_extra_memory_on_cpu_is_empty():
    memory = timing.peak_extra_memory(lambda x: x * 2, torch.ones(4), "cpu")
    assert memory == {
        "peak_bytes_over_baseline": None,
        "output_bytes": None,
        "extra_bytes": None,
        "allocator_extra_bytes": None,
    }


def test_environment_fields():
    env = collect_environment("cpu")
    for key in (
        "gpu_name",
        "gpu_count",
        "compute_capability",
        "driver_version",
        "torch_version",
        "cuda_version",
        "cudnn_version",
        "python_version",
        "platform",
        "cpu_model",
        "git_revision",
        "git_dirty",
        "cuda_matmul_allow_tf32",
        "cudnn_allow_tf32",
        "timestamp_utc",
    ):
        assert key in env
    assert env["torch_version"] == torch.__version__
    assert env["gpu_name"] is None
    json.dumps(env)


def test_gpu_slug():
    assert gpu_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert gpu_slug(None) == "cpu"


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("bench")
    path = run_ops_benchmark(out_dir, quick=True, repeats=3, warmup=1, device="cpu")
    return path, json.loads(path.read_text(encoding="utf-8"))


def test_quick_run_writes_both_files(quick_report):
    path, _ = quick_report
    assert path.name == "ops-cpu.json" and path.is_file()
    markdown = path.with_suffix(".md").read_text(encoding="utf-8")
    assert "| Shape | Variant | fwd ms | fwd+bwd ms | ratio fwd | ratio fwd+bwd |" in markdown
    assert "## Targets" in markdown
    assert not list(path.parent.glob("*.tmp"))


def test_quick_run_records_environment_and_protocol(quick_report):
    _, report = quick_report
    env = report["environment"]
    assert env["torch_version"] == torch.__version__
    assert "git_revision" in env and "git_dirty" in env
    protocol = report["protocol"]
    assert protocol["warmup"] == 1 and protocol["repeats"] == 3
    assert protocol["statistic"] == "median" and protocol["timer"] == "perf_counter"


def test_quick_run_has_every_shape_and_variant(quick_report):
    _, report = quick_report
    ids = [shape.id for shape in QUICK_SHAPES]
    assert [shape["id"] for shape in report["shapes"]] == ids
    assert set(report["results"]) == set(ids)
    for shape_id in ids:
        entries = report["results"][shape_id]
        assert set(entries) == {variant.name for variant in VARIANTS}
        for name in FP32_ENTRIES:
            assert "error" not in entries[name], entries[name]
            assert entries[name]["forward"]["median_ms"] > 0
            assert entries[name]["forward"]["repeats"] >= 1
        for name in ("cudnn_fp32", "d2conv3d_fp32"):
            assert entries[name]["forward_backward"]["median_ms"] > 0
            # The backward call's own memory is recorded (a number on CUDA, None on a CPU).
            assert "extra_bytes" in entries[name]["backward_call"]["memory"]
            assert entries[name]["tf32"] == {
                "cuda_matmul_allow_tf32": False,
                "cudnn_allow_tf32": False,
            }
        assert entries["d2conv3d_fp32"]["ratio_forward"] > 0
        for name in OURS_BF16:
            entry = entries[name]
            if "error" in entry:
                assert "bfloat16" in entry["error"].lower() or "dtype" in entry["error"].lower()
            else:
                assert entry["forward"]["median_ms"] > 0


def test_quick_run_evaluates_targets(quick_report):
    _, report = quick_report
    targets = report["targets"]
    assert len(targets["criteria"]) == len(TARGETS)
    for shape in QUICK_SHAPES:
        rows = targets["per_shape"][shape.id]
        assert len(rows) == len(TARGETS)
        fp32 = next(row for row in rows if row["variant"] == "d2conv3d_fp32")
        assert fp32["limit"] == 1.5 and isinstance(fp32["pass"], bool)
        for row in rows:
            assert row["pass"] in (True, False, None)
        speedup = next(row for row in rows if row["kind"] == "speedup")
        assert speedup["baseline"] == "reference_fp32" and speedup["limit"] == 20
        entries = report["results"][shape.id]
        expected = (
            entries["reference_fp32"]["forward_backward"]["median_ms"]
            / entries["d2conv3d_fp32"]["forward_backward"]["median_ms"]
        )
        assert speedup["ratio"] == pytest.approx(expected)
        assert speedup["pass"] == (expected >= 20)
        # Peak memory is measured on CUDA only: the memory criteria stay unevaluated on a CPU.
        assert {row["pass"] for row in rows if row["kind"] == "memory"} == {None}


def test_rejudge_recomputes_the_verdicts_of_a_written_report(quick_report, tmp_path):
    from d2bench.cli import main

    report = copy.deepcopy(quick_report[1])
    evaluated_before = report["targets"]["evaluated"]
    shape = QUICK_SHAPES[0]
    fp32 = report["results"][shape.id]["d2conv3d_fp32"]
    output_bytes = shape.batch * shape.c_out * shape.t * shape.h * shape.w * 4
    # Stand in for a GPU run's memory figures: none extra forward, twice the output backward.
    fp32["forward"]["memory"]["extra_bytes"] = 0
    fp32["backward_call"]["memory"]["extra_bytes"] = 2 * output_bytes
    del report["targets"]
    path = tmp_path / "ops-test.json"
    path.write_text(json.dumps(report), encoding="utf-8")

    assert main(["bench", "ops", "--rejudge", str(path)]) == 0
    judged = json.loads(path.read_text(encoding="utf-8"))
    rows = judged["targets"]["per_shape"][shape.id]
    memory = {row["phase"]: row for row in rows
              if row["kind"] == "memory" and row["variant"] == "d2conv3d_fp32"}  # fmt: skip
    assert memory["forward"]["ratio"] == 0 and memory["forward"]["pass"] is True
    assert memory["backward_call"]["ratio"] == pytest.approx(2.0)
    assert memory["backward_call"]["pass"] is False
    assert judged["targets"]["total"] == len(TARGETS) * len(QUICK_SHAPES)
    assert judged["targets"]["evaluated"] == evaluated_before + 2  # the two made-up figures
    assert "judged_by_revision" in judged["targets"]
    assert judged["results"] == report["results"]  # the measurements are untouched
    markdown = path.with_suffix(".md").read_text(encoding="utf-8")
    assert "d2conv3d_fp32 bwd extra memory ≤ 1× the output" in markdown


def test_rejudge_rejects_a_file_that_is_not_an_ops_report(tmp_path, capsys):
    from d2bench.cli import main

    missing = tmp_path / "absent.json"
    assert main(["bench", "ops", "--rejudge", str(missing)]) == 2
    assert "no such file" in capsys.readouterr().err
    other = tmp_path / "model.json"
    other.write_text(json.dumps({"schema": "d2bench.model_bench/1"}), encoding="utf-8")
    assert main(["bench", "ops", "--rejudge", str(other)]) == 2
    assert "not an operator benchmark report" in capsys.readouterr().err


def test_a_selection_measures_those_variants_and_their_baselines(tmp_path):
    from d2bench.bench.ops_bench import select_kernels

    names = [k.name for k in select_kernels(["d2conv3d_fp16", "reference_fp32"])]
    assert names == ["cudnn_fp16", "cudnn_fp32", "d2conv3d_fp16", "reference_fp32"]
    path = run_ops_benchmark(
        tmp_path, quick=True, repeats=1, warmup=0, device="cpu", variants=["d2conv3d_fp32"]
    )
    report = json.loads(path.read_text(encoding="utf-8"))
    for entries in report["results"].values():
        assert set(entries) == {"cudnn_fp32", "d2conv3d_fp32"}
    rows = report["targets"]["per_shape"][QUICK_SHAPES[0].id]
    assert next(r for r in rows if r["variant"] == "d2conv3d_bf16")["pass"] is None
    assert isinstance(next(r for r in rows if r["variant"] == "d2conv3d_fp32")["pass"], bool)


def test_an_unknown_variant_is_refused_naming_the_known_ones(capsys):
    from d2bench.cli import main

    assert main(["bench", "ops", "--variants", "d2conv3d_fp8", "--device", "cpu"]) == 2
    error = capsys.readouterr().err
    assert "unknown variant(s) d2conv3d_fp8" in error and "d2conv3d_fp16" in error
