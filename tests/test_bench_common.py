"""The benchmarks' common core and their one command module."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from d2bench.bench.common import Target, json_safe, pass_mark, revision_text, write_report


def test_bench_help_lists_every_benchmark(capsys) -> None:
    from d2bench.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--help"])
    text = capsys.readouterr().out
    for name in ("ops", "tiles", "model", "train", "eval", "plan"):
        assert f"\n    {name} " in text, name


def test_a_target_judges_against_its_limit_in_its_direction() -> None:
    at_most = Target("v", "forward", 2.0, "ratio", "v ≤ 2×", "≤ 2×", "cudnn")
    at_least = Target("v", "fps", 0.95, "ratio", "v ≥ 0.95×", "≥ 0.95×", "baseline", True)
    assert at_most.judge(2.0) is True and at_most.judge(2.1) is False
    assert at_least.judge(0.95) is True and at_least.judge(0.9) is False
    assert at_most.judge(None) is None and at_least.judge(None) is None


def test_both_benchmarks_judge_with_the_common_target() -> None:
    pytest.importorskip("torch", reason="the benchmarks need torch")
    from d2bench.bench import model_bench, ops_bench

    for targets in (ops_bench.TARGETS, model_bench.TARGETS):
        assert targets and all(type(target) is Target for target in targets)


def test_write_report_is_strict_json_beside_its_markdown(tmp_path: Path) -> None:
    report = {"value": float("nan"), "shape": (1, 2), 3: "three"}
    seen = []

    def render(safe: dict) -> str:
        seen.append(safe)
        return "# report\n"

    path = tmp_path / "out" / "x-cpu.json"
    assert write_report(path, report, render, final_newline=True) == "# report\n"
    text = path.read_text(encoding="utf-8")
    assert text.endswith("}\n")
    assert json.loads(text) == {"value": None, "shape": [1, 2], "3": "three"}
    assert seen == [json.loads(text)]  # the Markdown is rendered from what the JSON holds
    assert path.with_suffix(".md").read_text(encoding="utf-8") == "# report\n"
    assert json_safe([float("inf"), 1.5]) == [None, 1.5]


def test_markdown_pieces() -> None:
    assert [pass_mark(True), pass_mark(False), pass_mark(None, "n/a")] == ["✓", "✗", "n/a"]
    assert revision_text({"git_revision": "0123456789abcdef", "git_dirty": True}) == (
        "0123456789ab (uncommitted changes)"
    )
    assert revision_text({}) == "unknown"


def test_every_criterion_of_the_targets_file_names_what_its_benchmark_measures() -> None:
    from d2bench.bench.common import load_criteria
    from d2bench.core.names import VARIANT_NAMES

    assert {entry["variant"] for entry in load_criteria("model")} <= set(VARIANT_NAMES)
    pytest.importorskip("torch", reason="the benchmarks need torch")
    from d2bench.bench import eval_bench, ops_bench

    kernels = {kernel.name for kernel in ops_bench.KERNELS}
    for entry in load_criteria("ops"):
        assert entry["kernel"] in kernels and entry.get("against", "cudnn_fp32") in kernels
    assert {entry["measure"] for entry in load_criteria("eval")} <= set(eval_bench.MEASURES)
    assert len(eval_bench.TARGETS) == len(load_criteria("eval")) > 0


def test_markdown_header_and_table() -> None:
    from d2bench.bench.common import markdown_table, report_header

    env = {"gpu_name": None, "cpu_model": "cpu", "torch_version": "2", "git_revision": "abc"}
    lines = report_header("Title", env, ["Protocol: x"], wall_s=3.2)
    assert lines[:3] == ["# Title", "", "- GPU: none (measured on the CPU)"]
    assert "- d2bench revision abc" in lines and "- Protocol: x" in lines
    assert lines[-1].endswith("took 3 s")
    table = markdown_table(["a", "b|c"], "lr", [["1", "2"]])
    assert table == ["| a | b|c |", "|---|---:|", "| 1 | 2 |"]
    with pytest.raises(ValueError, match="columns"):
        markdown_table(["a"], "lr", [])
