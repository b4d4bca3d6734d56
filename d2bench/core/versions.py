"""The resolved versions of the packages a result depends on (torch-free, no imports of them).

Installs follow ``constraints.txt``, but a library install resolves whatever its ranges allow, so
every launch, every cell result and ``d2bench --version`` name what was actually installed.
"""

from __future__ import annotations

from importlib import metadata

from .. import __version__

#: Packages whose version can change a result or the store's format.
KEY_PACKAGES: tuple[str, ...] = (
    "torch",
    "numpy",
    "mlflow",
    "alembic",
    "sqlalchemy",
    "ray",
    "submitit",
    "pydantic",
    "pandas",
)


def package_versions(names: tuple[str, ...] = KEY_PACKAGES) -> dict[str, str | None]:
    """``{package: installed version}``; None for a package that is not installed here."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def version_text() -> str:
    """What ``d2bench --version`` prints: d2bench's version, then one package per line."""
    lines = [f"d2bench {__version__}"]
    for name, version in package_versions().items():
        lines.append(f"  {name:<11} {version or 'not installed'}")
    return "\n".join(lines)
