"""Where a result came from: the d2bench revision, the machine and the recorded settings.

Torch-free and best effort: a missing tool (``git``, ``nvidia-smi``) or file gives ``None`` for
its fields, never an exception, so recording provenance cannot lose a result. The torch side
(GPU, CUDA, cuDNN, numerics switches) is added by :mod:`d2bench.ops.environment`.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from .versions import package_versions

#: Names the d2bench revision where the tree has no git history to ask (a copy of the tree,
#: e.g. one shipped to a GPU machine or a cluster's scratch folder).
REVISION_ENV = "D2BENCH_GIT_REVISION"

#: Environment variables worth keeping next to a measurement.
RECORDED_ENV_VARS = (
    "CUDA_VISIBLE_DEVICES",
    "D2BENCH_OPS",
    "D2BENCH_BUILD_CUDA",
    "TORCH_CUDA_ARCH_LIST",
    "NVIDIA_TF32_OVERRIDE",
    "CUBLAS_WORKSPACE_CONFIG",
    "OMP_NUM_THREADS",
)

_COMMAND_TIMEOUT_S = 10.0


def run_quietly(command: list[str], cwd: Path | None = None) -> str | None:
    """stdout of ``command`` stripped, or None when it is missing, fails or times out."""
    try:
        completed = subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S,
            check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    if completed.returncode != 0:
        return None
    return completed.stdout.strip()


def driver_version() -> str | None:
    """The NVIDIA driver version from ``nvidia-smi``, else from pynvml, else None."""
    output = run_quietly(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
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


def git_state(folder: Path | None = None) -> dict[str, Any]:
    """Revision and dirty flag of the git checkout holding ``folder`` (default: d2bench's).

    ``$D2BENCH_GIT_REVISION`` wins where it is set. ``revision`` is None outside a checkout or
    before the first commit; ``dirty`` is None outside a checkout, else whether a tracked file
    differs from the commit (untracked files, such as data or build folders, do not count).
    """
    stated = os.environ.get(REVISION_ENV)
    if stated:
        return {"git_revision": stated, "git_dirty": None, "git_checkout": False}
    outside = {"git_revision": None, "git_dirty": None, "git_checkout": False}
    own_package = folder is None
    if folder is None:
        folder = Path(__file__).resolve().parent.parent  # the d2bench package folder
    if run_quietly(["git", "rev-parse", "--show-toplevel"], cwd=folder) is None:
        return outside
    tracked = ["git", "ls-files", "--error-unmatch", "__init__.py"]
    if own_package and run_quietly(tracked, cwd=folder) is None:
        # An installed d2bench inside another project's repository (a virtual environment in
        # its tree): that repository's revision is not d2bench's.
        return outside
    revision = run_quietly(["git", "rev-parse", "HEAD"], cwd=folder)
    status = run_quietly(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder)
    return {
        "git_revision": revision or None,
        "git_dirty": None if status is None else bool(status),
        "git_checkout": True,
    }


def git_revision() -> str:
    """The d2bench revision as one string: the commit (``+dirty`` when modified) or ``unknown``."""
    state = git_state()
    revision = state["git_revision"]
    if not revision:
        return "unknown"
    return revision + ("+dirty" if state["git_dirty"] else "")


def host_fields() -> dict[str, Any]:
    """The torch-free part of a measurement's environment (host names are left out on purpose)."""
    return {
        "timestamp_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "driver_version": driver_version(),
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        **git_state(),
        "packages": package_versions(),
        "env_vars": {name: os.environ[name] for name in RECORDED_ENV_VARS if name in os.environ},
    }
