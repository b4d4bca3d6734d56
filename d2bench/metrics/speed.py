"""The FPS and memory protocol of the paper's Table 1, and what it records.

FPS (the paper's definition): for each video, its number of frames divided by the summed time of the
model forwards of its clips; the reported figure is the mean of these per-video rates. A
forward's time is wall time between a device synchronisation before it and one after it, so it
covers exactly the network (input preparation, sigmoid, stitching and copies to the host are
outside it) and nothing queued earlier. Before any timing, ``warmup_clips`` forwards of the
first video's first clip (batched as inference batches them) run untimed: they absorb cuDNN
autotuning, lazy operator loading and allocator growth.

Memory: on CUDA the peak of ``max_memory_allocated`` and ``max_memory_reserved`` over the timed
videos, after emptying the cache and resetting the peak statistics once warm-up is done. The
peak includes the weights and the video inference keeps on the device; ``forward_extra_max_gb``
is the most one forward allocated beyond what was allocated when it began (activations,
workspaces), and ``weights_gb`` the parameters and buffers. On CPU: the peak resident set size
of the process over the same span (``VmHWM``, reset through ``/proc/self/clear_refs`` where the
kernel allows it; otherwise the lifetime peak from ``getrusage``, flagged as not reset).

Keep the device to yourself while measuring, and do not record maps or out-of-bounds counts in
the same pass: both add work to every forward.
"""

from __future__ import annotations

import gc
import resource
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..core.config import InferConfig
from ..engine.inference import PAD_MULTIPLE, autocast_context, plan_clips, predict_video
from ..ops.environment import collect_environment, resolve_device

SCHEMA = "d2bench.inference_measure/1"
GB = 1024**3
_PRECISION_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}

Videos = Sequence[np.ndarray] | Mapping[str, np.ndarray]


class ForwardTimer:
    """A forward callable that times each call between two device synchronisations.

    With a :class:`MemoryProbe` it also has the probe follow each forward's memory peak; that
    bookkeeping happens outside the timed span.
    """

    def __init__(
        self,
        model: Callable[[Tensor], Tensor],
        device: torch.device,
        probe: MemoryProbe | None = None,
    ) -> None:
        self.model = model
        self.device = device
        self.probe = probe
        self.seconds: list[float] = []

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self, x: Tensor) -> Tensor:
        self._sync()
        if self.probe is not None:
            self.probe.before_forward()
        start = time.perf_counter()
        out = self.model(x)
        self._sync()
        self.seconds.append(time.perf_counter() - start)
        if self.probe is not None:
            self.probe.after_forward()
        return out


def effective_dtype(device: torch.device, precision: str) -> str:
    """The dtype inference computes in: autocast bf16/fp16 on CUDA, float32 on the CPU."""
    if device.type == "cuda":
        return _PRECISION_DTYPES[precision]
    return "float32"


# --------------------------------------------------------------------------------------------
# Memory


def _read_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (``VmHWM``) of this process; False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


class MemoryProbe:
    """Peak memory over a span: CUDA allocator peaks, or the process's peak RSS on the CPU.

    On CUDA, :meth:`before_forward`/:meth:`after_forward` (called by :class:`ForwardTimer`,
    device already synchronised) also give the largest amount a single forward allocated beyond
    what was allocated when it started (activations and workspaces, not weights or inputs).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.rss_reset = False
        self._cuda = device.type == "cuda"
        self._peak_allocated = 0
        self._peak_reserved = 0
        self._before = 0
        self._forward_extra = 0

    def _fold_peaks(self) -> None:
        allocated = torch.cuda.max_memory_allocated(self.device)
        reserved = torch.cuda.max_memory_reserved(self.device)
        self._peak_allocated = max(self._peak_allocated, allocated)
        self._peak_reserved = max(self._peak_reserved, reserved)

    def start(self) -> None:
        gc.collect()
        if self._cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.rss_reset = _reset_peak_rss()

    def before_forward(self) -> None:
        if self._cuda:
            self._fold_peaks()
            torch.cuda.reset_peak_memory_stats(self.device)
            self._before = torch.cuda.memory_allocated(self.device)

    def after_forward(self) -> None:
        if self._cuda:
            peak = torch.cuda.max_memory_allocated(self.device)
            self._forward_extra = max(self._forward_extra, peak - self._before)
            self._fold_peaks()

    def result(self) -> dict[str, Any]:
        if self._cuda:
            torch.cuda.synchronize(self.device)
            self._fold_peaks()
            return {
                "kind": "cuda",
                "max_allocated_gb": self._peak_allocated / GB,
                "max_reserved_gb": self._peak_reserved / GB,
                "forward_extra_max_gb": self._forward_extra / GB,
            }
        peak_kib = _read_status_kib("VmHWM") if self.rss_reset else None
        source = "VmHWM after clear_refs"
        if peak_kib is None:
            # ru_maxrss: KiB on Linux, bytes on macOS; the lifetime peak, never reset.
            raw = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak_kib = raw // 1024 if sys.platform == "darwin" else raw
            source = "getrusage ru_maxrss (process lifetime)"
        return {
            "kind": "cpu_rss",
            "peak_rss_gb": peak_kib * 1024 / GB,
            "peak_reset": source.startswith("VmHWM"),
            "source": source,
        }


def parameter_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and buffers (what it holds before any input)."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


# --------------------------------------------------------------------------------------------
# Protocol


def _named_videos(videos: Videos) -> list[tuple[str, np.ndarray]]:
    items = list(videos.items()) if isinstance(videos, Mapping) else list(enumerate(videos))
    if not items:
        raise ValueError("measure_inference needs at least one video")
    named = []
    for name, frames in items:
        if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3:
            shape = getattr(frames, "shape", type(frames).__name__)
            raise ValueError(f"video {name!r} must be a uint8 T×H×W×3 array, got {shape}")
        named.append((str(name), frames))
    return named


def _padded(size: int) -> int:
    return size + (-size) % PAD_MULTIPLE


def warm_up(
    model: nn.Module,
    frames: np.ndarray,
    cfg: InferConfig,
    device: torch.device,
    clips: int,
    *,
    channels_last: bool = False,
) -> None:
    """Run ``clips`` untimed forwards of a batch shaped like inference's first batch."""
    if clips <= 0:
        return
    plan = plan_clips(frames.shape[0], cfg.clip_len, cfg.gap)[: cfg.batch_size]
    with torch.inference_mode():
        video = torch.from_numpy(frames).to(device).permute(3, 0, 1, 2)
        index = torch.tensor([clip.frames for clip in plan], device=device)
        x = video[:, index].permute(1, 0, 2, 3, 4).float().div_(255.0)
        height, width = x.shape[-2:]
        x = torch.nn.functional.pad(x, (0, _padded(width) - width, 0, _padded(height) - height))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        for _ in range(clips):
            with autocast_context(device, cfg.precision):
                model(x)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_inference(
    model: nn.Module,
    videos: Videos,
    infer_cfg: InferConfig,
    device: str | torch.device | None = None,
    *,
    warmup_clips: int = 2,
    channels_last: bool = False,
) -> dict[str, Any]:
    """FPS and peak memory of ``model`` on ``videos`` under the protocol of the module doc.

    ``videos``: uint8 T×H×W×3 arrays, a sequence or a mapping name → frames. The model is moved
    to ``device`` (None: CUDA if present) and put in eval mode. Returns a JSON-ready dict:
    ``fps`` (mean over videos), ``per_video``, ``memory``, ``protocol`` and ``environment``.
    """
    if warmup_clips < 0:
        raise ValueError(f"warmup_clips must be >= 0, got {warmup_clips}")
    named = _named_videos(videos)
    dev = resolve_device(device)
    model.to(dev).eval()
    warm_up(model, named[0][1], infer_cfg, dev, warmup_clips, channels_last=channels_last)

    probe = MemoryProbe(dev)
    probe.start()
    per_video = []
    for name, frames in named:
        timer = ForwardTimer(model, dev, probe)
        predict_video(model, frames, infer_cfg, dev, forward=timer, channels_last=channels_last)
        seconds = float(sum(timer.seconds))
        per_video.append(
            {
                "video": name,
                "frames": int(frames.shape[0]),
                "height": int(frames.shape[1]),
                "width": int(frames.shape[2]),
                "forwards": len(timer.seconds),
                "forward_seconds": seconds,
                "forward_seconds_max": max(timer.seconds, default=0.0),
                "fps": frames.shape[0] / seconds if seconds > 0 else None,
            }
        )
    memory = {**probe.result(), "weights_gb": parameter_bytes(model) / GB}

    rates = [v["fps"] for v in per_video if v["fps"] is not None]
    total_frames = sum(v["frames"] for v in per_video)
    total_seconds = sum(v["forward_seconds"] for v in per_video)
    sizes = sorted({(v["height"], v["width"]) for v in per_video})
    return {
        "schema": SCHEMA,
        "fps": float(np.mean(rates)) if rates else None,
        "fps_pooled": total_frames / total_seconds if total_seconds > 0 else None,
        "frames": total_frames,
        "forward_seconds": total_seconds,
        "per_video": per_video,
        "memory": memory,
        "protocol": {
            "device": str(dev),
            "dtype": effective_dtype(dev, infer_cfg.precision),
            "precision": infer_cfg.precision,
            "resolution": [list(size) for size in sizes],
            "input_resolution": [[_padded(h), _padded(w)] for h, w in sizes],
            "clip_len": infer_cfg.clip_len,
            "gap": infer_cfg.gap,
            "batch_size": infer_cfg.batch_size,
            "warmup_clips": warmup_clips,
            "videos": len(named),
            "channels_last": channels_last,
            "timer": "perf_counter between device synchronisations, per forward",
            "fps_definition": "mean over videos of frames / sum of forward times",
        },
        "environment": collect_environment(dev),
    }


def synthetic_videos(
    count: int, frames: int, height: int, width: int, *, seed: int = 0
) -> dict[str, np.ndarray]:
    """``count`` random uint8 videos of frames×height×width×3 (speed does not depend on content
    for these networks; the data only has to exist)."""
    if min(count, frames, height, width) < 1:
        raise ValueError(
            f"synthetic videos need count, frames, height and width >= 1; got "
            f"{count}, {frames}, {height}, {width}"
        )
    rng = np.random.default_rng(seed)
    return {
        f"synthetic_{i}": rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
        for i in range(count)
    }


def measure_synthetic(
    model: nn.Module,
    frames: int,
    height: int,
    width: int,
    *,
    infer_cfg: InferConfig | None = None,
    device: str | torch.device | None = None,
    videos: int = 1,
    warmup_clips: int = 2,
    channels_last: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """:func:`measure_inference` on ``videos`` random videos of frames×height×width (no data set
    needed). ``infer_cfg`` defaults to the paper's: clips of 8 every 5 frames, batch 1, bf16."""
    cfg = infer_cfg or InferConfig()
    data = synthetic_videos(videos, frames, height, width, seed=seed)
    result = measure_inference(
        model, data, cfg, device, warmup_clips=warmup_clips, channels_last=channels_last
    )
    result["protocol"]["synthetic"] = {"videos": videos, "frames": frames, "seed": seed}
    return result
