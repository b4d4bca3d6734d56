"""Studies by name: ``d2bench run smoke`` runs the packaged ``smoke.yaml`` from any folder.

A study argument that names an existing file is that file, as always. One that is a bare name
(no folder, no suffix) and is no file in the working directory is looked up among the studies
shipped inside the package, so an installed wheel runs its examples without a checkout.
"""

from __future__ import annotations

from pathlib import Path

from ..core.package_data import STUDIES, packaged_folder, packaged_yaml_names
from ..core.yaml_files import YamlFileError, read_yaml_file
from .checks import StudyError


def packaged_study_names() -> list[str]:
    """The runnable packaged studies (files with ``rows``; a shared base such as
    ``paper-base`` is only extended, never run)."""
    names = []
    for name in packaged_yaml_names(STUDIES):
        try:
            tree = read_yaml_file(packaged_folder(STUDIES) / f"{name}.yaml", "study file")
        except YamlFileError:
            continue
        if isinstance(tree, dict) and "rows" in tree:
            names.append(name)
    return names


def _is_bare_name(argument: str) -> bool:
    path = Path(argument)
    return bool(argument) and path.name == argument and not path.suffix


def resolve_study_file(argument: str | Path) -> Path:
    """The study file an argument names: the file itself, else a packaged study of that name.

    A missing bare name raises :class:`StudyError` listing the packaged studies; a missing path
    is returned unchanged, for the reader to report as it always has.
    """
    path = Path(argument)
    if path.exists() or not _is_bare_name(str(argument)):
        return path
    packaged = packaged_folder(STUDIES) / f"{argument}.yaml"
    names = packaged_study_names()
    if str(argument) in names:
        return packaged
    what = (
        f"the packaged {packaged.name} is a base that studies extend, not a study"
        if packaged.is_file()
        else f"no study file {argument!r} and no packaged study of that name"
    )
    raise StudyError(
        f"{what}; packaged studies: {', '.join(names) or '(none)'} (or give a study file's path)"
    )
