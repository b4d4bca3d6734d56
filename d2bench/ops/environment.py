"""The device a measurement runs on: GPU, CUDA, cuDNN, the numerics switches of torch and the
kernel policy the compiled operators are held to.

The torch side of a result's provenance; the host, versions and revision come from
:mod:`d2bench.core.provenance`.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from ..core.provenance import host_fields
from .policy import current_kernel_policy


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a torch.device with an explicit index on CUDA; None means CUDA if present."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def _cudnn_version() -> int | None:
    try:
        return torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except Exception:
        return None


def _gpu_fields(dev: torch.device) -> dict[str, Any]:
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    fields: dict[str, Any] = {
        "device": str(dev),
        "gpu_name": None,
        "gpu_count": count,
        "compute_capability": None,
        "gpu_memory_bytes": None,
        "gpu_multiprocessors": None,
        "l2_cache_bytes": None,
    }
    if dev.type != "cuda":
        return fields
    props = torch.cuda.get_device_properties(dev)
    fields.update(
        gpu_name=props.name,
        compute_capability=f"{props.major}.{props.minor}",
        gpu_memory_bytes=int(props.total_memory),
        gpu_multiprocessors=int(props.multi_processor_count),
        l2_cache_bytes=int(getattr(props, "L2_cache_size", 0)) or None,
    )
    return fields


def numerics_settings() -> dict[str, Any]:
    """The global switches that change what a float32 convolution or matmul computes."""
    return {
        "cuda_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
    }


def collect_environment(device: str | torch.device | None = None) -> dict[str, Any]:
    """Describe the machine and software a measurement on ``device`` is taken with (JSON-able)."""
    host = host_fields()
    return {
        "timestamp_utc": host.pop("timestamp_utc"),
        **_gpu_fields(resolve_device(device)),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "cudnn_version": _cudnn_version(),
        "torch_num_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        **host,
        **numerics_settings(),
        "kernel_policy": current_kernel_policy().as_dict(),
    }
