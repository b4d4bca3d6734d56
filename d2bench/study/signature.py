"""What a cell key hashes: the cell's config without where things are on this machine.

A study started on a laptop and finished on a cluster (one tracking server) must find its
finished cells under the same keys on both, while any change to what the experiment is must
give a new key. So the key hashes the resolved config with the *machine-local* keys listed in
:data:`MACHINE_LOCAL_KEYS` taken out, as Dora's signature leaves out such keys; where a path
stood for content (the data, the weights), a digest of that content stands in its place. This
table is the one list of what is left out: everything else in
:class:`~d2bench.core.config.CellConfig` enters the key as it is.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core.config import CellConfig, config_to_dict


@dataclass(frozen=True)
class CellInputs:
    """The content a cell reads, by digest (see :mod:`d2bench.study.inputs`)."""

    #: ``davis-<sha256>`` of the split it reads, or ``synthetic-<sha256>`` of the generator spec.
    data: str
    #: ``none``, or ``sha256-<hex>`` of the weights file.
    weights: str


@dataclass(frozen=True)
class MachineLocalKey:
    """A config key that the cell key leaves out, why, and what stands in for it (if anything)."""

    path: str
    why: str
    #: (the config's value, the cell's inputs) -> what the key holds instead; None: nothing.
    stand_in: Callable[[Any, CellInputs], Any] | None = None


def device_kind(device: str) -> str:
    """``cuda:1`` -> ``cuda``: the kind of device (it changes kernels), not this machine's slot."""
    return re.sub(r":\d+$", "", device)


MACHINE_LOCAL_KEYS: tuple[MachineLocalKey, ...] = (
    MachineLocalKey(
        "data.root",
        "where the DAVIS folder is on this machine. The key holds the digest of the split the "
        "cell reads instead (names and sizes of its files), so moving the data keeps the key "
        "and changing it does not",
        lambda _root, inputs: inputs.data,
    ),
    MachineLocalKey(
        "data.num_workers",
        "how many loader processes this machine spares: it changes how fast the batches come, "
        "not which (the clips are drawn from the seed when the data set is built, and their "
        "order is seeded)",
    ),
    MachineLocalKey(
        "model.weights",
        "where the weights file is on this machine. The key holds the sha256 of its content "
        "instead ('none' stays 'none'), so renaming or moving the file keeps the key",
        lambda _path, inputs: inputs.weights,
    ),
    MachineLocalKey(
        "device",
        "the index in 'cuda:1' picks a card of this machine. The kind stays ('auto', 'cpu', "
        "'cuda'): it decides the kernels and the precision a cell runs with",
        lambda device, _inputs: device_kind(device),
    ),
)


def experiment_signature(config: CellConfig, inputs: CellInputs) -> dict[str, Any]:
    """The config as a plain mapping, each machine-local key replaced by its stand-in or
    removed: what defines the experiment, the same on every machine."""
    tree = config_to_dict(config)
    for local in MACHINE_LOCAL_KEYS:
        *parents, leaf = local.path.split(".")
        node = tree
        for part in parents:
            node = node[part]
        value = node.pop(leaf)
        if local.stand_in is not None:
            node[leaf] = local.stand_in(value, inputs)
    return tree
