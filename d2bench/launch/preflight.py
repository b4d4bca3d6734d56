"""What ``d2bench run`` checks before it writes anything; ``--dry-run`` runs the very same checks.

A dry run that says "would schedule 8 cells" for a study whose data root is missing, or whose
runs folder cannot be created, promises a run that then fails after the plan is printed. So
every check here is read-only (nothing is created, not even the runs folder) and the dry run
differs from the real run only in what it does after them. Torch-free.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..study.spec import Study, StudyError, check_data_roots


class PreflightError(ValueError):
    """An input that would make the run fail; one line naming the key or flag and the fix."""


def check_creatable_folder(path: str | Path, key: str) -> None:
    """``path`` is a writable folder, or one ``mkdir -p`` can create, decided without creating it.

    Walks up to the nearest existing ancestor: it must be a folder (not a file standing where a
    folder of the path should be) that this user may write into.
    """
    target = Path(path).expanduser().absolute()
    current = target
    while not current.exists():
        if current.is_symlink():
            raise PreflightError(f"{key}: {target}: {current} is a broken symbolic link")
        current = current.parent
    if not current.is_dir():
        what = "is a file" if current == target else f"{current} is a file"
        raise PreflightError(
            f"{key}: {target}: {what}, not a folder; choose a folder path (or move the file)"
        )
    if not os.access(current, os.W_OK | os.X_OK):
        raise PreflightError(
            f"{key}: {target}: cannot create or write it ({current} is not writable by this "
            "user); choose a folder you can write to"
        )


def check_data_folders(study: Study) -> None:
    """Real data must exist; synthetic data must be creatable where the rows point."""
    if study.spec.synthetic_data is False:
        check_data_roots(study)
        return
    source = study.path or study.name
    for row in study.row_specs:
        try:
            check_creatable_folder(row.config.data.root, f"rows[{row.name}].data.root")
        except PreflightError as error:
            raise StudyError(f"{source}: {error} (synthetic data is generated there)") from None


def check_backend_flags(
    backend: str, *, ray_address: str | None, slurm_profile: str | None, detach: bool
) -> None:
    """Command-line options that only mean something for one backend, given with another."""
    if detach and backend != "slurm":
        raise PreflightError(
            f"--detach: applies to the slurm backend only; the backend is {backend} "
            "(add --backend slurm)"
        )
    if ray_address is not None and backend != "ray":
        raise PreflightError(
            f"--ray-address: applies to the ray backend only; the backend is {backend} "
            "(add --backend ray)"
        )
    if ray_address is not None and not ray_address.strip():
        raise PreflightError(
            "--ray-address: is empty; give a cluster address (host:port, ray://host:port, auto)"
        )
    if slurm_profile is not None and backend != "slurm":
        raise PreflightError(
            f"--slurm-profile: applies to the slurm backend only; the backend is {backend} "
            "(add --backend slurm)"
        )
