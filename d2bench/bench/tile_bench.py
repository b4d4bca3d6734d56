"""``d2bench bench tiles``: the CUDA-core backward's two tile heights, measured per kernel.

The launcher of the CUDA-core backward (float32, float64, and 16-bit calls outside the
tensor-core backward) picks each kernel's tile height (64 or 128 rows) with a wave model whose
per-row cost of the small tile was set from this measurement. This benchmark times both
heights of both kernels (forced by the kernel policy's ``backward_rows``, see
:mod:`d2bench.ops.policy`) and the height the launcher picks, so the model can be checked on a
new GPU and re-tuned from data rather than guessed.
"""

from __future__ import annotations

import collections
import contextlib
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..ops.environment import collect_environment, resolve_device
from ..ops.policy import kernel_policy
from .common import DILATION_RANGE, gpu_slug, pass_mark, write_report

SCHEMA = "d2bench.tile_bench/1"
#: What forces the heights: the kernel policy's field, as the report names it.
ROWS_SETTING = "kernel_policy(backward_rows=...)"
HEIGHTS = (64, 128)
KERNELS = ("simt_input_grad_kernel", "simt_weight_grad_kernel")
_KERNEL_HEIGHT = re.compile(r"(simt_(?:input|weight)_grad_kernel)<.*?, (64|128)>")


@dataclass(frozen=True)
class TileShape:
    """One D²Conv3D layer call: batch, channels in → out, volume, and its data type."""

    dtype: str
    batch: int
    in_channels: int
    out_channels: int
    time: int
    height: int
    width: int

    @property
    def label(self) -> str:
        return (
            f"{self.dtype} {self.batch}, {self.in_channels}→{self.out_channels}, "
            f"{self.time}, {self.height}×{self.width}"
        )


#: The operator benchmark's five float32 shapes, and 64-channel layers in float32 and bfloat16
#: (16-bit calls with fewer than 128 output channels take the CUDA-core backward).
SHAPES: tuple[TileShape, ...] = (
    TileShape("fp32", 1, 256, 256, 4, 60, 108),
    TileShape("fp32", 1, 512, 256, 4, 60, 108),
    TileShape("fp32", 1, 256, 256, 2, 30, 54),
    TileShape("fp32", 1, 1024, 256, 2, 30, 54),
    TileShape("fp32", 2, 256, 256, 8, 60, 108),
    TileShape("fp32", 1, 256, 64, 4, 60, 108),
    TileShape("fp32", 1, 64, 64, 4, 60, 108),
    TileShape("bf16", 1, 256, 64, 4, 60, 108),
    TileShape("bf16", 1, 64, 64, 4, 60, 108),
)
QUICK_SHAPES: tuple[TileShape, ...] = (
    TileShape("fp32", 1, 32, 16, 2, 8, 12),
    TileShape("bf16", 1, 32, 16, 2, 8, 12),
)
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


class TileBenchUnavailable(RuntimeError):
    """No CUDA GPU or no compiled CUDA operators: there is nothing to time."""


@contextlib.contextmanager
def forced_rows(rows: int | None) -> Iterator[None]:
    """Within the block, both kernels at ``rows`` (64 or 128), or for None at the height the
    launcher picks; the policy in force before is restored afterwards."""
    with kernel_policy(backward_rows="auto" if rows is None else rows):
        yield


def layer_inputs(shape: TileShape, dev: torch.device) -> tuple[torch.Tensor, ...]:
    """Input, dilation map, mask and weight as the layers pass them on a GPU (channels_last_3d
    data and weight, float32 maps)."""
    gen = torch.Generator(device=dev).manual_seed(0)
    cl = torch.channels_last_3d
    volume = (shape.time, shape.height, shape.width)
    dtype = _DTYPES[shape.dtype]

    def rand(*size: int) -> torch.Tensor:
        return torch.randn(*size, generator=gen, device=dev)

    x = rand(shape.batch, shape.in_channels, *volume).to(dtype).contiguous(memory_format=cl)
    dilation = (1 + 0.5 * rand(shape.batch, 3, *volume)).clamp(*DILATION_RANGE)
    mask = torch.sigmoid(rand(shape.batch, 27, *volume))
    fan_in = shape.in_channels * 27
    weight = (rand(shape.out_channels, shape.in_channels, 3, 3, 3) / fan_in**0.5).to(dtype)
    weight = weight.contiguous(memory_format=cl)
    return tuple(t.requires_grad_() for t in (x, dilation, mask, weight))


def forward_backward(inputs: tuple[torch.Tensor, ...]) -> None:
    """One D²Conv3D forward and backward of every input."""
    from ..ops import d2conv3d

    out = d2conv3d(*inputs)
    out.backward(torch.ones_like(out))


def kernel_and_height(event_name: str) -> str | None:
    """``kernel/height`` for a CUDA-core backward kernel's profiler event, else None.

    Read from the kernel's template name (``simt_input_grad_kernel<..., 64>``): the height the
    launcher picks by itself is known nowhere else, since the torch profiler names a GPU kernel
    only by its symbol and attributes it to the operator that launched it, not to the launcher's
    choice within that operator.
    """
    match = _KERNEL_HEIGHT.search(event_name)
    return f"{match.group(1)}/{match.group(2)}" if match else None


def kernel_times_ms(
    event_names_and_us: list[tuple[str, float]],
    calls: int,
    key_of: Callable[[str], str | None] = kernel_and_height,
) -> dict[str, Any]:
    """Per call: the time of each kernel ``key_of`` names (by default the CUDA-core backward's,
    keyed ``kernel/height``), and the total of all kernels."""
    times: collections.Counter[str] = collections.Counter()
    total = 0.0
    for name, microseconds in event_names_and_us:
        total += microseconds
        key = key_of(name)
        if key:
            times[key] += microseconds
    result: dict[str, Any] = {key: value / calls / 1000 for key, value in sorted(times.items())}
    result["total"] = total / calls / 1000
    return result


def profile_kernels(
    inputs: tuple[torch.Tensor, ...],
    warmup: int,
    repeats: int,
    key_of: Callable[[str], str | None] = kernel_and_height,
) -> dict[str, Any]:
    """:func:`kernel_times_ms` of ``repeats`` forward+backward calls after ``warmup`` ones."""
    for _ in range(warmup):
        forward_backward(inputs)
    torch.cuda.synchronize()
    activities = [torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as profile:
        for _ in range(repeats):
            forward_backward(inputs)
        torch.cuda.synchronize()
    events = [
        (event.name, float(event.device_time))
        for event in profile.events()
        if event.device_type == torch.autograd.DeviceType.CUDA
    ]
    return kernel_times_ms(events, repeats, key_of)


def judge_shape(measured: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per kernel: each forced height's time, the faster one, the one the launcher chose, and
    whether they agree. ``measured`` maps "64", "128" and "chosen" to kernel_times_ms results."""
    verdict: dict[str, Any] = {}
    for kernel in KERNELS:
        forced = {h: measured[str(h)].get(f"{kernel}/{h}") for h in HEIGHTS}
        timed = {h: ms for h, ms in forced.items() if ms is not None}
        faster = min(timed, key=timed.__getitem__) if timed else None
        chosen = [h for h in HEIGHTS if f"{kernel}/{h}" in measured["chosen"]]
        verdict[kernel] = {
            "ms": {str(h): forced[h] for h in HEIGHTS},
            "faster": faster,
            "chosen": chosen[0] if len(chosen) == 1 else None,
            "chose_faster": chosen == [faster],
        }
    return verdict


def render_markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [
        f"# CUDA-core backward tile heights: {env.get('gpu_name') or 'no GPU'}",
        "",
        f"- torch {env.get('torch_version')}, CUDA {env.get('cuda_version')}; d2bench revision "
        f"{(env.get('git_revision') or 'unknown')[:7]}",
        f"- Per call: profiler kernel times, mean of {report['protocol']['repeats']} "
        f"forward+backward calls after {report['protocol']['warmup']} warm-up calls; "
        "channels_last_3d data and weight, float32 maps. Heights forced with "
        f"`{ROWS_SETTING}`; **bold**: the faster; ✓: the launcher's own choice was the faster.",
        f"- Started {env.get('timestamp_utc')}, took {report['wall_s']:.0f} s",
        "",
        "| shape (dtype N, C_in→C_out, T, H×W) | input grad 64 / 128 rows | chosen "
        "| weight grad 64 / 128 channels | chosen |",
        "|---|---:|:---:|---:|:---:|",
    ]
    agree = 0
    for entry in report["results"]:
        cells = [entry["label"]]
        for kernel in KERNELS:
            verdict = entry["verdict"][kernel]
            times = []
            for height in HEIGHTS:
                value = verdict["ms"][str(height)]
                text = "—" if value is None else f"{value:.2f}"
                times.append(f"**{text}**" if height == verdict["faster"] else text)
            cells.append(" / ".join(times) + " ms")
            mark = pass_mark(bool(verdict["chose_faster"]))
            cells.append(f"{verdict['chosen'] or '?'} {mark}")
            agree += bool(verdict["chose_faster"])
        lines.append("| " + " | ".join(cells) + " |")
    total = len(report["results"]) * len(KERNELS)
    lines += ["", f"The launcher chose the faster height in {agree} of {total} cases.", ""]
    return "\n".join(lines)


def cuda_with_operators(device: str | None, command: str) -> torch.device:
    """The CUDA device a kernel benchmark times on, made current, with the compiled operators
    loaded; TileBenchUnavailable naming ``command`` where there is no GPU or no CUDA build."""
    dev = resolve_device(device)
    if dev.type != "cuda":
        raise TileBenchUnavailable(f"{command} times CUDA kernels and needs a CUDA GPU, got {dev}")
    from ..ops._registration import load_and_register

    if not load_and_register():
        raise TileBenchUnavailable(
            f"{command} needs the operators built with their CUDA kernels (`d2bench ops build` "
            "on a machine with nvcc)"
        )
    torch.cuda.set_device(dev)
    return dev


def run_tile_benchmark(
    out_dir: Path = Path("reports/bench"),
    *,
    quick: bool = False,
    repeats: int = 5,
    warmup: int = 2,
    device: str | None = None,
) -> Path:
    """Measure both tile heights of both CUDA-core backward kernels on every shape; write
    ``tiles-<gpu>.json`` and ``.md`` into ``out_dir`` and return the JSON path."""
    dev = cuda_with_operators(device, "bench tiles")
    started = time.perf_counter()
    environment = collect_environment(dev)
    shapes = QUICK_SHAPES if quick else SHAPES
    results = []
    for index, shape in enumerate(shapes):
        inputs = layer_inputs(shape, dev)
        measured = {}
        for rows in (*HEIGHTS, None):
            with forced_rows(rows):
                measured["chosen" if rows is None else str(rows)] = profile_kernels(
                    inputs, warmup, repeats
                )
        verdict = judge_shape(measured)
        results.append(
            {"shape": asdict(shape), "label": shape.label, "measured": measured, "verdict": verdict}
        )
        picks = ", ".join(
            f"{kernel.removeprefix('simt_').removesuffix('_kernel')}: chose "
            f"{v['chosen']}, faster {v['faster']}"
            for kernel, v in verdict.items()
        )
        print(f"[{index + 1}/{len(shapes)}] {shape.label}: {picks}", flush=True)
        del inputs
        torch.cuda.empty_cache()
    report = {
        "schema": SCHEMA,
        "quick": quick,
        "environment": environment,
        "protocol": {"repeats": repeats, "warmup": warmup, "forced_by": ROWS_SETTING},
        "results": results,
        "wall_s": time.perf_counter() - started,
    }
    out_dir = Path(out_dir)
    json_path = out_dir / f"tiles-{gpu_slug(environment.get('gpu_name'))}.json"
    markdown = write_report(json_path, report, render_markdown)
    print(markdown, flush=True)
    return json_path
