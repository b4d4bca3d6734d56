"""Backends that run a study's cells (local, Ray, SLURM) around one ``execute_cell``. Torch-free."""

from __future__ import annotations

from .base import Backend, LaunchContext
from .driver import LaunchSummary, format_plan, launch_study, plan_document, plan_study
from .task import CellTask, execute_cell

BACKEND_NAMES: tuple[str, ...] = ("local", "ray", "slurm")


def make_backend(
    name: str,
    *,
    ray_address: str | None = None,
    max_failures: int = 2,
    slurm_profile: str = "test-cluster",
    detach: bool = False,
) -> Backend:
    """The backend called ``name``; ValueError naming the allowed ones otherwise."""
    if name == "local":
        from .local import LocalBackend

        return LocalBackend()
    if name == "ray":
        from .ray_backend import RayBackend

        return RayBackend(address=ray_address, max_failures=max_failures)
    if name == "slurm":
        from .profiles import load_profile
        from .slurm import SlurmBackend

        return SlurmBackend(load_profile(slurm_profile), detach=detach)
    raise ValueError(f"unknown backend {name!r}; allowed: {', '.join(BACKEND_NAMES)}")


__all__ = [
    "BACKEND_NAMES",
    "Backend",
    "CellTask",
    "LaunchContext",
    "LaunchSummary",
    "execute_cell",
    "format_plan",
    "launch_study",
    "make_backend",
    "plan_document",
    "plan_study",
]
