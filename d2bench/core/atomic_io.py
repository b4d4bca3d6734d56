"""Atomic file writes: a reader sees the old file or the whole new one, never half of one.

The data goes to a temporary sibling (same folder, so the rename stays on one file system), is
flushed and fsync'ed, then renamed over the target with :func:`os.replace` (atomic on POSIX).
On any error the temporary file is removed and the target is left as it was. Torch-free: every
floor of the package may use it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_open", "atomic_write_bytes", "atomic_write_json", "atomic_write_text"]

TEMPORARY_SUFFIX = ".tmp"


def _temporary_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{TEMPORARY_SUFFIX}")


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike[str], binary: bool = False, encoding: str = "utf-8"
) -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; on a clean exit, flush, fsync and rename
    it over ``path``. The parent folder is created when missing. The file gets the usual
    permissions (0666 less the umask), as a plain ``open`` would give it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_sibling(path)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb" if binary else "w", encoding=None if binary else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, binary=True) as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path, encoding=encoding) as handle:
        handle.write(text)


def atomic_write_json(path: str | os.PathLike[str], data: Any, **dumps: Any) -> None:
    """Serialise ``data`` (``json.dumps`` keyword arguments in ``dumps``) and write it atomically.

    The text is built before any file is opened, so data that cannot be serialised raises
    without touching the folder.
    """
    atomic_write_text(path, json.dumps(data, **dumps))
