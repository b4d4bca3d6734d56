"""Cells: one fully resolved config per (row × seed), identified by a content hash.

A cell's key hashes what defines the experiment (:func:`.signature.experiment_signature`: the
config without where things are on this machine, with digests of the data and weights it reads)
and the protocol version, and nothing about where it runs or writes. So the same cell in two
studies, in two launches of one study, or on two machines sharing one tracking server has the
same key: re-launching schedules only what is missing, and two studies share finished work.

The study's ``select`` (which checkpoint the tables show: best validation or final) is not in
the key, and is not a cell config key at all: a cell that validates per epoch records the J&F
of both checkpoints from its one training run (``best_val/*`` beside the plain, final keys), so
two studies that differ only in ``select`` share every cell and the report picks the column.
Whether a cell validates (``train.validate_every_epochs``) is in the key: it decides whether the
best-validation numbers exist.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.config import CellConfig
from ..core.names import takes_activation
from .inputs import InputIdentifier, UnidentifiedInput
from .signature import CellInputs, experiment_signature
from .spec import Study, StudyError

#: Bump when a change to the cell runner or to what the key covers makes old keys incomparable:
#: every key changes, and cells tracked under older keys are scheduled again (their runs stay).
#: 2: machine-local keys (data.root, data.num_workers, model.weights, the device index) left
#: out; data and weights enter by digest.
PROTOCOL_VERSION = 2
KEY_LENGTH = 16


def canonical_signature(config: CellConfig, inputs: CellInputs) -> str:
    """The experiment signature as canonical JSON (sorted keys, no spaces): what the key hashes."""
    signature = experiment_signature(config, inputs)
    return json.dumps(signature, sort_keys=True, separators=(",", ":"))


def cell_key(config: CellConfig, inputs: CellInputs, protocol: int = PROTOCOL_VERSION) -> str:
    """A short, stable hash of the experiment signature and the protocol version."""
    payload = f"d2bench-cell/{protocol}\n{canonical_signature(config, inputs)}".encode()
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
    #: The digests of the data and weights that entered the key.
    inputs: CellInputs | None = None

    @property
    def label(self) -> str:
        return f"{self.row} (seed {self.seed})"

    def cell_dir(self, runs_dir: str | Path) -> Path:
        """Cell folders are named by key alone, so two studies share a finished cell."""
        return Path(runs_dir) / "cells" / self.key

    @property
    def run_name(self) -> str:
        """How the cell's runs are named, so that a list of runs reads like the table:
        ``d2conv3d_iv · 1+elu · seed 0`` (the activation only where the variant has one)."""
        parts = [self.row]
        if takes_activation(self.config.model.variant):
            parts.append(self.config.model.activation or "1+elu")
        return " · ".join([*parts, f"seed {self.seed}"])

    def flat_config(self) -> dict[str, Any]:
        """Every config key as ``section.key`` (the defaults included), plus the input digests."""
        flat = dict(_flatten(self.config.model_dump(mode="json")))
        if self.inputs is not None:  # what the key holds in place of the paths
            flat["inputs.data"] = self.inputs.data
            flat["inputs.weights"] = self.inputs.weights
        return flat

    def params(self, varying: Collection[str] | None = None) -> dict[str, Any]:
        """The MLflow params of the cell's runs: ``row``, ``variant``, ``activation`` and
        ``seed`` first, then the ``section.key`` settings that tell the study's cells apart.

        ``varying`` names the keys whose values differ across the study's cells
        (:func:`varying_keys`): each is logged with its value in every cell, a default value
        included, so that comparing runs or drawing parallel coordinates over an axis never
        meets a cell without it. Without ``varying`` (a cell on its own), the keys the cell sets
        away from the defaults. The full config is the run's ``config.yaml``.
        """
        model = self.config.model
        params: dict[str, Any] = {
            "row": self.row,
            "variant": model.variant,
            "activation": model.activation or "1+elu",
            "seed": self.seed,
        }
        shown = {"model.variant", "model.activation", "train.seed"}
        if varying is None:
            explicit = self.config.model_dump(mode="json", exclude_defaults=True)
            chosen = dict(_flatten(explicit))
        else:
            flat = self.flat_config()
            chosen = {key: flat.get(key) for key in sorted(varying)}
        params.update({key: value for key, value in chosen.items() if key not in shown})
        return params


def varying_keys(cells: Iterable[Cell]) -> set[str]:
    """The ``section.key`` settings (and input digests) whose values differ across ``cells``."""
    values: dict[str, set[str]] = {}
    count = 0
    for cell in cells:
        count += 1
        for key, value in cell.flat_config().items():
            values.setdefault(key, set()).add(json.dumps(value, sort_keys=True))
    return {key for key, found in values.items() if len(found) > 1} if count > 1 else set()


def _flatten(tree: dict[str, Any], prefix: str = ""):
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flatten(value, f"{name}.")
        else:
            yield name, value


def expand_cells(study: Study) -> list[Cell]:
    """Rows × seeds, in row order then seed order (the order cells are scheduled in).

    Digests the data and weights every row reads (:class:`StudyError` naming the row's key when
    one of them cannot be found: without it, there is no key).
    """
    identifier = InputIdentifier(study.spec.synth_spec())
    cells: list[Cell] = []
    for row in study.row_specs:
        try:
            inputs = identifier.identify(row.config)
        except UnidentifiedInput as error:
            source = study.path or study.name
            raise StudyError(f"{source}: rows[{row.name}].{error.key}: {error}") from None
        for seed in study.seeds:
            train = row.config.train.model_copy(update={"seed": seed})
            config = row.config.model_copy(update={"train": train})
            cells.append(
                Cell(
                    study.name,
                    row.name,
                    seed,
                    config,
                    cell_key(config, inputs),
                    ",".join(row.tables) or None,
                    inputs,
                )
            )
    return cells
