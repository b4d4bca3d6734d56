"""``bench train``'s measurement switches reach every row and are written with the results."""

from __future__ import annotations

import json

import pytest

from d2bench import ops


@pytest.mark.slow
def test_compile_and_branch_precision_apply_to_every_row_and_are_recorded(tmp_path) -> None:
    """``--compile aot_eager`` (a backend that needs no compiler, so the check is quick) runs the
    baseline and a D²Conv3D row compiled, the sampled layers' backward still recorded."""
    if ops.selected_implementation() != "compiled":
        pytest.skip("D2BENCH_OPS=reference: the compiled operators are not under test")
    from d2bench.bench.train_bench import run_train_benchmark

    path = run_train_benchmark(
        tmp_path,
        variants=["baseline", "d2conv3d_iv"],
        device="cpu",
        quick=True,
        compile_backend="aot_eager",
        branch_precision="autocast",
    )
    record = json.loads(path.read_text())
    settings = record["settings"]
    assert (settings["compile"], settings["branch_precision"]) == ("aot_eager", "autocast")
    baseline, d2 = record["results"]
    assert baseline["train_step_ms"] > 0 and d2["infer_ms"] > 0
    assert d2["backward_paths"]["counts"] == {"cpu": 10, "converted": 0}
    markdown = path.with_suffix(".md").read_text()
    assert "compiled with torch.compile (backend aot_eager)" in markdown
    assert "in the autocast dtype (as released)" in markdown
