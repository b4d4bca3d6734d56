"""The data folders shipped inside the package: example studies and SLURM cluster profiles.

They are package data (``pyproject.toml`` lists them), so an installed wheel carries them and
never has to look for a source checkout beside itself. A clone's top-level ``studies/`` and
``slurm/`` hold links to these files, so each exists once.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

#: Folder names inside the ``d2bench`` package.
STUDIES = "studies"
SLURM_PROFILES = "slurm_profiles"


def packaged_folder(name: str) -> Path:
    """The package's own data folder ``name`` (a real folder: d2bench is installed unzipped)."""
    return Path(str(resources.files("d2bench").joinpath(name)))


def packaged_yaml_names(name: str) -> list[str]:
    """The stems of the ``*.yaml`` files in the package's data folder ``name``, sorted."""
    folder = packaged_folder(name)
    return sorted(path.stem for path in folder.glob("*.yaml")) if folder.is_dir() else []
