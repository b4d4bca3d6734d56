"""Operator benchmark: D²Conv3D and 3D DCNv2 against cuDNN on the paper's replaced layers.

For every shape, each kernel (an implementation at one precision) is timed forward and
forward+backward with the protocol of :mod:`d2bench.bench.timing`; ours are divided by the cuDNN
convolution of the same shape and precision measured in the same run, and the ratios are judged
against the ``ops`` criteria of ``targets.toml``. The result goes to ``ops-<gpu>.json``
(everything) and ``ops-<gpu>.md`` (the tables). The report's keys keep the word ``variant``
for a kernel (``results[shape][name]["variant"]``, ``variants``), as written reports have it.

Run it with ``d2bench bench ops [--quick] [--out DIR]``.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import d2bench.ops as ops
from d2bench.ops import reference
from d2bench.ops.geometry import make_geometry

from ..core.provenance import git_state
from ..ops.environment import collect_environment, resolve_device
from .common import (
    DILATION_RANGE,
    Target,
    describe_error,
    fmt,
    gpu_slug,
    load_criteria,
    markdown_table,
    md_cell,
    pass_mark,
    report_header,
    shorten,
    write_report,
)
from .timing import (
    MAX_INPUT_SETS,
    MIN_INPUT_SETS,
    l2_cache_bytes,
    peak_extra_memory,
    release_memory,
    time_fn,
)
from .timing import (
    cudnn_benchmark as cudnn_benchmark_mode,
)

SCHEMA = "d2bench.ops_bench/1"
FORWARD = "forward"
FORWARD_BACKWARD = "forward_backward"
#: Memory only: the backward call alone, with the forward's output and saved tensors already
#: allocated (the extra memory of "a call" for the backward operator).
BACKWARD = "backward_call"
PHASE_LABEL = {FORWARD: "fwd", FORWARD_BACKWARD: "fwd+bwd", BACKWARD: "bwd"}
#: The pure-PyTorch reference is slow (≈ 0.2 s a forward+backward at the paper's shapes), so it
#: gets at most this many timed calls: still a median of 20, as for every other kernel, since
#: its time moves by tens of percent between calls and a median of 5 moved the speed-up targets.
REFERENCE_REPEATS = 20
#: Quick runs (smoke tests, CPU) cap the repeats and warm-up calls at these.
QUICK_REPEATS = 5
QUICK_WARMUP = 2
MIB = 1024 * 1024


@dataclass(frozen=True)
class OpShape:
    """One convolution layer: C_in→C_out, T×H×W input, batch N; always 3×3×3, stride/pad/dil 1."""

    c_in: int
    c_out: int
    t: int
    h: int
    w: int
    batch: int = 1

    @property
    def id(self) -> str:
        return f"{self.c_in}-{self.c_out}_t{self.t}_{self.h}x{self.w}_n{self.batch}"

    @property
    def label(self) -> str:
        text = f"{self.c_in}→{self.c_out} T{self.t} {self.h}×{self.w}"
        return text + (f" N{self.batch}" if self.batch != 1 else "")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OpShape:
        return cls(*(int(data[key]) for key in ("c_in", "c_out", "t", "h", "w", "batch")))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "label": self.label,
            **asdict(self),
            "kernel": [3, 3, 3],
            "stride": 1,
            "padding": 1,
            "dilation": 1,
        }


#: The layers the paper replaces, at inference resolution.
SHAPES: tuple[OpShape, ...] = (
    OpShape(256, 256, 4, 60, 108),
    OpShape(512, 256, 4, 60, 108),
    OpShape(256, 256, 2, 30, 54),
    OpShape(1024, 256, 2, 30, 54),
    OpShape(256, 256, 8, 60, 108, batch=2),
)
#: Tiny stand-ins that run on a CPU in seconds.
QUICK_SHAPES: tuple[OpShape, ...] = (
    OpShape(8, 8, 2, 6, 8),
    OpShape(16, 8, 2, 6, 8, batch=2),
)


@dataclass(frozen=True)
class Kernel:
    """One implementation at one precision (the report calls it a variant)."""

    name: str
    op: str  # "conv3d" | "d2conv3d" | "deform_conv3d" | "reference"
    dtype: torch.dtype
    channels_last: bool
    tf32_off: bool
    backward: bool
    baseline: str | None

    @property
    def ours(self) -> bool:
        return self.op in ("d2conv3d", "deform_conv3d")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "op": self.op,
            "dtype": str(self.dtype).removeprefix("torch."),
            "memory_format": "channels_last_3d" if self.channels_last else "contiguous",
            "map_dtype": "float32",
            "tf32_off": self.tf32_off,
            "backward": self.backward,
            "baseline": self.baseline,
        }


BF16, FP16, FP32 = torch.bfloat16, torch.float16, torch.float32
KERNELS: tuple[Kernel, ...] = (
    Kernel("cudnn_bf16", "conv3d", BF16, True, False, True, None),
    Kernel("cudnn_fp16", "conv3d", FP16, True, False, True, None),
    Kernel("cudnn_fp32", "conv3d", FP32, True, True, True, None),
    Kernel("d2conv3d_bf16", "d2conv3d", BF16, True, False, True, "cudnn_bf16"),
    Kernel("d2conv3d_fp16", "d2conv3d", FP16, True, False, True, "cudnn_fp16"),
    Kernel("d2conv3d_fp32", "d2conv3d", FP32, True, True, True, "cudnn_fp32"),
    Kernel("dcnv2_bf16", "deform_conv3d", BF16, True, False, True, "cudnn_bf16"),
    Kernel("reference_fp32", "reference", FP32, False, True, True, "cudnn_fp32"),
)
_KERNELS_BY_NAME = {kernel.name: kernel for kernel in KERNELS}


def select_kernels(names: Sequence[str] | None) -> tuple[Kernel, ...]:
    """The kernels to measure: all for None, else the named ones and the baselines their
    ratios need, in :data:`KERNELS`' order. An unknown name raises ValueError listing them."""
    if names is None:
        return KERNELS
    unknown = [name for name in names if name not in _KERNELS_BY_NAME]
    if unknown:
        raise ValueError(
            f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(_KERNELS_BY_NAME)}"
        )
    wanted = set(names)
    wanted |= {b for b in (_KERNELS_BY_NAME[n].baseline for n in names) if b is not None}
    return tuple(kernel for kernel in KERNELS if kernel.name in wanted)


RATIO, SPEEDUP, MEMORY = "ratio", "speedup", "memory"


def _target(
    kernel: str, phase: str, limit: float, kind: str = RATIO, against: str | None = None
) -> Target:
    """One criterion of the operators, checked per shape.

    ``ratio``: the kernel's time ≤ limit × its cuDNN baseline's. ``speedup``: ``against``'s time
    ≥ limit × the kernel's. ``memory``: the kernel's extra memory ≤ limit × the output's size.
    """
    label = PHASE_LABEL[phase]
    if kind == SPEEDUP:
        assert against is not None
        baseline = against
        text = f"{kernel} {label} ≥ {limit:g}× faster than {baseline}"
        limit_text = f"≥ {limit:g}×"
    elif kind == MEMORY:
        baseline = "output"
        text = f"{kernel} {label} extra memory ≤ {limit:g}× the output"
        limit_text = f"≤ {limit:g}× output"
    else:
        found = _KERNELS_BY_NAME[kernel].baseline
        assert found is not None
        baseline = found
        text = f"{kernel} {label} ≤ {limit:g}× {baseline}"
        limit_text = f"≤ {limit:g}×"
    return Target(kernel, phase, limit, kind, text, limit_text, baseline, kind == SPEEDUP, against)


#: The criteria of the ``ops`` table of ``targets.toml``.
TARGETS: tuple[Target, ...] = tuple(
    _target(
        entry["kernel"],
        entry["phase"],
        float(entry["limit"]),
        entry.get("kind", RATIO),
        entry.get("against"),
    )
    for entry in load_criteria("ops")
)


# --------------------------------------------------------------------------------------------
# Inputs and calls


def _randn(shape: Sequence[int], gen: torch.Generator, dev: torch.device) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, device=dev, dtype=torch.float32)


def _call(kernel: Kernel, inputs: dict[str, Any]) -> torch.Tensor:
    x, w = inputs["x"], inputs["w"]
    if kernel.op == "conv3d":
        return F.conv3d(x, w, None, 1, 1, 1)
    if kernel.op == "d2conv3d":
        return ops.d2conv3d(x, inputs["map"], inputs["mod"], w, None, 1, 1, 1)
    if kernel.op == "deform_conv3d":
        return ops.deform_conv3d(x, inputs["map"], inputs["mod"], w, None, 1, 1, 1, 1)
    geom = make_geometry(x, 1, 1, 1)
    return reference.d2conv3d_reference(x, inputs["map"], inputs["mod"], w, None, geom)


def _leaves(inputs: dict[str, Any]) -> list[torch.Tensor]:
    return [inputs[key] for key in ("x", "w", "map", "mod") if key in inputs]


def _forward_fn(kernel: Kernel) -> Callable[[dict[str, Any]], torch.Tensor]:
    def forward(inputs: dict[str, Any]) -> torch.Tensor:
        with torch.no_grad():
            return _call(kernel, inputs)

    return forward


def _forward_backward_fn(kernel: Kernel) -> Callable[[dict[str, Any]], tuple[torch.Tensor, ...]]:
    def forward_backward(inputs: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        with torch.enable_grad():
            out = _call(kernel, inputs)
            return torch.autograd.grad(out, _leaves(inputs), inputs["grad_out"])

    return forward_backward


def _backward_memory(kernel: Kernel, inputs: dict[str, Any], dev: torch.device) -> dict:
    """Peak extra memory of the backward call alone: the forward runs first, outside the window."""
    with torch.enable_grad():
        out = _call(kernel, inputs)
        leaves = _leaves(inputs)
        memory = peak_extra_memory(
            lambda grad_out: torch.autograd.grad(out, leaves, grad_out), inputs["grad_out"], dev
        )
    return memory


def _input_factory(
    shape: OpShape, shape_index: int, kernel: Kernel, dev: torch.device
) -> Callable[[int], dict[str, Any]]:
    """make_inputs(i): fresh random tensors; set i of a shape is the same draw for every kernel.

    Sets are cached, so that the forward and the forward+backward timings of a kernel rotate
    over the same sets without building them twice.
    """
    cache: dict[int, dict[str, Any]] = {}
    fmt = torch.channels_last_3d if kernel.channels_last else torch.contiguous_format

    def make_inputs(i: int) -> dict[str, Any]:
        if i in cache:
            return cache[i]
        gen = torch.Generator(device=dev)
        gen.manual_seed(1009 * (shape_index + 1) + i)
        n = shape.batch
        x = _randn((n, shape.c_in, shape.t, shape.h, shape.w), gen, dev)
        w = _randn((shape.c_out, shape.c_in, 3, 3, 3), gen, dev) / math.sqrt(27 * shape.c_in)
        inputs: dict[str, Any] = {
            "x": x.to(kernel.dtype).contiguous(memory_format=fmt),
            "w": w.to(kernel.dtype).contiguous(memory_format=fmt),
        }
        del x, w
        out_size = (shape.t, shape.h, shape.w)  # 3×3×3, stride 1, padding 1, dilation 1
        if kernel.op in ("d2conv3d", "reference"):
            low, high = DILATION_RANGE
            inputs["map"] = (1.0 + 0.5 * _randn((n, 3, *out_size), gen, dev)).clamp_(low, high)
            inputs["mod"] = torch.sigmoid(_randn((n, 27, *out_size), gen, dev))
        elif kernel.op == "deform_conv3d":
            inputs["map"] = _randn((n, 81, *out_size), gen, dev)
            inputs["mod"] = torch.sigmoid(_randn((n, 27, *out_size), gen, dev))
        if kernel.backward:
            for leaf in _leaves(inputs):
                leaf.requires_grad_(True)
            # Same layout as the operator's output, so that no kernel pays for a conversion.
            out = _forward_fn(kernel)(inputs)
            inputs["grad_out"] = torch.empty_like(out).normal_(generator=gen)
            del out
        cache[i] = inputs
        return inputs

    make_inputs.cache = cache  # type: ignore[attr-defined]
    return make_inputs


# --------------------------------------------------------------------------------------------
# Measuring one kernel


@contextlib.contextmanager
def _numerics(kernel: Kernel) -> Iterator[dict[str, bool]]:
    """TF32 off for the float32 kernels (restored afterwards); yields the settings in force."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = (matmul.allow_tf32, cudnn.allow_tf32)
    if kernel.tf32_off:
        matmul.allow_tf32 = False
        cudnn.allow_tf32 = False
    try:
        yield {
            "cuda_matmul_allow_tf32": bool(matmul.allow_tf32),
            "cudnn_allow_tf32": bool(cudnn.allow_tf32),
        }
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved


def _is_oom(error: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom is not None and isinstance(error, oom)) or "out of memory" in str(error).lower()


def _measure_phase(
    fn: Callable[[Any], Any],
    make_inputs: Callable[[int], Any],
    *,
    warmup: int,
    repeats: int,
    dev: torch.device,
) -> dict[str, Any]:
    timing = time_fn(fn, make_inputs, warmup=warmup, repeats=repeats, device=dev)
    memory = peak_extra_memory(fn, make_inputs(0), dev)
    return {**timing.to_dict(), "memory": memory}


def _measure_kernel(
    shape: OpShape,
    shape_index: int,
    kernel: Kernel,
    dev: torch.device,
    *,
    warmup: int,
    repeats: int,
    progress: Callable[[str], None],
    unavailable: str | None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {"shape": shape.id, "variant": kernel.name, **kernel.to_dict()}
    if unavailable is not None and kernel.ours:
        entry["error"] = unavailable
        progress(f"{kernel.name} error {unavailable}")
        return entry
    if kernel.op == "reference":
        repeats = min(repeats, REFERENCE_REPEATS)
        warmup = min(warmup, 1)
    make_inputs = _input_factory(shape, shape_index, kernel, dev)
    phases = [(FORWARD, _forward_fn(kernel))]
    if kernel.backward:
        phases.append((FORWARD_BACKWARD, _forward_backward_fn(kernel)))
    else:
        entry[FORWARD_BACKWARD] = {"skipped": "forward only"}
    try:
        with _numerics(kernel) as settings:
            entry["tf32"] = settings
            for phase, fn in phases:
                try:
                    result = _measure_phase(
                        fn, make_inputs, warmup=warmup, repeats=repeats, dev=dev
                    )
                except Exception as error:
                    if phase == FORWARD:
                        raise
                    entry[phase] = {"error": describe_error(error)}
                    message = shorten(entry[phase]["error"], 160)
                    progress(f"{kernel.name} {PHASE_LABEL[phase]} error {message}")
                    release_memory(dev)
                    continue
                entry[phase] = result
                progress(f"{kernel.name} {PHASE_LABEL[phase]} {result['median_ms']:.3f} ms")
                if phase == FORWARD_BACKWARD:
                    entry[BACKWARD] = {"memory": _backward_memory(kernel, make_inputs(0), dev)}
    except Exception as error:
        entry.pop(FORWARD_BACKWARD, None)
        if kernel.op == "reference" and _is_oom(error):
            entry["skipped"] = f"out of memory: {describe_error(error)}"
            progress(f"{kernel.name} skipped (out of memory)")
        else:
            entry["error"] = describe_error(error)
            progress(f"{kernel.name} error {shorten(entry['error'], 160)}")
    finally:
        make_inputs.cache.clear()  # type: ignore[attr-defined]
        del make_inputs
        release_memory(dev)
    return entry


# --------------------------------------------------------------------------------------------
# Ratios and targets


def _median(entry: dict[str, Any] | None, phase: str) -> float | None:
    if not entry or "error" in entry or "skipped" in entry:
        return None
    value = (entry.get(phase) or {}).get("median_ms")
    return float(value) if value is not None else None


def _add_ratios(entries: dict[str, dict[str, Any]]) -> None:
    for entry in entries.values():
        baseline = _KERNELS_BY_NAME[entry["variant"]].baseline
        if baseline is None:
            continue
        for phase in (FORWARD, FORWARD_BACKWARD):
            ours, base = _median(entry, phase), _median(entries.get(baseline), phase)
            ratio = ours / base if ours is not None and base else None
            entry[f"ratio_{phase}"] = ratio


def _output_bytes(shape: OpShape, kernel: str) -> int:
    element = torch.empty((), dtype=_KERNELS_BY_NAME[kernel].dtype).element_size()
    return shape.batch * shape.c_out * shape.t * shape.h * shape.w * element


def _target_value(target: Target, entries: dict[str, dict[str, Any]], shape: OpShape) -> Any:
    entry = entries.get(target.subject) or {}
    if target.kind == SPEEDUP:
        ours = _median(entry, target.measure)
        theirs = _median(entries.get(target.against or ""), target.measure)
        return theirs / ours if ours and theirs is not None else None
    if target.kind == MEMORY:
        timed_phase = FORWARD_BACKWARD if target.measure == BACKWARD else target.measure
        if _median(entry, timed_phase) is None:
            return None
        extra = ((entry.get(target.measure) or {}).get("memory") or {}).get("extra_bytes")
        return None if extra is None else extra / _output_bytes(shape, target.subject)
    return entry.get(f"ratio_{target.measure}")


def _evaluate_targets(entries: dict[str, dict[str, Any]], shape: OpShape) -> list[dict[str, Any]]:
    rows = []
    for target in TARGETS:
        value = _target_value(target, entries, shape)
        verdict = target.judge(value)
        rows.append(
            {
                "target": target.label,
                "kind": target.kind,
                "variant": target.subject,
                "phase": target.measure,
                "baseline": target.baseline,
                "limit": target.limit,
                "limit_text": target.limit_text,
                "ratio": value,
                "pass": verdict,
            }
        )
    return rows


def _targets_report(per_shape: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The criteria, each shape's verdicts and the counts, as the report stores them."""
    verdicts = [row["pass"] for rows in per_shape.values() for row in rows]
    evaluated = [verdict for verdict in verdicts if verdict is not None]
    return {
        "criteria": [
            {
                "target": t.label,
                "variant": t.subject,
                "phase": t.measure,
                "baseline": t.baseline,
                "kind": t.kind,
                "limit": t.limit,
            }
            for t in TARGETS
        ],
        "per_shape": per_shape,
        "total": len(verdicts),
        "evaluated": len(evaluated),
        "passed": sum(evaluated),
        "all_pass": (all(evaluated) if len(evaluated) == len(verdicts) else None),
    }


def rejudge_report(json_path: Path) -> Path:
    """Judge a written report's measurements again against today's criteria and rewrite it.

    For criteria changed in ``targets.toml`` after a run: the measurements (times, memory) stay
    as they were, the ratios and verdicts are recomputed, and the report records the revision
    that judged them.
    """
    json_path = Path(json_path)
    report = json.loads(json_path.read_text())
    if report.get("schema") != SCHEMA:
        raise ValueError(f"not an operator benchmark report (its schema is not {SCHEMA})")
    per_shape = {}
    for shape_data in report["shapes"]:
        shape = OpShape.from_dict(shape_data)
        entries = report["results"][shape.id]
        _add_ratios(entries)
        per_shape[shape.id] = _evaluate_targets(entries, shape)
    report["targets"] = {
        **_targets_report(per_shape),
        "judged_by_revision": git_state().get("git_revision"),
    }
    _write_report(json_path, report)
    return json_path


# --------------------------------------------------------------------------------------------
# Output


def _write_report(json_path: Path, report: dict[str, Any]) -> str:
    """The report as JSON at ``json_path`` and as Markdown beside it; returns the Markdown."""
    return write_report(json_path, report, render_markdown)


def _cell_ms(entry: dict[str, Any], phase: str) -> str:
    if "error" in entry:
        return "error"
    if "skipped" in entry:
        return "skipped"
    data = entry.get(phase) or {}
    if "error" in data:
        return "error"
    if "median_ms" in data:
        return f"{data['median_ms']:.3f}"
    return "—"


def _cell_ratio(value: float | None) -> str:
    return fmt(value, 2, "×")


def _cell_mib(entry: dict[str, Any], phase: str) -> str:
    memory = (entry.get(phase) or {}).get("memory") or {}
    extra = memory.get("extra_bytes")
    return "—" if extra is None else f"{extra / MIB:.1f}"


def _operators_text(operators: dict[str, Any]) -> str:
    """Which operator implementation ran (``D2BENCH_OPS``), and why it could not load."""
    text = f"Operators: {operators['backend']}"
    return text + (
        f" (load error: {operators['load_error']})" if operators.get("load_error") else ""
    )


def _protocol_text(protocol: dict[str, Any]) -> str:
    l2 = protocol.get("l2_cache_bytes")
    l2_text = f"{l2 / MIB:.1f} MiB" if l2 else "unknown"
    return (
        f"Protocol: {protocol['statistic']} of {protocol['repeats']} individually timed calls "
        f"({protocol['timer']}) after {protocol['warmup']} warm-up calls; inputs rotated over "
        f"{protocol['min_input_sets']}–{protocol['max_input_sets']} sets larger together than "
        f"2× L2 ({l2_text}); reference: {protocol['reference_repeats']} calls; "
        f"float32 entries with TF32 off on both sides; cuDNN autotuning "
        f"{'on' if protocol['cudnn_benchmark'] else 'off'}; no bias; 3×3×3, stride 1, "
        "padding 1, dilation 1; fwd+bwd = forward plus gradients of input, weight and "
        "dilation map/offset and modulation/mask. Extra memory: peak of the bytes requested "
        "during the call beyond what it returns (the caching allocator's block rounding is "
        "recorded apart in the JSON); fwd+bwd counts the forward's output and saved tensors, "
        "bwd is the backward call alone (the forward run before it)."
    )


def _timing_rows(report: dict[str, Any]) -> tuple[list[list[str]], list[str]]:
    """One row per shape and kernel, and the errors and skips to list below the table."""
    rows, errors = [], []
    for shape in report["shapes"]:
        for name, entry in report["results"][shape["id"]].items():
            rows.append(
                [
                    shape["label"],
                    name,
                    _cell_ms(entry, FORWARD),
                    _cell_ms(entry, FORWARD_BACKWARD),
                    _cell_ratio(entry.get("ratio_forward")),
                    _cell_ratio(entry.get("ratio_forward_backward")),
                    _cell_mib(entry, FORWARD),
                    _cell_mib(entry, FORWARD_BACKWARD),
                    _cell_mib(entry, BACKWARD),
                ]
            )
            for where, data in (("", entry), (" fwd+bwd", entry.get(FORWARD_BACKWARD) or {})):
                if "error" in data:
                    message = md_cell(shorten(data["error"], 300))
                    errors.append(f"- {shape['label']} {name}{where}: {message}")
            if "skipped" in entry:
                errors.append(f"- {shape['label']} {name}: skipped, {md_cell(entry['skipped'])}")
    return rows, errors


def render_markdown(report: dict[str, Any]) -> str:
    """The report's tables as Markdown."""
    env = report["environment"]
    quick = " (quick run: tiny shapes, not the paper's)" if report.get("quick") else ""
    lines = report_header(
        f"Operator benchmark: {env.get('gpu_name') or 'CPU'}",
        env,
        [_operators_text(report["operators"]), _protocol_text(report["protocol"])],
        wall_s=report.get("wall_s", 0),
        note=quick,
    )
    timing_rows, errors = _timing_rows(report)
    lines += ["", "## Timings (median ms; ratios against cuDNN of the same precision)", ""]
    lines += markdown_table(
        ["Shape", "Variant", "fwd ms", "fwd+bwd ms", "ratio fwd", "ratio fwd+bwd",
         "extra MiB fwd", "extra MiB fwd+bwd", "extra MiB bwd"],
        "llrrrrrrr",
        timing_rows,
    )  # fmt: skip
    lines += ["", "## Targets", ""]
    lines += markdown_table(
        ["Shape", "Target", "Value", "Limit", "Pass"],
        "llrrc",
        (
            [shape["label"], row["target"], _cell_ratio(row["ratio"]), row["limit_text"],
             pass_mark(row["pass"], missing="n/a")]
            for shape in report["shapes"]
            for row in report["targets"]["per_shape"][shape["id"]]
        ),
    )  # fmt: skip
    summary = report["targets"]
    lines += [
        "",
        f"Targets met: {summary['passed']} of {summary['evaluated']} evaluated "
        f"({summary['total']} in all).",
    ]
    judged_by = summary.get("judged_by_revision")
    if judged_by and judged_by != env.get("git_revision"):
        lines += [
            "",
            f"The targets were judged again by revision {judged_by[:12]} on these measurements "
            "(`d2bench bench ops --rejudge`), against the criteria of that revision.",
        ]
    if errors:
        lines += ["", "## Errors and skipped entries", "", *errors]
    return "\n".join(lines) + "\n"


def _load_operators(progress: Callable[[str], None]) -> dict[str, Any]:
    """Load the operator implementation ``D2BENCH_OPS`` selects; the report keeps its name
    under ``backend``, as written reports have it."""
    info: dict[str, Any] = {"backend": None, "load_error": None}
    try:
        implementation = ops.selected_implementation()
        info["backend"] = implementation
        progress(f"loading operators ({implementation}; the first build takes minutes)")
        ops.ensure_loaded()
    except Exception as error:
        info["load_error"] = describe_error(error)
        progress(f"operators unavailable: {info['load_error']}")
    return info


def run_ops_benchmark(
    out_dir: Path = Path("reports/bench"),
    *,
    quick: bool = False,
    repeats: int = 30,
    warmup: int = 5,
    device: str | None = None,
    cudnn_benchmark: bool = True,
    variants: Sequence[str] | None = None,
) -> Path:
    """Benchmark the operators on ``device`` (default: the current GPU, else the CPU).

    Writes ``ops-<gpu-slug>.json`` and ``ops-<gpu-slug>.md`` into ``out_dir``, prints progress
    and the Markdown report, and returns the JSON path. ``quick`` uses tiny shapes and at most
    5 repeats / 2 warm-up calls (a smoke run). ``cudnn_benchmark`` lets cuDNN autotune its
    algorithms (the warm-up calls absorb the tuning), so the baseline is cuDNN at its best.
    ``variants`` measures only those kernels (and their baselines); the other criteria are then
    reported as not evaluated.
    """
    kernels = select_kernels(variants)
    started = time.perf_counter()
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if quick:
        repeats, warmup = min(repeats, QUICK_REPEATS), min(warmup, QUICK_WARMUP)
    shapes = QUICK_SHAPES if quick else SHAPES
    environment = collect_environment(dev)
    out_dir = Path(out_dir)
    slug = gpu_slug(environment.get("gpu_name"))

    def say(text: str) -> None:
        print(text, flush=True)

    operators = _load_operators(say)
    unavailable = (
        f"operators unavailable: {operators['load_error']}" if operators["load_error"] else None
    )

    results: dict[str, dict[str, dict[str, Any]]] = {}
    per_shape_targets: dict[str, list[dict[str, Any]]] = {}
    with cudnn_benchmark_mode(cudnn_benchmark):
        for index, shape in enumerate(shapes):
            prefix = f"[{index + 1}/{len(shapes)}] {shape.label}"
            entries: dict[str, dict[str, Any]] = {}
            for kernel in kernels:
                entries[kernel.name] = _measure_kernel(
                    shape,
                    index,
                    kernel,
                    dev,
                    warmup=warmup,
                    repeats=repeats,
                    progress=lambda text, prefix=prefix: say(f"{prefix} {text}"),
                    unavailable=unavailable,
                )
            _add_ratios(entries)
            results[shape.id] = entries
            per_shape_targets[shape.id] = _evaluate_targets(entries, shape)

    report: dict[str, Any] = {
        "schema": SCHEMA,
        "quick": quick,
        "environment": environment,
        "operators": operators,
        "protocol": {
            "warmup": warmup,
            "repeats": repeats,
            "reference_repeats": min(repeats, REFERENCE_REPEATS),
            "input_sets": "rotated; enough sets to exceed 2× L2 together, bounded below and above",
            "min_input_sets": MIN_INPUT_SETS,
            "max_input_sets": MAX_INPUT_SETS,
            "l2_cache_bytes": l2_cache_bytes(dev),
            "timer": "cuda_events" if dev.type == "cuda" else "perf_counter",
            "statistic": "median",
            "cudnn_benchmark": cudnn_benchmark,
            "tf32_off_for": [v.name for v in kernels if v.tf32_off],
            "bias": None,
            "gradients": "torch.autograd.grad of all inputs, fresh each call; fwd+bwd includes "
            "the forward",
            "dilation_map": f"1 + 0.5·randn clipped to {list(DILATION_RANGE)}, float32",
            "offset": "randn, float32",
            "modulation_mask": "sigmoid(randn), float32",
            "memory": "peak requested bytes over baseline during one call, minus its output "
            "(fwd+bwd: minus the gradients); allocator_extra_bytes: the same from the caching "
            "allocator's blocks; CUDA only",
        },
        "shapes": [shape.to_dict() for shape in shapes],
        "variants": [kernel.to_dict() for kernel in kernels],
        "results": results,
        "targets": _targets_report(per_shape_targets),
        "wall_s": time.perf_counter() - started,
    }
    json_path = out_dir / f"ops-{slug}.json"
    markdown = _write_report(json_path, report)
    say("")
    say(markdown)
    return json_path
