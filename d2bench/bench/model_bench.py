"""Model benchmark: FPS and peak memory of every Table 1 variant with the full network.

For each variant the whole network (random weights) is built on the device and measured twice:

- *clip level*: one B×3×8×480×864 clip per forward, timed with :func:`d2bench.bench.timing.time_fn`
  (median of individually timed calls over rotated inputs), then the peak memory of one forward
  (``max_memory_allocated``/``reserved`` after emptying the cache and resetting the peaks: weights,
  input and activations);
- *protocol*: :func:`d2bench.metrics.speed.measure_synthetic` on random 480×854 videos, i.e. the
  paper's FPS (frames / Σ synchronised forward time per video, averaged over videos, warm-up
  excluded) with clips of 8 every ``gap`` frames.

Every figure is also given relative to the Revised Baseline measured in the same run, and judged
against the ``model`` criteria of ``targets.toml`` (a variant's FPS and peak memory relative to
the baseline's). The
baseline's clip level is measured again after the last variant: on a shared host whose speed
drifts during the run (more than ``DRIFT_LIMIT``), ratios between variants measured minutes apart
mean little, so the speed target is then left unjudged and the report says why. With
random weights the deformation branches would predict exactly "no deformation" (they start at
zero), which samples on the integer grid like a plain conv; by default they are re-drawn from
N(0, 1/fan_in) so that the kernels sample at fractional positions, as a trained model does.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..core.config import InferConfig, ModelConfig
from ..core.names import PAPER_LABELS, VARIANT_NAMES, canonical_variant_name, variant_names
from ..layers.branch import SampledConv3d
from ..ops.environment import collect_environment, resolve_device
from .common import (
    Target,
    describe_error,
    fmt,
    gpu_slug,
    load_criteria,
    markdown_table,
    md_cell,
    report_header,
    write_report,
)
from .timing import cudnn_benchmark, release_memory, time_fn

SCHEMA = "d2bench.model_bench/1"
BASELINE = "baseline"
GB = 1024**3

#: Paper Table 1 (GTX 1080 Ti): FPS and memory (GB) at inference, for context.
PAPER_FPS_MEMORY: dict[str, tuple[float, float]] = {
    "baseline": (4.96, 1.92),
    "aspp": (4.50, 1.96),
    "dcnv1": (4.41, 1.95),
    "dcnv2": (4.36, 1.96),
    "d2conv3d_i": (4.49, 1.94),
    "d2conv3d_ii": (4.46, 1.94),
    "d2conv3d_iii": (4.46, 1.93),
    "d2conv3d_iv": (4.46, 1.94),
}
#: Largest change of the baseline's clip time between the start and the end of a run under which
#: the FPS ratios are judged.
DRIFT_LIMIT = 0.10
PRECISIONS = ("bf16", "fp16", "fp32")
SAMPLING_PRECISIONS = ("autocast", "fp32")
BRANCH_INITS = ("random", "zero")


def _target(variant: str, quantity: str, limit: float) -> Target:
    """``quantity`` relative to the Revised Baseline: "fps" (higher is better) or "memory"
    (lower is better)."""
    fps = quantity == "fps"
    sign = "≥" if fps else "≤"
    name = "FPS" if fps else "peak memory"
    label = f"{PAPER_LABELS[variant]} {name} {sign} {limit:g}× Revised Baseline"
    return Target(variant, quantity, limit, "ratio", label, f"{sign} {limit:g}×", BASELINE, fps)


#: The criteria of the ``model`` table of ``targets.toml``.
TARGETS: tuple[Target, ...] = tuple(
    _target(entry["variant"], entry["quantity"], float(entry["limit"]))
    for entry in load_criteria("model")
)


@dataclass(frozen=True)
class Settings:
    """What is measured: network, clip, precision, repetitions."""

    backbone: str = "csn152"
    tiny_width: int = 16
    decoder_channels: int = 256
    clip_len: int = 8
    height: int = 480  # the network input (a multiple of 32)
    width: int = 864
    native_width: int = 854  # the video frames of the protocol run, padded to ``width``
    batch_size: int = 1
    precision: str = "bf16"
    #: The DCN/D² sampling operator under autocast: "autocast" (its dtype) or "fp32" (as
    #: released). A run measures one choice; run it once per choice to see what fp32 costs.
    sampling_precision: str = "autocast"
    repeats: int = 30
    warmup: int = 5
    videos: int = 2
    video_frames: int = 43  # 8 clips at gap 5
    gap: int = 5
    branch_init: str = "random"
    cudnn_benchmark: bool = True


FULL = Settings()
QUICK = Settings(
    backbone="tiny",
    tiny_width=8,
    decoder_channels=16,
    height=32,
    width=64,
    native_width=60,
    precision="fp32",
    repeats=3,
    warmup=1,
    videos=1,
    video_frames=12,
)


def model_config(settings: Settings, variant: str) -> ModelConfig:
    return ModelConfig(
        backbone=settings.backbone,  # type: ignore[arg-type]
        tiny_width=settings.tiny_width,
        decoder_channels=settings.decoder_channels,
        variant=variant,
        weights="none",
        sampling_precision=settings.sampling_precision,  # type: ignore[arg-type]
    )


def randomise_branches(model: nn.Module, generator: torch.Generator) -> int:
    """Draw every deformation branch's weight from N(0, 1/fan_in), bias 0; returns how many."""
    count = 0
    for layer in model.modules():
        if isinstance(layer, SampledConv3d):
            weight = layer.branch.weight
            fan_in = weight[0].numel()
            noise = torch.randn(weight.shape, generator=generator) / math.sqrt(fan_in)
            with torch.no_grad():
                weight.copy_(noise.to(weight.device, weight.dtype))
                if layer.branch.bias is not None:
                    layer.branch.bias.zero_()
            count += 1
    return count


def _autocast(dev: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    from ..engine.inference import autocast_context

    return autocast_context(dev, precision)


def _clip_level(
    model: nn.Module, settings: Settings, dev: torch.device, seed: int
) -> dict[str, Any]:
    """Median forward time of one clip batch and the peak memory of one forward."""
    from ..metrics.speed import MemoryProbe

    shape = (settings.batch_size, 3, settings.clip_len, settings.height, settings.width)

    def make_inputs(i: int) -> Tensor:
        gen = torch.Generator(device=dev)
        gen.manual_seed(seed * 1000 + i)
        return torch.rand(shape, generator=gen, device=dev)

    def forward(x: Tensor) -> Tensor:
        with torch.inference_mode(), _autocast(dev, settings.precision):
            return model(x)

    timing = time_fn(
        forward, make_inputs, warmup=settings.warmup, repeats=settings.repeats, device=dev
    )
    release_memory(dev)
    x = make_inputs(0)
    probe = MemoryProbe(dev)
    probe.start()
    probe.before_forward()
    out = forward(x)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    probe.after_forward()
    del out, x
    memory = probe.result()
    clip_frames = settings.clip_len * settings.batch_size
    return {
        **timing.to_dict(samples=True),
        "clip_fps": clip_frames / (timing.median_ms / 1e3),
        "memory": memory,
    }


def measure_variant(
    variant: str, settings: Settings, dev: torch.device, *, seed: int = 0
) -> dict[str, Any]:
    """Clip-level and protocol measurements of one variant (see the module doc)."""
    from ..engine.inference import PAD_MULTIPLE
    from ..metrics.speed import measure_synthetic, parameter_bytes
    from ..models import build_model

    entry: dict[str, Any] = {"variant": variant, "label": PAPER_LABELS[variant]}
    model = build_model(model_config(settings, variant), device=dev).eval()
    try:
        if settings.branch_init == "random":
            generator = torch.Generator().manual_seed(seed)
            entry["randomised_branches"] = randomise_branches(model, generator)
        entry["replaced_layers"] = len(model.replaced_layers)
        entry["parameters"] = sum(p.numel() for p in model.parameters())
        entry["weights_gb"] = parameter_bytes(model) / GB
        entry["clip"] = _clip_level(model, settings, dev, seed)
        release_memory(dev)
        native_height = settings.height  # 480 is already a multiple of 32
        if native_height % PAD_MULTIPLE:
            raise ValueError(f"height must be a multiple of {PAD_MULTIPLE}")
        cfg = InferConfig(
            clip_len=settings.clip_len,
            gap=settings.gap,
            precision=settings.precision,  # type: ignore[arg-type]
            batch_size=settings.batch_size,
        )
        protocol = measure_synthetic(
            model,
            settings.video_frames,
            native_height,
            settings.native_width,
            infer_cfg=cfg,
            device=dev,
            videos=settings.videos,
            warmup_clips=settings.warmup,
            seed=seed,
        )
        protocol.pop("environment", None)  # recorded once for the whole report
        entry["protocol"] = protocol
    finally:
        del model
        release_memory(dev)
    return entry


def _value(entry: dict[str, Any] | None, *path: str) -> float | None:
    value: Any = entry
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return float(value) if isinstance(value, (int, float)) else None


def _memory_key(entry: dict[str, Any] | None) -> float | None:
    """The clip-level peak: allocated on CUDA, RSS on the CPU."""
    return _value(entry, "clip", "memory", "max_allocated_gb") or _value(
        entry, "clip", "memory", "peak_rss_gb"
    )


def add_relative(entries: dict[str, dict[str, Any]]) -> None:
    """Ratios against the baseline: protocol FPS, clip FPS, clip peak memory."""
    base = entries.get(BASELINE)
    for entry in entries.values():
        if "error" in entry:
            continue
        pairs = {
            "fps": (_value(entry, "protocol", "fps"), _value(base, "protocol", "fps")),
            "clip_fps": (_value(entry, "clip", "clip_fps"), _value(base, "clip", "clip_fps")),
            "memory": (_memory_key(entry), _memory_key(base)),
        }
        entry["relative"] = {
            key: (ours / theirs if ours is not None and theirs else None)
            for key, (ours, theirs) in pairs.items()
        }


def baseline_drift(first_ms: float | None, last_ms: float | None) -> dict[str, Any]:
    """How much the baseline's clip time moved between the start and the end of the run."""
    change = last_ms / first_ms - 1.0 if first_ms and last_ms else None
    return {
        "first_ms": first_ms,
        "last_ms": last_ms,
        "change": change,
        "limit": DRIFT_LIMIT,
        "stable": change is not None and abs(change) <= DRIFT_LIMIT,
    }


def evaluate_targets(
    entries: dict[str, dict[str, Any]], *, gpu: bool, drift: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Each target's ratio and verdict; a speed target stays unjudged (None) on a drifting host."""
    rows = []
    for target in TARGETS:
        ratio = ((entries.get(target.subject) or {}).get("relative") or {}).get(target.measure)
        unjudged = target.measure == "fps" and drift is not None and not drift["stable"]
        met = None if unjudged else target.judge(ratio)
        rows.append(
            {
                "target": target.label,
                "variant": target.subject,
                "quantity": target.measure,
                "limit": target.limit,
                "ratio": ratio,
                "met": met,
                "applies": gpu,
                "unjudged_for_drift": unjudged,
            }
        )
    return rows


# --------------------------------------------------------------------------------------------
# Output


def _protocol_lines(protocol: dict[str, Any]) -> list[str]:
    return [
        f"Network: {protocol['backbone']} backbone, decoder {protocol['decoder_channels']} "
        f"channels, random weights (deformation branches: {protocol['branch_init']}); "
        f"dtype {protocol['dtype']} (sampling operator: "
        f"{protocol.get('sampling_precision', 'autocast')}); batch {protocol['batch_size']}",
        f"Clip level: input {protocol['batch_size']}×3×{protocol['clip_len']}×"
        f"{protocol['height']}×{protocol['width']}, median of {protocol['repeats']} individually "
        f"timed forwards ({protocol['timer']}) after {protocol['warmup']} warm-up calls; peak "
        "memory of one forward after resetting the peaks (weights + input + activations)",
        f"Protocol: {protocol['videos']} random video(s) of {protocol['video_frames']} frames "
        f"at {protocol['height']}×{protocol['native_width']} (padded to {protocol['width']}), "
        f"clips of {protocol['clip_len']} every {protocol['gap']} frames; FPS = frames / Σ "
        f"synchronised forward time per video, mean over videos; {protocol['warmup']} warm-up "
        "clips excluded",
    ]


def _result_row(name: str, entry: dict[str, Any]) -> list[str]:
    paper_fps, paper_mem = PAPER_FPS_MEMORY[name]
    if "error" in entry:
        error = f"error: {md_cell(entry['error'][:80])}"
        return [md_cell(entry["label"]), error, *[""] * 6, f"{paper_fps}", f"{paper_mem}"]
    relative = entry.get("relative") or {}
    return [
        md_cell(entry["label"]),
        fmt(_value(entry, "clip", "median_ms"), 1),
        fmt(_value(entry, "protocol", "fps")),
        fmt(relative.get("fps"), 3, "×"),
        fmt(relative.get("clip_fps"), 3, "×"),
        fmt(_memory_key(entry), 3),
        fmt(_value(entry, "clip", "memory", "max_reserved_gb"), 3),
        fmt(relative.get("memory"), 3, "×"),
        f"{paper_fps}",
        f"{paper_mem}",
    ]


def render_markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    gpu = env.get("gpu_name")
    memory_label = "peak alloc GB" if gpu else "peak RSS GB"
    lines = report_header(
        f"Model benchmark: {gpu or 'CPU'}" + (" (quick)" if report["quick"] else ""),
        env,
        _protocol_lines(report["protocol"]),
        wall_s=report["wall_s"],
    )
    lines.append("")
    lines += markdown_table(
        ["Variant", "clip fwd ms (median)", "FPS (protocol)", "FPS rel.", "clip FPS rel.",
         memory_label, "reserved GB", "memory rel.", "paper FPS", "paper mem GB"],
        "lrrrrrrrrr",
        (_result_row(name, entry) for name, entry in report["results"].items()),
    )  # fmt: skip
    drift = report.get("baseline_drift") or {}
    lines += ["", "## Targets", ""]
    if drift.get("change") is not None:
        lines += [
            f"The Revised Baseline's clip took {drift['first_ms']:.1f} ms first and "
            f"{drift['last_ms']:.1f} ms when measured again after the last variant "
            f"({drift['change']:+.1%}; FPS ratios are judged within ±{drift['limit']:.0%})."
            + ("" if drift["stable"] else " The host's speed drifted: re-run on a quiet machine."),
            "",
        ]
    for row in report["targets"]:
        verdict = {None: "not measured", True: "met", False: "not met"}[row["met"]]
        if row.get("unjudged_for_drift"):
            verdict = (
                "not judged (the host's speed drifted during the run)"
                if drift.get("change") is not None
                else "not judged (the baseline could not be measured again)"
            )
        note = "" if row["applies"] else " (CPU smoke run: not a GPU measurement)"
        lines.append(f"- {row['target']}: {fmt(row['ratio'], 3, '×')} — {verdict}{note}")
    lines.append("")
    return "\n".join(lines)


def run_model_benchmark(
    out_dir: Path = Path("reports/bench"),
    *,
    quick: bool = False,
    variants: Sequence[str] | None = None,
    backbone: str | None = None,
    precision: str | None = None,
    repeats: int | None = None,
    warmup: int | None = None,
    videos: int | None = None,
    branch_init: str | None = None,
    sampling_precision: str | None = None,
    device: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Measure ``variants`` (default: all of Table 1) and write ``model-<gpu>.json``/``.md``.

    ``quick``: the tiny model at 8×32×64 in float32 (a smoke run; the files are named
    ``model-<gpu>-quick.*`` so a smoke run never overwrites a real result; a run with
    ``sampling_precision="fp32"`` adds ``-sampling-fp32``, so the two choices sit side by side).
    The baseline is
    always measured (first), because every figure is relative to it. Returns the JSON path.
    """
    started = time.perf_counter()
    say = progress or (lambda text: print(text, flush=True))
    names = _resolve_variants(variants)
    settings = QUICK if quick else FULL
    overrides: dict[str, Any] = {
        "backbone": backbone,
        "precision": precision,
        "repeats": repeats,
        "warmup": warmup,
        "videos": videos,
        "branch_init": branch_init,
        "sampling_precision": sampling_precision,
    }
    settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    _check_settings(settings)
    dev = resolve_device(device if device is not None else ("cpu" if quick else None))
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    environment = collect_environment(dev)

    entries: dict[str, dict[str, Any]] = {}
    with cudnn_benchmark(settings.cudnn_benchmark):
        for index, name in enumerate(names):
            prefix = f"[{index + 1}/{len(names)}] {PAPER_LABELS[name]}"
            try:
                entry = measure_variant(name, settings, dev, seed=index)
            except Exception as error:  # one variant failing (OOM, operator) keeps the others
                message = describe_error(error)
                entry = {"variant": name, "label": PAPER_LABELS[name], "error": message}
                release_memory(dev)
                say(f"{prefix}: error {message[:160]}")
            else:
                say(
                    f"{prefix}: clip {entry['clip']['median_ms']:.1f} ms, "
                    f"protocol {fmt(_value(entry, 'protocol', 'fps'))} FPS, "
                    f"peak {fmt(_memory_key(entry), 3)} GB"
                )
            entries[name] = entry
        first_ms = _value(entries.get(BASELINE), "clip", "median_ms")
        last_ms = _remeasure_baseline(settings, dev, say) if first_ms is not None else None
        drift = baseline_drift(first_ms, last_ms)
    add_relative(entries)
    targets = evaluate_targets(entries, gpu=dev.type == "cuda", drift=drift)

    from ..metrics.speed import effective_dtype

    report: dict[str, Any] = {
        "schema": SCHEMA,
        "quick": quick,
        "environment": environment,
        "protocol": {
            **asdict(settings),
            "device": str(dev),
            "dtype": effective_dtype(dev, settings.precision),
            "timer": "cuda_events" if dev.type == "cuda" else "perf_counter",
            "statistic": "median (clip level); mean over videos of frames / Σ forward s (protocol)",
            "weights": "random initialisation",
        },
        "results": entries,
        "baseline_drift": drift,
        "targets": targets,
        "wall_s": time.perf_counter() - started,
    }
    slug = gpu_slug(environment.get("gpu_name")) + ("-quick" if quick else "")
    if settings.sampling_precision != "autocast":
        slug += f"-sampling-{settings.sampling_precision}"
    out_dir = Path(out_dir)
    json_path = out_dir / f"model-{slug}.json"
    markdown = write_report(json_path, report, render_markdown)
    say("")
    say(markdown)
    return json_path


def _remeasure_baseline(
    settings: Settings, dev: torch.device, say: Callable[[str], None]
) -> float | None:
    """The baseline's clip-level median once more, after every variant (the drift check)."""
    from ..models import build_model

    try:
        model = build_model(model_config(settings, BASELINE), device=dev).eval()
        try:
            median_ms = float(_clip_level(model, settings, dev, seed=0)["median_ms"])
        finally:
            del model
            release_memory(dev)
    except Exception as error:  # the check failing must not lose the variants' results
        say(f"baseline re-measure failed ({type(error).__name__}: {error}); drift unknown")
        return None
    say(f"baseline again (drift check): clip {median_ms:.1f} ms")
    return median_ms


def _resolve_variants(variants: Sequence[str] | None) -> list[str]:
    if not variants:
        return list(VARIANT_NAMES)
    names = [canonical_variant_name(name) for name in variants]
    ordered = [name for name in variant_names() if name in names]  # Table 1 order, no duplicates
    return ordered if BASELINE in ordered else [BASELINE, *ordered]


def _check_settings(settings: Settings) -> None:
    if settings.precision not in PRECISIONS:
        raise ValueError(
            f"dtype must be one of {', '.join(PRECISIONS)}; got {settings.precision!r}"
        )
    if settings.sampling_precision not in SAMPLING_PRECISIONS:
        raise ValueError(
            f"sampling precision must be one of {', '.join(SAMPLING_PRECISIONS)}; "
            f"got {settings.sampling_precision!r}"
        )
    if settings.branch_init not in BRANCH_INITS:
        raise ValueError(
            f"branch init must be one of {', '.join(BRANCH_INITS)}; got {settings.branch_init!r}"
        )
    for field_name in ("repeats", "videos"):
        if getattr(settings, field_name) < 1:
            raise ValueError(f"{field_name} must be >= 1; got {getattr(settings, field_name)}")
    if settings.warmup < 0:
        raise ValueError(f"warmup must be >= 0; got {settings.warmup}")
