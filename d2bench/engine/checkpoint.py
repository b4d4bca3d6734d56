"""Checkpoints that survive a kill at any moment, and the RNG state needed to continue exactly.

A checkpoint is written to a temporary file in the same folder and renamed over its final name
(atomic on POSIX), so a run killed mid-write leaves the previous checkpoint intact. Names carry
the position in training (epoch and batches done in it) so that "the newest" is unambiguous.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

_NAME = re.compile(r"^ckpt-e(\d{4})-b(\d{6})\.pt$")
KEEP = 2


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
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(temporary, "wb") as handle:
        torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def save_checkpoint(folder: Path, state: dict[str, Any], epoch: int, batches_done: int) -> Path:
    """Write a checkpoint and prune all but the newest :data:`KEEP`."""
    path = folder / checkpoint_name(epoch, batches_done)
    atomic_torch_save(state, path)
    for old in list_checkpoints(folder)[:-KEEP]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load on CPU; our checkpoints hold RNG states and plain Python values besides tensors."""
    return torch.load(path, map_location="cpu", weights_only=False)


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
