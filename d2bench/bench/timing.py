"""A timing protocol for GPU operators that later benchmarks reuse.

:func:`time_fn` builds several independent input sets up front, enough that together they are
larger than twice the GPU's L2 cache, and rotates through them, so that a repeated call does not
find its operands already in cache. Each call is timed on its own with CUDA events recorded on
the current stream (``time.perf_counter`` on the CPU); the median is the statistic to report.

:func:`peak_extra_memory` measures how much memory one call needs beyond its result;
:func:`synchronize` and :func:`release_memory` are the small device chores every benchmark does.
"""

from __future__ import annotations

import contextlib
import gc
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

#: Bounds on the number of rotated input sets.
MIN_INPUT_SETS = 2
MAX_INPUT_SETS = 8


@dataclass(frozen=True)
class TimingResult:
    """Statistics in milliseconds over ``repeats`` individually timed calls."""

    median_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    p10_ms: float
    p90_ms: float
    std_ms: float
    repeats: int
    warmup: int
    input_sets: int
    input_set_bytes: int
    l2_cache_bytes: int | None
    timer: str
    samples_ms: list[float] = field(repr=False)

    def to_dict(self, *, samples: bool = True) -> dict[str, Any]:
        data = asdict(self)
        if not samples:
            data.pop("samples_ms")
        return data


def iter_tensors(obj: Any) -> Iterator[torch.Tensor]:
    """Every tensor in a (nested) tuple/list/dict, or ``obj`` itself when it is one."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, Mapping):
        for value in obj.values():
            yield from iter_tensors(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from iter_tensors(value)


def tensor_bytes(obj: Any) -> int:
    """Bytes held by the distinct storages of the tensors in ``obj``."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for tensor in iter_tensors(obj):
        storage = tensor.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        if storage.data_ptr() and key in seen:
            continue
        seen.add(key)
        total += storage.nbytes()
    return total


def l2_cache_bytes(device: str | torch.device) -> int | None:
    """The L2 cache size of a CUDA device, or None (CPU, or unknown)."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return None
    size = getattr(torch.cuda.get_device_properties(dev), "L2_cache_size", 0)
    return int(size) or None


def input_set_count(
    set_bytes: int,
    l2_bytes: int | None,
    *,
    min_sets: int = MIN_INPUT_SETS,
    max_sets: int = MAX_INPUT_SETS,
) -> int:
    """How many sets of ``set_bytes`` exceed 2× the L2 together, within [min_sets, max_sets]."""
    if not l2_bytes or set_bytes <= 0:
        return min_sets
    needed = math.floor(2 * l2_bytes / set_bytes) + 1
    return max(min_sets, min(max_sets, needed))


def synchronize(dev: torch.device) -> None:
    """Wait for the device's queued work (a no-op off CUDA)."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def release_memory(dev: torch.device) -> None:
    """Free what a finished measurement left (unreferenced objects, the CUDA allocator's cache),
    so that the next one starts from the same state."""
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def summarize(samples_ms: list[float]) -> dict[str, float]:
    """median, mean, min, max, p10, p90 and (sample) std of a list of times."""
    values = np.asarray(samples_ms, dtype=np.float64)
    return {
        "median_ms": float(np.median(values)),
        "mean_ms": float(values.mean()),
        "min_ms": float(values.min()),
        "max_ms": float(values.max()),
        "p10_ms": float(np.percentile(values, 10)),
        "p90_ms": float(np.percentile(values, 90)),
        "std_ms": float(values.std(ddof=1)) if values.size > 1 else 0.0,
    }


def time_fn(
    fn: Callable[[Any], Any],
    make_inputs: Callable[[int], Any],
    *,
    warmup: int,
    repeats: int,
    device: str | torch.device,
    l2_bytes: int | None = None,
    min_sets: int = MIN_INPUT_SETS,
    max_sets: int = MAX_INPUT_SETS,
) -> TimingResult:
    """Time ``fn(inputs)`` over ``repeats`` calls, each on the next of several input sets.

    ``make_inputs(i)`` returns the i-th input set (fresh random tensors; any structure ``fn``
    takes as its single argument). Set 0 is built first and its size decides how many sets are
    built in total (:func:`input_set_count`; ``l2_bytes`` overrides the device's L2 size). Then
    ``warmup`` untimed calls, then ``repeats`` calls each timed individually: between CUDA events
    recorded on the current stream on a GPU, with ``time.perf_counter`` on the CPU. ``fn``'s
    result is dropped after every call.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    l2 = l2_bytes if l2_bytes is not None else l2_cache_bytes(dev)

    first = make_inputs(0)
    set_bytes = tensor_bytes(first)
    count = input_set_count(set_bytes, l2, min_sets=min_sets, max_sets=max_sets)
    input_sets = [first, *(make_inputs(i) for i in range(1, count))]
    synchronize(dev)

    for i in range(warmup):
        fn(input_sets[i % count])
    synchronize(dev)

    samples: list[float] = []
    if dev.type == "cuda":
        stream = torch.cuda.current_stream(dev)
        events = []
        for i in range(repeats):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record(stream)
            fn(input_sets[i % count])
            end.record(stream)
            events.append((start, end))
        synchronize(dev)
        samples = [float(start.elapsed_time(end)) for start, end in events]
        timer = "cuda_events"
    else:
        for i in range(repeats):
            inputs = input_sets[i % count]
            begin = time.perf_counter()
            fn(inputs)
            samples.append((time.perf_counter() - begin) * 1e3)
        timer = "perf_counter"

    return TimingResult(
        **summarize(samples),
        repeats=repeats,
        warmup=warmup,
        input_sets=count,
        input_set_bytes=set_bytes,
        l2_cache_bytes=l2,
        timer=timer,
        samples_ms=samples,
    )


def peak_extra_memory(
    fn: Callable[[Any], Any], inputs: Any, device: str | torch.device
) -> dict[str, int | None]:
    """Peak device memory of one ``fn(inputs)`` call above what was allocated before it.

    ``output_bytes`` is the size of what ``fn`` returns (for a forward+backward step, return the
    gradients), and ``extra_bytes`` the peak beyond that: workspaces, saved activations,
    temporaries. Both count the bytes the code requested: the caching allocator may hand a
    request a larger cached block whole, and how much larger depends on what earlier calls left
    in its cache, not on the code measured. That block-level figure is kept apart as
    ``allocator_extra_bytes``. CUDA only; on other devices every value is None.
    """
    dev = torch.device(device)
    empty: dict[str, int | None] = {
        "peak_bytes_over_baseline": None,
        "output_bytes": None,
        "extra_bytes": None,
        "allocator_extra_bytes": None,
    }
    if dev.type != "cuda":
        return empty
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    before = torch.cuda.memory_stats(dev)
    output = fn(inputs)
    torch.cuda.synchronize(dev)
    after = torch.cuda.memory_stats(dev)
    requested_peak = after[_REQUESTED_PEAK] - before[_REQUESTED_CURRENT]
    block_peak = after[_ALLOCATED_PEAK] - before[_ALLOCATED_CURRENT]
    output_bytes = tensor_bytes(output)
    del output
    return {
        "peak_bytes_over_baseline": int(requested_peak),
        "output_bytes": int(output_bytes),
        "extra_bytes": int(requested_peak - output_bytes),
        "allocator_extra_bytes": int(block_peak - output_bytes),
    }


_REQUESTED_CURRENT = "requested_bytes.all.current"
_REQUESTED_PEAK = "requested_bytes.all.peak"
_ALLOCATED_CURRENT = "allocated_bytes.all.current"
_ALLOCATED_PEAK = "allocated_bytes.all.peak"


@contextlib.contextmanager
def cudnn_benchmark(enabled: bool) -> Iterator[None]:
    """Set ``torch.backends.cudnn.benchmark`` for a block and restore it afterwards."""
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved
