"""The sha256 of a large file (pretrained weights), cached so that planning stays quick.

A weights file is hundreds of MB: hashing it takes seconds, and every ``plan``, ``run`` and
``status`` computes the cell keys that hold it. The cache (``digests.json`` in d2bench's cache
folder: ``$D2BENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/d2bench``, else ``~/.cache/d2bench``) maps
a resolved path to its digest and to what ``stat`` said when it was hashed: size, mtime, ctime
and inode, in nanoseconds. Any difference re-hashes. The ctime moves on every write and cannot be
set back by a user, so a file rewritten at the same size with its mtime restored is re-hashed
too. A file changed within the same timestamp tick as its hash could still look unchanged (git's
"racy clean" case), so only files last changed more than :data:`RACY_NS` before they were
hashed are cached. The cache is only ever a shortcut: unreadable, garbled or unwritable, it is
ignored, and a moved file is hashed again and keeps its digest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from ..core.atomic_io import atomic_write_json

CACHE_ENV = "D2BENCH_CACHE_DIR"
CACHE_FILE = "digests.json"
#: Files changed this recently (ns) are hashed every time: coarser than any file system's tick.
RACY_NS = 2_000_000_000
_CHUNK = 1 << 20


def cache_path() -> Path:
    """Where the digest cache lives (see the module docstring)."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured) / CACHE_FILE
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "d2bench" / CACHE_FILE


def file_sha256(path: Path | str, cache: Path | None = None) -> str:
    """The hex sha256 of the file at ``path`` (FileNotFoundError when there is none)."""
    resolved = Path(path).expanduser().resolve()
    cache = cache or cache_path()
    checked_ns = time.time_ns()
    before = resolved.stat()
    fingerprint = _fingerprint(before)
    entry = _read(cache).get(str(resolved))
    if isinstance(entry, dict) and entry.get("stat") == fingerprint:
        return str(entry["sha256"])
    digest = _hash(resolved)
    settled = checked_ns - before.st_ctime_ns > RACY_NS
    if settled and _fingerprint(resolved.stat()) == fingerprint:
        entries = _read(cache)  # re-read: keep what other processes added meanwhile
        entries[str(resolved)] = {"stat": fingerprint, "sha256": digest}
        _write(cache, entries)
    return digest


def _fingerprint(stat: os.stat_result) -> list[int]:
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]


def _hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _read(cache: Path) -> dict[str, Any]:
    try:
        entries = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def _write(cache: Path, entries: dict[str, Any]) -> None:
    """Atomically (a temporary sibling renamed over it); a cache that cannot be written is
    skipped."""
    with contextlib.suppress(OSError):
        atomic_write_json(cache, entries, sort_keys=True)
