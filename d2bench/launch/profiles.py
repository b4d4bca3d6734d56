"""SLURM cluster profiles: ``slurm/<name>.yaml``, the site-specific half of a submission.

Looked up in ``$D2BENCH_SLURM_PROFILES``, then ``./slurm``, then the profiles shipped inside the
package (``gpu-cluster``, a template, and ``test-cluster``), so an installed wheel finds them too.

A study says what a cell needs (GPUs, CPUs, memory, time); a profile says where and how it runs
on one cluster (partition, account, constraint, setup lines such as ``module load``). Fields set
in a profile override the study's resources, for clusters with fixed node shapes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..core.config import describe_validation_error
from ..core.package_data import SLURM_PROFILES, packaged_folder
from ..core.yaml_files import YamlFileError, read_yaml_file

PROFILE_DIR_ENV = "D2BENCH_SLURM_PROFILES"


class ProfileError(ValueError):
    """A missing or malformed cluster profile."""


class ProfileNotFound(ProfileError):
    """No profile of that name or path; the message lists the known ones."""


class SlurmProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    #: Override the study's resources (None: use the study's).
    gpus_per_node: int | None = Field(None, ge=0)
    cpus_per_task: int | None = Field(None, ge=1)
    mem_gb: float | None = Field(None, gt=0)
    timeout_min: int | None = Field(None, ge=1)
    #: Shell lines run before the cell (``module load ...``, ``source .venv/bin/activate``).
    setup: list[str] = Field(default_factory=list)
    #: Seconds of warning (SIGUSR2) before the time limit, for a checkpoint and a requeue.
    signal_delay_s: int = Field(120, ge=0)
    #: How many times a cell may be requeued after reaching its time limit (submitit's
    #: ``max_num_timeout``); preemptions do not count. Past it the run ends KILLED.
    max_num_timeout: int = Field(3, ge=0)
    #: How many cells of one array may run at once.
    array_parallelism: int = Field(256, ge=1)
    #: Any other sbatch option, as submitit's ``slurm_additional_parameters``.
    additional: dict[str, Any] = Field(default_factory=dict)


def profile_dirs() -> list[Path]:
    """Where profiles are looked up: ``$D2BENCH_SLURM_PROFILES``, ./slurm, the packaged ones."""
    dirs = []
    if os.environ.get(PROFILE_DIR_ENV):
        dirs.append(Path(os.environ[PROFILE_DIR_ENV]))
    dirs.append(Path.cwd() / "slurm")
    dirs.append(packaged_folder(SLURM_PROFILES))
    return dirs


def load_profile(name_or_path: str) -> SlurmProfile:
    """A profile by name (``slurm/<name>.yaml``) or by path."""
    candidate = Path(name_or_path)
    paths = [candidate] if candidate.suffix in (".yaml", ".yml") else []
    paths += [folder / f"{name_or_path}.yaml" for folder in profile_dirs()]
    for path in paths:
        if path.is_file():
            try:
                data = read_yaml_file(path, "SLURM profile") or {}
            except YamlFileError as error:
                raise ProfileError(str(error)) from None
            if not isinstance(data, dict):
                raise ProfileError(f"{path}: a profile is a mapping of submitit parameters")
            try:
                return SlurmProfile.model_validate(data)
            except ValidationError as error:
                message = describe_validation_error(error, str(path), SlurmProfile)
                raise ProfileError(message) from None
    known = sorted({p.stem for d in profile_dirs() if d.is_dir() for p in d.glob("*.yaml")})
    raise ProfileNotFound(
        f"no SLURM profile {name_or_path!r}; known profiles: {', '.join(known) or '(none)'}"
    )
