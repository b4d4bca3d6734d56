"""Training-step and clip-inference throughput of the full network (``d2bench bench train``).

For each variant: the network of the paper (ir-CSN-152 backbone, 256-channel decoder, random
weights) on random clips of 8×480×864, one optimiser step = forward, Lovász hinge, backward,
clipping, Adam, under the training precision (fp16: with the GradScaler, as a cell trains); then
inference forwards. Reports clips/s (median step time) and peak memory (``max_memory_allocated``
after a reset) of each phase, with the environment, to ``train-<gpu>.json`` and ``.md``.

What running the sampling operator in float32 costs (``model.sampling_precision``): with several
``sampling_precisions`` every DCN/D² variant is measured once per choice, one after the other on
the same device, and the report gives each time relative to the ``autocast`` row of the same
variant. Variants without a sampling operator (baseline, ASPP) are measured once.

Which backward kernels each DCN/D² layer took (tensor-core or CUDA-core, and whether its upstream
gradient was first copied into channels_last_3d for them) is recorded in the first warm-up step
and reported per row and per layer (:mod:`d2bench.ops.routing`). With ``profile`` one more step
per row is profiled and its GPU time split into the sampling operators, convolutions and the rest
(:mod:`.step_profile`), beside the baseline's.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch

from ..core.config import ModelConfig
from ..engine.amp import Amp, autocast_context, autocast_dtype
from ..engine.lovasz import lovasz_hinge
from ..layers import set_branch_precision
from ..ops.environment import collect_environment
from ..ops.routing import grad_conversion, record_backward_paths
from .common import gpu_slug, markdown_table, report_header, write_report
from .step_profile import CATEGORIES, profile_step
from .timing import synchronize

GB = 1024**3
SAMPLING_PRECISIONS = ("autocast", "fp32")


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / GB if device.type == "cuda" else None


def _timed(fn, device: torch.device, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
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
    sampling_precision: str = "autocast",
    convert_grads: bool = True,
    profile: bool = False,
    branch_precision: str = "fp32",
    compile_backend: str | None = None,
) -> dict[str, Any]:
    """Time training steps and inference forwards of one variant; peak memory of each; the
    backward path of every sampled layer in a training step (``convert_grads``: whether
    upstream gradients are copied into channels_last_3d for the tensor-core backward, see
    :mod:`d2bench.ops.routing`)."""
    from ..models import build_model

    torch.manual_seed(0)
    model = build_model(
        ModelConfig(
            backbone=backbone,  # type: ignore[arg-type]
            variant=variant,
            tiny_width=tiny_width,
            decoder_channels=decoder_channels,
            sampling_precision=sampling_precision,  # type: ignore[arg-type]
        )
    ).to(device)
    set_branch_precision(model, branch_precision)
    channels_last = device.type == "cuda"
    if channels_last:
        model.to(memory_format=torch.channels_last_3d)
    frames, height, width = shape
    x = torch.rand(batch, 3, frames, height, width, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    y = (torch.rand(batch, 1, frames, height, width, device=device) > 0.7).float()
    params = [p for p in model.parameters() if p.requires_grad]
    # Compiled (the same for every row, the baseline's included): the warm-up steps compile.
    network = torch.compile(model, backend=compile_backend) if compile_backend else model
    optimizer = torch.optim.Adam(params, lr=1e-5)
    amp = Amp(device.type, autocast_dtype(device, precision))

    def train_step() -> None:
        with amp.autocast():
            logits = network(x)
        loss = lovasz_hinge(logits.float(), y)
        amp.step(loss, optimizer, params, 10.0)

    @torch.inference_mode()
    def infer() -> None:
        with autocast_context(device, precision):
            network(x)

    model.train()
    _reset_peak(device)
    # The first warm-up step is recorded: which backward kernels each sampled layer took (the
    # steps are alike, so the timed ones take the same paths without the recording's hooks).
    with grad_conversion(convert_grads):
        with record_backward_paths(model) as record:
            train_step()
            synchronize(device)
        train_times = _timed(train_step, device, max(warmup - 1, 0), repeats)
        train_peak = _peak_gb(device)
        step_profile, heaviest = profile_step(train_step, device) if profile else ({}, [])
    optimizer.zero_grad(set_to_none=True)
    model.eval()
    _reset_peak(device)
    infer_times = _timed(infer, device, warmup, repeats)
    infer_peak = _peak_gb(device)
    train_median = statistics.median(train_times)
    infer_median = statistics.median(infer_times)
    return {
        "variant": variant,
        "sampling_precision": sampling_precision,
        "train_step_ms": 1000 * train_median,
        "train_clips_per_s": batch / train_median,
        "train_peak_gb": train_peak,
        "infer_ms": 1000 * infer_median,
        "infer_clips_per_s": batch / infer_median,
        "infer_peak_gb": infer_peak,
        "train_samples_ms": [1000 * t for t in train_times],
        "infer_samples_ms": [1000 * t for t in infer_times],
        "backward_paths": record.as_dict(),
        **({"train_profile_ms": step_profile} if step_profile else {}),
        **({"train_profile_heaviest": heaviest} if heaviest else {}),
    }


def has_sampling_operator(variant: str) -> bool:
    """Whether ``variant``'s layers run a sampling operator (so sampling_precision matters)."""
    from ..layers import SampledConv3d, get_variant

    return issubclass(get_variant(variant).layer_type, SampledConv3d)


def _relative(record: dict[str, Any]) -> dict[tuple[str, str], tuple[float, float]]:
    """(variant, sampling) → (train, inference) time relative to the variant's autocast row
    (reports written before the choice existed measured autocast only)."""
    rows = {
        (row["variant"], row.get("sampling_precision", "autocast")): row
        for row in record["results"]
        if "error" not in row
    }
    ratios = {}
    for (variant, sampling), row in rows.items():
        base = rows.get((variant, "autocast"))
        if base is not None and sampling != "autocast":
            ratios[(variant, sampling)] = (
                row["train_step_ms"] / base["train_step_ms"],
                row["infer_ms"] / base["infer_ms"],
            )
    return ratios


def _settings_text(settings: dict[str, Any]) -> str:
    return (
        f"Network: {settings['backbone']}, random weights, batch {settings['batch']}, clip "
        f"{'×'.join(map(str, settings['shape']))}, {settings['precision']} (computed in "
        f"{settings.get('dtype', settings['precision'])}), channels_last_3d on GPU; median of "
        f"{settings['repeats']} after {settings['warmup']} warm-up. Sampling: the dtype of the "
        "DCN/D² sampling operator (autocast: the autocast dtype; fp32: float32, as released); "
        "×autocast: time relative to the same variant's autocast row. Deformation branches: "
        f"{_BRANCH_TEXT[settings.get('branch_precision', 'fp32')]}. "
        + (
            f"Every row compiled with torch.compile (backend {settings['compile']})."
            if settings.get("compile")
            else "Eager (not compiled)."
        )
    )


_BRANCH_TEXT = {
    "fp32": "float32 under autocast",
    "autocast": "in the autocast dtype (as released), their output taken to float32",
}


def _result_row(row: dict[str, Any], ratios: dict[tuple[str, str], tuple[float, float]]) -> list:
    def gb(value: float | None) -> str:
        return "–" if value is None else f"{value:.2f}"

    sampling = row.get("sampling_precision", "autocast")
    if not has_sampling_operator(row["variant"]):
        sampling = "–"
    if "error" in row:
        return [row["variant"], sampling, f"failed: {row['error']}", *[""] * 8]
    ratio = ratios.get((row["variant"], sampling))
    train_ratio, infer_ratio = (f"{ratio[0]:.3f}", f"{ratio[1]:.3f}") if ratio else ("", "")
    return [
        row["variant"],
        sampling,
        f"{row['train_step_ms']:.1f}",
        train_ratio,
        f"{row['train_clips_per_s']:.2f}",
        gb(row["train_peak_gb"]),
        f"{row['infer_ms']:.1f}",
        infer_ratio,
        f"{row['infer_clips_per_s']:.2f}",
        gb(row["infer_peak_gb"]),
        paths_summary(row.get("backward_paths")),
    ]


def render_markdown(record: dict[str, Any]) -> str:
    env = record["environment"]
    lines = report_header(
        f"Full-network training step and inference ({env.get('gpu_name') or 'CPU'})",
        env,
        [_settings_text(record["settings"])],
    )
    ratios = _relative(record)
    lines.append("")
    lines += markdown_table(
        ["Variant", "sampling", "train step (ms)", "×autocast", "train clips/s",
         "train peak (GB)", "inference (ms)", "×autocast", "inference clips/s",
         "inference peak (GB)", "backward paths"],
        "llrrrrrrrrl",
        (_result_row(row, ratios) for row in record["results"]),
    )  # fmt: skip
    lines += _profile_table(record)
    lines += _layer_paths(record)
    return "\n".join(lines) + "\n"


#: Kernels listed per profiled row in the Markdown report (the JSON keeps more).
HEAVIEST_SHOWN = 8


def _profile_table(record: dict[str, Any]) -> list[str]:
    """Each row's profiled training step by kind of kernel, and what each adds to the baseline's."""
    rows = [row for row in record["results"] if row.get("train_profile_ms")]
    if not rows:
        return []
    baseline = next((row["train_profile_ms"] for row in rows if row["variant"] == "baseline"), None)

    def cell(profile: dict[str, float], key: str) -> str:
        text = f"{profile[key]:.1f}"
        if baseline is not None and profile is not baseline:
            text += f" ({profile[key] - baseline[key]:+.1f})"
        return text

    keys = [*CATEGORIES, "total"]
    lines = [
        "",
        "GPU time of one profiled training step (ms) by kind of kernel (sum of kernel times; "
        "in brackets: the difference to the baseline's step). Convolutions include the "
        "deformation branches'; element-wise and other: activations, sigmoid, casts, layout "
        "copies, the loss and the optimiser.",
        "",
    ]
    lines += markdown_table(
        ["Variant", "sampling", *keys],
        "ll" + "r" * len(keys),
        (
            [row["variant"], row.get("sampling_precision", "autocast"),
             *(cell(row["train_profile_ms"], key) for key in keys)]
            for row in rows
        ),
    )  # fmt: skip
    for row in rows:
        heaviest = row.get("train_profile_heaviest", [])[:HEAVIEST_SHOWN]
        if not heaviest:
            continue
        lines += ["", f"Heaviest kernels of the {row['variant']} step (ms per step, launches):", ""]
        lines += markdown_table(
            ["kernel", "kind", "ms", "launches"],
            "llrr",
            ([f"`{k['kernel']}`", k["category"], f"{k['ms']:.2f}", f"{k['launches']:g}"]
             for k in heaviest),
        )  # fmt: skip
    return lines


_PATH_NAMES = {"tensor_core": "tensor-core", "cuda_core": "CUDA-core", "cpu": "CPU"}


def paths_summary(paths: dict[str, Any] | None) -> str:
    """E.g. ``10 tensor-core (10 after a gradient copy)``: the backward calls of the sampled
    layers in the recorded step, per path; ``–`` where no layer samples."""
    if not paths or not paths.get("calls"):
        return "–"
    counts = dict(paths["counts"])
    converted = counts.pop("converted", 0)
    parts = [f"{n} {_PATH_NAMES.get(path, path)}" for path, n in counts.items()]
    copies = f" ({converted} after a gradient copy)" if converted else ""
    return ", ".join(parts) + copies


def _layer_paths(record: dict[str, Any]) -> list[str]:
    """A table of each sampled layer's backward call in the recorded training step."""
    rows = [row for row in record["results"] if (row.get("backward_paths") or {}).get("calls")]
    if not rows:
        return []
    converting = record["settings"].get("convert_grads", True)
    lines = [
        "",
        "Backward of each sampled layer in the first warm-up step (the timed steps take the same "
        "paths): the upstream gradient's layout as autograd handed it over, whether it was "
        "copied into channels_last_3d for the tensor-core kernels "
        f"({'on' if converting else 'off in this run'}), and the kernels that ran.",
        "",
    ]
    lines += markdown_table(
        ["Variant", "sampling", "layer", "op", "input (N×C×T×H×W)", "C_out",
         "upstream gradient", "copied", "backward", "why not tensor-core"],
        "lllllrllll",
        (
            [row["variant"], row.get("sampling_precision", "autocast"), call["layer"] or "?",
             f"{call['op']} ({call['dtype']})", "×".join(map(str, call["input_shape"])),
             str(call["out_channels"]), call["grad_layout"],
             "yes" if call["converted"] else "no", _PATH_NAMES.get(call["path"], call["path"]),
             call["reason"] or "–"]
            for row in rows
            for call in row["backward_paths"]["calls"]
        ),
    )  # fmt: skip
    return lines


def run_train_benchmark(
    out_dir: Path,
    *,
    variants: list[str],
    backbone: str = "csn152",
    shape: tuple[int, int, int] = (8, 480, 864),
    batch: int = 1,
    precision: str = "bf16",
    sampling_precisions: tuple[str, ...] | list[str] = ("autocast",),
    warmup: int = 3,
    repeats: int = 10,
    device: str | None = None,
    quick: bool = False,
    convert_grads: bool = True,
    profile: bool = False,
    branch_precision: str = "fp32",
    compile_backend: str | None = None,
) -> Path:
    """Run the benchmark and write ``train-<gpu>.json`` / ``.md``; returns the JSON path.

    On a CPU the precision is fp32 (autocast is CUDA-only, see :mod:`d2bench.engine.amp`), so the
    sampling precisions then measure the same computation; the run still exercises every path.
    ``convert_grads=False`` hands the sampling operators' backward the upstream gradient in the
    layout it arrives in, as before such gradients were copied into channels_last_3d (to measure
    what the copy saves).
    """
    for sampling in sampling_precisions:
        if sampling not in SAMPLING_PRECISIONS:
            raise ValueError(
                f"sampling precision {sampling!r}; allowed: {', '.join(SAMPLING_PRECISIONS)}"
            )
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.backends.cudnn.benchmark = True  # as in training: fixed shapes, fastest algorithms
    tiny_width, decoder_channels = 16, 256
    if quick:  # a smoke run of every path, seconds on a CPU
        backbone, shape, warmup, repeats = "tiny", (4, 32, 64), 1, 2
        tiny_width, decoder_channels = 8, 16
    if dev.type == "cpu":
        precision = "fp32"
    dtype = autocast_dtype(dev, precision) or torch.float32
    runs = [
        (variant, sampling)
        for variant in variants
        for sampling in (sampling_precisions if has_sampling_operator(variant) else ["autocast"])
    ]
    results = []
    for variant, sampling in runs:
        print(
            f"bench train: {variant} ({backbone}, {'×'.join(map(str, shape))}, {precision}, "
            f"sampling {sampling})"
        )
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
                sampling_precision=sampling,
                convert_grads=convert_grads,
                profile=profile,
                branch_precision=branch_precision,
                compile_backend=compile_backend,
                tiny_width=tiny_width,
                decoder_channels=decoder_channels,
            )
            print(
                f"  train {row['train_clips_per_s']:.2f} clips/s, peak {row['train_peak_gb']} GB;"
                f" inference {row['infer_clips_per_s']:.2f} clips/s, peak {row['infer_peak_gb']};"
                f" backward paths: {paths_summary(row['backward_paths'])}"
            )
        except torch.OutOfMemoryError as error:
            row = {
                "variant": variant,
                "sampling_precision": sampling,
                "error": f"out of memory: {str(error)[:120]}",
            }
            print(f"  {row['error']}")
        results.append(row)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    environment = collect_environment(dev)
    record = {
        "settings": {
            "backbone": backbone,
            "tiny_width": tiny_width,
            "decoder_channels": decoder_channels,
            "shape": list(shape),
            "batch": batch,
            "precision": precision,
            "dtype": str(dtype).removeprefix("torch."),
            "sampling_precisions": list(sampling_precisions),
            "grad_scaler": dtype == torch.float16,
            "convert_grads": convert_grads,
            "profile": profile,
            "branch_precision": branch_precision,
            "compile": compile_backend,
            "warmup": warmup,
            "repeats": repeats,
            "quick": quick,
        },
        "environment": environment,
        "results": results,
    }
    path = Path(out_dir) / f"train-{gpu_slug(environment.get('gpu_name'))}.json"
    write_report(path, record, render_markdown)
    return path
