"""The measurement phase: FPS and memory of every row of a study, on one device, serially.

Inside a cell, FPS and memory are taken on whatever device the cell got, beside whatever else
runs there, so rows measured that way cannot be compared. Here one process measures every
row's evaluated weights on one device, one model at a time, with the rows interleaved and the
whole sequence repeated (round 1: every row, round 2: every row, ...): a drift of the machine
(clocks, temperature, a neighbour) spreads over all rows and shows as spread between rounds
instead of biasing the rows measured last. Each single measurement is
:func:`d2bench.metrics.speed.measure_inference` (warm-up excluded, synchronised timers) with
the row's own inference settings. A fresh model is built and loaded for every measurement and
dropped after it, so that only one row's weights are resident while it is timed.
"""

from __future__ import annotations

import datetime
import gc
import math
import statistics
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.config import CellConfig
from ..core.measurement import MeasureTarget, MeasureTask

SCHEMA = "d2bench.study_measurement/1"
#: The memory figure of a row, by the kind of device (what Table 1's Mem column shows).
MEMORY_KEYS = {"cuda": ("max_allocated_gb", "mem_alloc_gb"), "cpu_rss": ("peak_rss_gb",) * 2}

Echo = Callable[[str], None]


class MeasureDeviceError(ValueError):
    """The requested device does not exist here; one line naming ``--device`` and the options."""


def resolve_measure_device(name: str) -> torch.device:
    """``auto``: the first CUDA GPU when there is one, else the CPU; others must exist here."""
    if name == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise MeasureDeviceError(
            f"--device {name!r}: not a device; allowed: auto, cpu, cuda:N"
        ) from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise MeasureDeviceError(f"--device {name!r}: not supported; allowed: auto, cpu, cuda:N")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise MeasureDeviceError(f"--device {name!r}: no CUDA GPU is visible here; use cpu")
    index = 0 if device.index is None else device.index
    if index >= count:
        raise MeasureDeviceError(
            f"--device {name!r}: only {count} CUDA GPU(s) visible here; "
            f"allowed: cuda:0 to cuda:{count - 1}"
        )
    return torch.device("cuda", index)


def load_measured_model(target: MeasureTarget, config: CellConfig) -> nn.Module:
    """The network the cell evaluated: its evaluated checkpoint, or (never trained) its seeded
    initial model with its backbone weights, as the cell runner built it."""
    if target.checkpoint is None:
        from .cell import build_seeded_model

        return build_seeded_model(config)
    from ..engine.checkpoint import load_checkpoint
    from ..models import build_model

    model = build_model(config.model, load_weights=False)
    state = load_checkpoint(target.checkpoint)  # type: ignore[arg-type]
    model.load_state_dict(state["model"] if isinstance(state, dict) and "model" in state else state)
    return model


def _videos(config: CellConfig, cache: dict[tuple, dict[str, np.ndarray]]):
    """The validation videos the cell's protocol times (read once per data set)."""
    from ..data import list_sequences, read_frames

    data, limit = config.data, config.measure.fps_videos
    key = (data.root, data.val_set, limit)
    if key not in cache:
        sequences = list_sequences(data.root, data.val_set)
        if limit is not None:
            sequences = sequences[:limit]
        cache[key] = {name: read_frames(data.root, name) for name in sequences}
    return cache[key]


def _measure_once(
    target: MeasureTarget, device: torch.device, cache: dict[tuple, dict[str, np.ndarray]]
) -> dict[str, Any]:
    from ..metrics.speed import measure_inference

    config = CellConfig.model_validate(target.config)
    model = load_measured_model(target, config)
    channels_last = config.train.channels_last and device.type == "cuda"
    try:
        report = measure_inference(
            model,
            _videos(config, cache),
            config.infer,
            device,
            warmup_clips=config.measure.warmup_clips,
            channels_last=channels_last,
        )
    finally:
        model.to("cpu")
        del model
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return report


def _summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "std": None, "min": None, "max": None}
    std = statistics.stdev(values) if len(values) >= 2 else None
    return {"mean": statistics.fmean(values), "std": std, "min": min(values), "max": max(values)}


def _memory_value(report: dict[str, Any]) -> tuple[str | None, float | None]:
    memory = report.get("memory", {})
    keys = MEMORY_KEYS.get(memory.get("kind", ""))
    if keys is None or memory.get(keys[0]) is None:
        return None, None
    return keys[1], float(memory[keys[0]])


def measure_rows(task: MeasureTask, echo: Echo = print) -> dict[str, Any]:
    """Measure every target ``task.rounds`` times, round-robin; the JSON-ready record."""
    from ..ops.environment import collect_environment

    device = resolve_measure_device(task.device)
    started = datetime.datetime.now(datetime.UTC)
    cache: dict[tuple, dict[str, np.ndarray]] = {}
    rounds: dict[str, list[dict[str, Any]]] = {target.row: [] for target in task.targets}
    order: list[list[Any]] = []
    for round_index in range(task.rounds):
        for target in task.targets:
            report = _measure_once(target, device, cache)
            order.append([round_index, target.row])
            source, memory = _memory_value(report)
            rounds[target.row].append(
                {
                    "round": round_index,
                    "fps": report["fps"],
                    "fps_pooled": report["fps_pooled"],
                    "memory_source": source,
                    "memory_gb": memory,
                    "memory": report["memory"],
                    "per_video": report["per_video"],
                    "protocol": report["protocol"],
                }
            )
            echo(
                f"  round {round_index + 1}/{task.rounds} {target.row}: "
                f"{report['fps']:.3f} FPS, {source} {memory if memory is None else f'{memory:.3f}'}"
            )
    rows: dict[str, Any] = {}
    for target in task.targets:
        measured = rounds[target.row]
        fps = [float(r["fps"]) for r in measured if _finite(r["fps"])]
        memory = [float(r["memory_gb"]) for r in measured if _finite(r["memory_gb"])]
        rows[target.row] = {
            "cell_key": target.key,
            "seed": target.seed,
            "row_keys": list(target.row_keys),
            "variant": target.variant,
            "activation": target.activation,
            "checkpoint": target.checkpoint,
            "fps": _summary(fps),
            "memory_source": measured[0]["memory_source"] if measured else None,
            "memory_gb": _summary(memory),
            "rounds": measured,
        }
    return {
        "schema": SCHEMA,
        "study": task.study,
        "device": str(device),
        "device_name": _device_name(device),
        "rounds": task.rounds,
        "started_utc": started.isoformat(timespec="seconds"),
        "finished_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "order": order,
        "rows": rows,
        "unmeasured": list(task.unmeasured),
        "seed_note": "one cell per row (its lowest finished seed): FPS and memory depend on "
        "the network and the inference settings, not on the seed",
        "environment": collect_environment(device),
    }


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from ..core.provenance import cpu_model

    return cpu_model() or "CPU"
