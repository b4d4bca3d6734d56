"""``d2bench bench wgrad``: the tensor-core weight gradient's channel block, measured per shape.

``weight_grad_kernel`` (16-bit, ``channels_last_3d``) takes 32 or 64 input channels of one tap
per CTA. Every CTA reads all of ∂L/∂out and computes the corners of every voxel for its tap, so
64 channels halve both, but also halve the CTAs (fewer than the SMs at 256 channels). This
benchmark times both (forced by the kernel policy's ``weight_grad_channels``) and the launcher's
own choice on the operator benchmark's layers, so the launcher's rule rests on a measurement
that can be repeated on another GPU.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..ops.environment import collect_environment
from ..ops.policy import kernel_policy
from .common import gpu_slug, pass_mark, write_report
from .tile_bench import TileShape, cuda_with_operators, layer_inputs, profile_kernels

SCHEMA = "d2bench.wgrad_bench/1"
SETTING = "kernel_policy(weight_grad_channels=...)"
CHANNELS = (32, 64)
KERNEL = "weight_grad_kernel"
# The tensor-core kernel only: the CUDA-core one is simt_weight_grad_kernel.
_KERNEL_CHANNELS = re.compile(r"(?<![A-Za-z_])weight_grad_kernel<.*?, (32|64)>")

#: The operator benchmark's five layers in bfloat16 (all take the tensor-core backward).
SHAPES: tuple[TileShape, ...] = (
    TileShape("bf16", 1, 256, 256, 4, 60, 108),
    TileShape("bf16", 1, 512, 256, 4, 60, 108),
    TileShape("bf16", 1, 256, 256, 2, 30, 54),
    TileShape("bf16", 1, 1024, 256, 2, 30, 54),
    TileShape("bf16", 2, 256, 256, 8, 60, 108),
)
QUICK_SHAPES: tuple[TileShape, ...] = (TileShape("bf16", 1, 64, 128, 2, 8, 12),)


def kernel_and_channels(event_name: str) -> str | None:
    """``weight_grad_kernel/<channels>`` for the tensor-core weight gradient's profiler event
    (read from its template arguments), else None."""
    match = _KERNEL_CHANNELS.search(event_name)
    return f"{KERNEL}/{match.group(1)}" if match else None


def judge_shape(measured: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each forced channel block's time, the faster one, the launcher's choice, and whether they
    agree. ``measured`` maps "32", "64" and "chosen" to ``kernel_times_ms`` results."""
    forced = {c: measured[str(c)].get(f"{KERNEL}/{c}") for c in CHANNELS}
    timed = {c: ms for c, ms in forced.items() if ms is not None}
    faster = min(timed, key=timed.__getitem__) if timed else None
    chosen = [c for c in CHANNELS if f"{KERNEL}/{c}" in measured["chosen"]]
    return {
        "ms": {str(c): forced[c] for c in CHANNELS},
        "total_ms": {str(c): measured[str(c)].get("total") for c in CHANNELS},
        "faster": faster,
        "chosen": chosen[0] if len(chosen) == 1 else None,
        "chose_faster": faster is not None and chosen == [faster],
    }


def render_markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [
        f"# Tensor-core weight gradient, channels per CTA: {env.get('gpu_name') or 'no GPU'}",
        "",
        f"- torch {env.get('torch_version')}, CUDA {env.get('cuda_version')}; d2bench revision "
        f"{(env.get('git_revision') or 'unknown')[:7]}",
        f"- Per call: profiler kernel times, mean of {report['protocol']['repeats']} "
        f"forward+backward calls after {report['protocol']['warmup']} warm-up calls; "
        "channels_last_3d data and weight, float32 maps. Channel blocks forced with "
        f"`{SETTING}`; **bold**: the faster; ✓: the launcher's own choice was the faster.",
        f"- Started {env.get('timestamp_utc')}, took {report['wall_s']:.0f} s",
        "",
        "| shape (dtype N, C_in→C_out, T, H×W) | weight grad 32 / 64 channels | chosen "
        "| all kernels of the call, 32 / 64 |",
        "|---|---:|:---:|---:|",
    ]
    agree = 0
    for entry in report["results"]:
        verdict = entry["verdict"]
        times = []
        for channels in CHANNELS:
            value = verdict["ms"][str(channels)]
            text = "—" if value is None else f"{value:.3f}"
            times.append(f"**{text}**" if channels == verdict["faster"] else text)
        totals = " / ".join(
            "—" if verdict["total_ms"][str(c)] is None else f"{verdict['total_ms'][str(c)]:.3f}"
            for c in CHANNELS
        )
        mark = pass_mark(bool(verdict["chose_faster"]))
        lines.append(
            f"| {entry['label']} | {' / '.join(times)} ms | {verdict['chosen'] or '?'} {mark} "
            f"| {totals} ms |"
        )
        agree += bool(verdict["chose_faster"])
    total = len(report["results"])
    lines += ["", f"The launcher chose the faster block in {agree} of {total} shapes.", ""]
    return "\n".join(lines)


def run_wgrad_benchmark(
    out_dir: Path = Path("reports/bench"),
    *,
    quick: bool = False,
    repeats: int = 10,
    warmup: int = 3,
    device: str | None = None,
) -> Path:
    """Time both channel blocks and the launcher's choice on every shape; write
    ``wgrad-<gpu>.json`` and ``.md`` into ``out_dir`` and return the JSON path."""
    dev = cuda_with_operators(device, "bench wgrad")
    started = time.perf_counter()
    environment = collect_environment(dev)
    results = []
    shapes = QUICK_SHAPES if quick else SHAPES
    for index, shape in enumerate(shapes):
        inputs = layer_inputs(shape, dev)
        measured = {}
        for channels in (*CHANNELS, None):
            with kernel_policy(weight_grad_channels="auto" if channels is None else channels):
                measured["chosen" if channels is None else str(channels)] = profile_kernels(
                    inputs, warmup, repeats, kernel_and_channels
                )
        verdict = judge_shape(measured)
        results.append(
            {"shape": asdict(shape), "label": shape.label, "measured": measured, "verdict": verdict}
        )
        print(
            f"[{index + 1}/{len(shapes)}] {shape.label}: {verdict['ms']} ms, chose "
            f"{verdict['chosen']}, faster {verdict['faster']}",
            flush=True,
        )
        del inputs
        torch.cuda.empty_cache()
    report = {
        "schema": SCHEMA,
        "quick": quick,
        "environment": environment,
        "protocol": {"repeats": repeats, "warmup": warmup, "forced_by": SETTING},
        "results": results,
        "wall_s": time.perf_counter() - started,
    }
    json_path = Path(out_dir) / f"wgrad-{gpu_slug(environment.get('gpu_name'))}.json"
    markdown = write_report(json_path, report, render_markdown)
    print(markdown, flush=True)
    return json_path
