"""The protocol line of a caption: data, resolution, gap, hardware, dtype, epochs, seeds.

Read from the cells' resolved configs (plain mappings, as the study expands them) and from the
environment the runs recorded, so the caption says what was actually run, not what was meant.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


def _get(config: Mapping[str, Any], dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _show(value: Any) -> str:
    if isinstance(value, list | tuple) and len(value) == 2:
        return f"{value[0]}×{value[1]}"
    return str(value)


def _merged(values: Iterable[Any]) -> str | None:
    """One value, or "a / b" when the cells disagree; None when no cell states it."""
    shown: list[str] = []
    for value in values:
        if value is None:
            continue
        text = _show(value)
        if text not in shown:
            shown.append(text)
    return " / ".join(shown) if shown else None


@dataclass(frozen=True)
class Protocol:
    """What the runs of one table did; None where nothing recorded it."""

    dataset: str | None = None
    train_split: str | None = None
    val_split: str | None = None
    train_resolution: str | None = None
    #: The videos' own frame size where known (e.g. the synthetic set's), else None.
    native_resolution: str | None = None
    gap: str | None = None
    hardware: str | None = None
    dtype: str | None = None
    epochs: str | None = None
    seeds: str | None = None

    def describe(self) -> str:
        """A caption sentence such as ``synthetic DAVIS, train 2017/train, val 2016/val, …``."""
        parts = []
        if self.dataset:
            parts.append(self.dataset)
        if self.train_split:
            parts.append(f"train {self.train_split}")
        if self.val_split:
            parts.append(f"val {self.val_split}")
        native = f" ({self.native_resolution})" if self.native_resolution else ""
        if self.train_resolution == "native":
            parts.append(f"frames at native size{native}")
        elif self.train_resolution:
            train = self.train_resolution
            parts.append(f"training frames {train}, inference at native size{native}")
        if self.gap:
            parts.append(f"clip gap {self.gap}")
        if self.hardware:
            parts.append(self.hardware)
        if self.dtype:
            parts.append(self.dtype)
        if self.epochs:
            parts.append(f"{self.epochs} epoch{'' if self.epochs == '1' else 's'}")
        if self.seeds:
            parts.append(f"seeds {self.seeds}")
        return ", ".join(parts)


def _dataset_name(root: Any) -> str | None:
    if not isinstance(root, str):
        return None
    return "synthetic DAVIS" if "synthetic" in root.lower() else "DAVIS"


def _hardware(environment: Mapping[str, Any], devices: Sequence[Any]) -> str | None:
    gpu = environment.get("gpu_name") or environment.get("gpu")
    if gpu:
        return f"GPU {gpu}"
    cpu = environment.get("cpu_model") or environment.get("cpu")
    device = _merged(devices)
    if cpu:
        return f"CPU {cpu}"
    if device:
        return f"device {device}"
    return None


def _train_size(config: Mapping[str, Any]) -> Any:
    data = config.get("data")
    if isinstance(data, Mapping) and "train_size" in data and data["train_size"] is None:
        return "native"
    return _get(config, "data.train_size")


def _precision_text(config: Mapping[str, Any]) -> str:
    """``fp16``, ``bf16 train / fp32 inference``; with ``, fp32 sampling`` where the sampling
    operator ran in float32 under autocast (the as-released choice)."""
    train, infer = _get(config, "train.precision"), _get(config, "infer.precision")
    text = f"{train} train / {infer} inference" if train != infer else str(infer)
    reduced = {train, infer} - {"fp32", None}
    if reduced and _get(config, "model.sampling_precision") == "fp32":
        text += ", fp32 sampling"
    return text


def protocol_from_configs(
    configs: Sequence[Mapping[str, Any]],
    environment: Mapping[str, Any] | None = None,
    seeds: Iterable[int] | None = None,
    native_resolution: str | None = None,
) -> Protocol:
    """Summarise the cells' configs (``config_to_dict`` form) and the recorded environment."""
    environment = environment or {}
    seed_values = sorted(set(seeds)) if seeds is not None else None
    if seed_values is None:
        found = {_get(c, "train.seed") for c in configs} - {None}
        seed_values = sorted(found) if found else None
    dtypes = _merged(_precision_text(c) for c in configs if _get(c, "infer.precision") is not None)
    return Protocol(
        dataset=_merged(_dataset_name(_get(c, "data.root")) for c in configs),
        train_split=_merged(_get(c, "data.train_set") for c in configs),
        val_split=_merged(_get(c, "data.val_set") for c in configs),
        train_resolution=_merged(_train_size(c) for c in configs),
        native_resolution=native_resolution,
        gap=_merged(_get(c, "infer.gap") for c in configs),
        hardware=_hardware(environment, [_get(c, "device") for c in configs]),
        dtype=dtypes,
        epochs=_merged(_get(c, "train.epochs") for c in configs),
        seeds=", ".join(str(s) for s in seed_values) if seed_values else None,
    )
