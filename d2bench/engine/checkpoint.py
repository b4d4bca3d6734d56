"""Checkpoints that survive a kill at any moment, and the RNG state needed to continue exactly.

A checkpoint is written to a temporary file in the same folder and renamed over its final name
(atomic on POSIX), so a run killed mid-write leaves the previous checkpoint intact. Names carry
the position in training (epoch and batches done in it) so that "the newest" is unambiguous.
A checkpoint damaged anyway (a full disk, a copy cut short) is skipped on resume in favour of the
newest one that loads, and moved aside as ``*.corrupt``.
"""

from __future__ import annotations

import logging
import os
import random
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.atomic_io import atomic_open

_NAME = re.compile(r"^ckpt-e(\d{4})-b(\d{6})\.pt$")
_BEST_NAME = re.compile(r"^best-e(\d{4})\.pt$")
KEEP = 2
CORRUPT_SUFFIX = ".corrupt"

#: A child of the cell runner's logger, so that skipped checkpoints are named in ``cell.log``.
log = logging.getLogger("d2bench.cell.checkpoint")


def checkpoint_name(epoch: int, batches_done: int) -> str:
    """``ckpt-e0003-b000000.pt``: at the start of epoch 3 (0-based), nothing of it done."""
    return f"ckpt-e{epoch:04d}-b{batches_done:06d}.pt"


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = [(m.groups(), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [path for _, path in sorted(found, key=lambda item: tuple(map(int, item[0])))]


def newest_checkpoint(folder: Path) -> Path | None:
    checkpoints = list_checkpoints(folder)
    return checkpoints[-1] if checkpoints else None


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary sibling, fsync, then rename over ``path``."""
    with atomic_open(path, binary=True) as handle:
        torch.save(obj, handle)


def save_checkpoint(folder: Path, state: dict[str, Any], epoch: int, batches_done: int) -> Path:
    """Write a checkpoint and prune all but the newest :data:`KEEP`."""
    path = folder / checkpoint_name(epoch, batches_done)
    atomic_torch_save(state, path)
    for old in list_checkpoints(folder)[:-KEEP]:
        old.unlink(missing_ok=True)
    return path


def best_checkpoint_name(epochs_done: int) -> str:
    """``best-e0003.pt``: the weights after 3 epochs, the best validated so far.

    The epoch is in the name so that a new best never overwrites the previous one: the training
    checkpoint that names the new file is written after it, and until then the previous best is
    the one a resume continues from (:func:`prune_best` removes the others). The name does not
    match the training checkpoints' pattern, so "resume from the newest" and the keep-newest-two
    rule never touch it.
    """
    return f"best-e{epochs_done:04d}.pt"


def list_best(folder: Path) -> list[Path]:
    """Best-validation checkpoints in ``folder``, oldest first (one, once training committed)."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _BEST_NAME.match(p.name))]
    return [path for _, path in sorted(found)]


def newest_best(folder: Path) -> Path | None:
    best = list_best(folder)
    return best[-1] if best else None


def prune_best(folder: Path, keep: str | None) -> None:
    """Remove every best-validation checkpoint but ``keep`` (a file name; None: remove all)."""
    for path in list_best(folder):
        if path.name != keep:
            path.unlink(missing_ok=True)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load on CPU; our checkpoints hold RNG states and plain Python values besides tensors."""
    return torch.load(path, map_location="cpu", weights_only=False)


def load_newest_intact(
    folder: Path, required: Iterable[str] = (), quarantine: bool = True
) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint in ``folder`` that loads and holds the ``required`` keys, with
    its state; None when there is none.

    Each newer one that does not load is skipped with a warning naming it and why, and (with
    ``quarantine``; only one process of a data-parallel run should) renamed to ``*.corrupt``, so
    that later attempts neither retry it nor prune the good ones in its favour.

    When none loads, the caller starts from the beginning, with a warning naming the files.
    Failing the cell instead would gain nothing: a cell is a pure function of its config and
    seed, so training again from the start reaches the result the lost checkpoints would have,
    while a failure only makes the user delete the files by hand before ``--retry-failed`` does
    exactly that. The damaged files stay (as ``*.corrupt``) for inspection. Storage that cannot
    be read at all (permission denied, an I/O error) is different: that error is raised, naming
    the file, since starting over on such storage would lose the work again.
    """
    skipped: list[str] = []
    for path in reversed(list_checkpoints(folder)):
        try:
            state = load_checkpoint(path)
        except FileNotFoundError:
            continue  # moved aside by another rank of this run meanwhile
        except OSError as error:
            raise OSError(f"cannot read checkpoint {path}: {error}") from error
        except Exception as error:
            _skip(path, f"it does not load ({type(error).__name__}: {error})", quarantine)
            skipped.append(path.name)
            continue
        missing = [key for key in required if not isinstance(state, dict) or key not in state]
        if missing:
            _skip(path, f"it lacks {', '.join(missing)}", quarantine)
            skipped.append(path.name)
            continue
        return path, state
    if skipped:
        log.warning(
            "no checkpoint in %s loads (skipped %s): training starts from the beginning",
            folder,
            ", ".join(skipped),
        )
    return None


def _skip(path: Path, reason: str, quarantine: bool) -> None:
    reason = " ".join(reason.split())[:300]
    if not quarantine:
        log.warning("skipped checkpoint %s: %s", path.name, reason)
        return
    moved = path.with_name(path.name + CORRUPT_SUFFIX)
    try:
        os.replace(path, moved)
    except FileNotFoundError:
        return
    log.warning("skipped checkpoint %s: %s; moved aside to %s", path.name, reason, moved.name)


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
