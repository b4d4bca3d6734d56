"""Training-step and clip-inference throughput of the full network (``d2bench bench train``).

For each variant: the network of the paper (ir-CSN-152 backbone, 256-channel decoder, random
weights) on random clips of 8×480×864, one optimiser step = forward, Lovász hinge, backward,
clipping, Adam, under the training precision; then inference forwards. Reports clips/s (median
step time) and peak memory (``max_memory_allocated`` after a reset) of each phase, with the
environment, to ``train-<gpu>.json`` and ``.md``.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from ..config import ModelConfig
from ..engine.inference import autocast_context
from ..metrics.lovasz import lovasz_hinge
from .environment import collect_environment
from .ops_bench import gpu_slug

GB = 1024**3


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / GB if device.type == "cuda" else None


def _timed(fn, device: torch.device, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def bench_variant(
    variant: str,
    *,
    backbone: str,
    shape: tuple[int, int, int],
    batch: int,
    precision: str,
    device: torch.device,
    warmup: int,
    repeats: int,
    tiny_width: int = 16,
    decoder_channels: int = 256,
) -> dict[str, Any]:
    """Time training steps and inference forwards of one variant; peak memory of each."""
    from ..models import build_model

    torch.manual_seed(0)
    model = build_model(
        ModelConfig(
            backbone=backbone,  # type: ignore[arg-type]
            variant=variant,
            tiny_width=tiny_width,
            decoder_channels=decoder_channels,
        )
    ).to(device)
    channels_last = device.type == "cuda"
    if channels_last:
        model.to(memory_format=torch.channels_last_3d)
    frames, height, width = shape
    x = torch.rand(batch, 3, frames, height, width, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    y = (torch.rand(batch, 1, frames, height, width, device=device) > 0.7).float()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-5)

    def train_step() -> None:
        with autocast_context(device, precision):
            logits = model(x)
        loss = lovasz_hinge(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        optimizer.step()

    @torch.inference_mode()
    def infer() -> None:
        with autocast_context(device, precision):
            model(x)

    model.train()
    _reset_peak(device)
    train_times = _timed(train_step, device, warmup, repeats)
    train_peak = _peak_gb(device)
    optimizer.zero_grad(set_to_none=True)
    model.eval()
    _reset_peak(device)
    infer_times = _timed(infer, device, warmup, repeats)
    infer_peak = _peak_gb(device)
    train_median = statistics.median(train_times)
    infer_median = statistics.median(infer_times)
    return {
        "variant": variant,
        "train_step_ms": 1000 * train_median,
        "train_clips_per_s": batch / train_median,
        "train_peak_gb": train_peak,
        "infer_ms": 1000 * infer_median,
        "infer_clips_per_s": batch / infer_median,
        "infer_peak_gb": infer_peak,
        "train_samples_ms": [1000 * t for t in train_times],
        "infer_samples_ms": [1000 * t for t in infer_times],
    }


def _markdown(record: dict[str, Any]) -> str:
    env, settings = record["environment"], record["settings"]
    lines = [
        f"# Full-network training step and inference ({env.get('gpu_name') or 'CPU'})",
        "",
        f"{settings['backbone']}, random weights, batch {settings['batch']}, clip "
        f"{'×'.join(map(str, settings['shape']))}, {settings['precision']}, channels_last_3d "
        f"on GPU; median of {settings['repeats']} after {settings['warmup']} warm-up. "
        f"torch {env.get('torch_version')}, CUDA {env.get('cuda_version')}, "
        f"revision {env.get('git_revision')}.",
        "",
        "| Variant | train step (ms) | train clips/s | train peak (GB) "
        "| inference (ms) | inference clips/s | inference peak (GB) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]

    def gb(value: float | None) -> str:
        return "–" if value is None else f"{value:.2f}"

    for row in record["results"]:
        if "error" in row:
            lines.append(f"| {row['variant']} | failed: {row['error']} | | | | | |")
            continue
        lines.append(
            f"| {row['variant']} | {row['train_step_ms']:.1f} | {row['train_clips_per_s']:.2f} "
            f"| {gb(row['train_peak_gb'])} | {row['infer_ms']:.1f} "
            f"| {row['infer_clips_per_s']:.2f} | {gb(row['infer_peak_gb'])} |"
        )
    return "\n".join(lines) + "\n"


def run_train_benchmark(
    out_dir: Path,
    *,
    variants: list[str],
    backbone: str = "csn152",
    shape: tuple[int, int, int] = (8, 480, 864),
    batch: int = 1,
    precision: str = "bf16",
    warmup: int = 3,
    repeats: int = 10,
    device: str | None = None,
    quick: bool = False,
) -> Path:
    """Run the benchmark and write ``train-<gpu>.json`` / ``.md``; returns the JSON path."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.backends.cudnn.benchmark = True  # as in training: fixed shapes, fastest algorithms
    if quick:
        backbone, shape, warmup, repeats = "tiny", (4, 64, 96), 1, 2
    if dev.type == "cpu":
        precision = "fp32"
    results = []
    for variant in variants:
        print(f"bench train: {variant} ({backbone}, {'×'.join(map(str, shape))}, {precision})")
        try:
            row = bench_variant(
                variant,
                backbone=backbone,
                shape=shape,
                batch=batch,
                precision=precision,
                device=dev,
                warmup=warmup,
                repeats=repeats,
            )
            print(
                f"  train {row['train_clips_per_s']:.2f} clips/s, peak {row['train_peak_gb']} GB;"
                f" inference {row['infer_clips_per_s']:.2f} clips/s, peak {row['infer_peak_gb']}"
            )
        except torch.OutOfMemoryError as error:
            row = {"variant": variant, "error": f"out of memory: {str(error)[:120]}"}
            print(f"  {row['error']}")
        results.append(row)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    environment = collect_environment(dev)
    record = {
        "settings": {
            "backbone": backbone,
            "shape": list(shape),
            "batch": batch,
            "precision": precision,
            "warmup": warmup,
            "repeats": repeats,
            "quick": quick,
        },
        "environment": environment,
        "results": results,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = gpu_slug(environment.get("gpu_name"))
    path = out_dir / f"train-{slug}.json"
    path.write_text(json.dumps(record, indent=1))
    path.with_suffix(".md").write_text(_markdown(record))
    return path
