"""What a benchmark ran on: GPU, driver, library versions, numerics settings, code revision.

Everything here is best effort: a missing tool (``nvidia-smi``, ``git``) or file gives ``None``
for its fields, never an exception, so that collecting the environment cannot lose a benchmark.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from ..versions import package_versions

#: Environment variables worth keeping next to a measurement.
_RECORDED_ENV_VARS = (
    "CUDA_VISIBLE_DEVICES",
    "D2BENCH_OPS",
    "D2BENCH_BUILD_CUDA",
    "D2BENCH_CUDA_BACKWARD",
    "D2BENCH_CUDA_BACKWARD_ROWS",
    "D2BENCH_CUDA_FORWARD",
    "TORCH_CUDA_ARCH_LIST",
    "NVIDIA_TF32_OVERRIDE",
    "CUBLAS_WORKSPACE_CONFIG",
    "OMP_NUM_THREADS",
)

_COMMAND_TIMEOUT_S = 10.0


def _run(command: list[str], cwd: Path | None = None) -> str | None:
    """stdout of ``command`` stripped, or None when it is missing, fails or times out."""
    try:
        completed = subprocess.run(
            command,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=_COMMAND_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if completed.returncode != 0:
        return None
    return completed.stdout.strip()


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a torch.device with an explicit index on CUDA; None means CUDA if present."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def driver_version() -> str | None:
    """The NVIDIA driver version from ``nvidia-smi``, else from pynvml, else None."""
    output = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    if output:
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        if lines:
            return lines[0]
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return None
    return version.decode() if isinstance(version, bytes) else str(version)


def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or None


#: Names the d2bench revision where the tree has no git history to ask.
REVISION_ENV = "D2BENCH_GIT_REVISION"


def git_state(folder: Path | None = None) -> dict[str, Any]:
    """Revision and dirty flag of the git checkout holding ``folder`` (default: d2bench's).

    ``revision`` is None outside a checkout or before the first commit; ``dirty`` is None outside
    a checkout, else whether ``git status --porcelain`` lists anything.
    """
    stated = os.environ.get(REVISION_ENV)
    if stated:  # a copy of the tree without its history (e.g. shipped to a GPU machine)
        return {"git_revision": stated, "git_dirty": None, "git_checkout": False}
    if folder is None:
        folder = Path(__file__).resolve().parents[1]
    top = _run(["git", "rev-parse", "--show-toplevel"], cwd=folder)
    if top is None:
        return {"git_revision": None, "git_dirty": None, "git_checkout": False}
    revision = _run(["git", "rev-parse", "HEAD"], cwd=folder)
    status = _run(["git", "status", "--porcelain"], cwd=folder)
    return {
        "git_revision": revision or None,
        "git_dirty": None if status is None else bool(status),
        "git_checkout": True,
    }


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
    """Describe the machine and software a measurement on ``device`` is taken with.

    Host names are left out on purpose; the dict is JSON-serialisable.
    """
    dev = resolve_device(device)
    env: dict[str, Any] = {
        "timestamp_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **_gpu_fields(dev),
        "driver_version": driver_version(),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "cudnn_version": _cudnn_version(),
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_num_threads": torch.get_num_threads(),
        **git_state(),
        **numerics_settings(),
        "packages": package_versions(),
        "env_vars": {name: os.environ[name] for name in _RECORDED_ENV_VARS if name in os.environ},
    }
    return env
