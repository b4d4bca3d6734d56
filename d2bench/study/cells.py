"""Cells: one fully resolved config per (row × seed), identified by a content hash.

A cell's key hashes its canonical config and the protocol version, and nothing about where it
runs or writes, so the same cell in two studies, or in two launches of one study, has the same
key: re-launching schedules only what is missing, and two studies share finished work.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import CellConfig, config_to_dict
from .spec import Study

#: Bump when a change to the cell runner makes old results incomparable; every key changes.
PROTOCOL_VERSION = 1
KEY_LENGTH = 16


def canonical_config(config: CellConfig) -> str:
    """The config as canonical JSON (sorted keys, no spaces): what the key hashes."""
    return json.dumps(config_to_dict(config), sort_keys=True, separators=(",", ":"))


def cell_key(config: CellConfig, protocol: int = PROTOCOL_VERSION) -> str:
    """A short, stable hash of the resolved config and the protocol version."""
    payload = f"d2bench-cell/{protocol}\n{canonical_config(config)}".encode()
    return hashlib.sha256(payload).hexdigest()[:KEY_LENGTH]


@dataclass(frozen=True)
class Cell:
    """One unit of work: a row at one seed."""

    study: str
    row: str
    seed: int
    config: CellConfig
    key: str
    table: str | None = None

    @property
    def label(self) -> str:
        return f"{self.row} (seed {self.seed})"

    def cell_dir(self, runs_dir: str | Path) -> Path:
        """Cell folders are named by key alone, so two studies share a finished cell."""
        return Path(runs_dir) / "cells" / self.key

    def params(self) -> dict[str, Any]:
        """Flat ``section.key`` parameters: what this cell sets away from the paper protocol.

        Only non-default settings (plus the variant, activation and seed, always) become MLflow
        params: they are what tells cells apart in the UI, and a store holding thousands of
        runs stays quick to plan against. The full config is the run's ``config.yaml``.
        """
        explicit = self.config.model_dump(mode="json", exclude_defaults=True)
        params = dict(_flatten(explicit))
        params.setdefault("model.variant", self.config.model.variant)
        params.setdefault("model.activation", self.config.model.activation)
        params.setdefault("train.seed", self.config.train.seed)
        return params


def _flatten(tree: dict[str, Any], prefix: str = ""):
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flatten(value, f"{name}.")
        else:
            yield name, value


def expand_cells(study: Study) -> list[Cell]:
    """Rows × seeds, in row order then seed order (the order cells are scheduled in)."""
    cells: list[Cell] = []
    for row in study.row_specs:
        for seed in study.seeds:
            train = row.config.train.model_copy(update={"seed": seed})
            config = row.config.model_copy(update={"train": train})
            cells.append(
                Cell(
                    study.name,
                    row.name,
                    seed,
                    config,
                    cell_key(config),
                    ",".join(row.tables) or None,
                )
            )
    return cells
