"""Reading the VMZ Caffe2 ``.pkl`` of ir-CSN and renaming its blobs to our backbone's keys.

The VMZ model zoo ships weights as a pickled ``{"blobs": {name: numpy array}}``. VMZ's
``VideoModelBuilder`` names them per residual block ("component") ``i``, counted over the whole
network, and per conv index ``j`` within the block; for an ir-CSN bottleneck the depthwise conv
is added through a helper that advances ``j`` a second time, so the three convs are ``j`` = 1,
3 and 4 (there is no ``_conv_2``):

==================================  =========================================
Caffe2 blob                          our key
==================================  =========================================
``conv1_w``                          ``conv1.weight``
``conv1_spatbn_relu_{s,b,rm,riv}``   ``bn1.{weight,bias,running_mean,running_var}``
``comp_<i>_conv_1_w``                ``layer<L>.<k>.conv1.weight`` (1×1×1)
``comp_<i>_conv_3_w``                ``layer<L>.<k>.conv2.weight`` (depthwise 3×3×3)
``comp_<i>_conv_4_w``                ``layer<L>.<k>.conv3.weight`` (1×1×1)
``comp_<i>_spatbn_<j>_*``            ``layer<L>.<k>.bn1/bn2/bn3.*`` for j = 1/3/4
``shortcut_projection_<i>_w``        ``layer<L>.<k>.downsample.0.weight``
``shortcut_projection_<i>_spatbn_*`` ``layer<L>.<k>.downsample.1.*``
``last_out_L400_{w,b}``              (Kinetics classifier, not used)
``*_momentum``                       (optimiser state, not used)
==================================  =========================================

Stages begin where a block has a shortcut projection (the first block of each of the four
stages), which also gives the depth: blocks 0, 3, 11, 47 for ir-CSN-152. BN blob suffixes:
``s`` scale, ``b`` shift, ``rm`` running mean, ``riv`` running variance (despite its name,
Caffe2's SpatialBN stores the variance there, not its inverse). Conv weights already have
PyTorch's layout (out, in / groups, t, y, x); no colour-channel flip is applied.
"""

from __future__ import annotations

import importlib
import importlib.util
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .errors import WeightsError, few

#: BN blob suffix → state-dict buffer name.
BN_SUFFIXES = {"s": "weight", "b": "bias", "rm": "running_mean", "riv": "running_var"}

#: Caffe2 conv index j within an ir-CSN bottleneck → our (conv, bn) names.
CSN_CONV_INDEX = {1: ("conv1", "bn1"), 3: ("conv2", "bn2"), 4: ("conv3", "bn3")}

#: Blob name prefixes of backbone parameters; others (classifier, optimiser state) are skipped.
BACKBONE_PREFIXES = ("conv1_", "comp_", "shortcut_projection_")

#: Optimiser state that training checkpoints keep beside a parameter blob.
SKIPPED_SUFFIXES = ("_momentum",)

#: What a numpy-array pickle may reference; nothing else is unpickled.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),
}

_COMP = re.compile(r"^comp_(\d+)_")
_SHORTCUT = re.compile(r"^shortcut_projection_(\d+)_w$")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts of numpy arrays only, so a weights file cannot run code on load."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise WeightsError(
                f"the pickle references {module}.{name}; a VMZ weights file holds only numpy "
                f"arrays, refusing to load it"
            )
        if module.startswith("numpy.core."):  # numpy >= 2 moved numpy.core to numpy._core
            newer = "numpy._core." + module.removeprefix("numpy.core.")
            with_new = importlib.util.find_spec(newer) is not None
            module = newer if with_new else module
        return getattr(importlib.import_module(module), name)


def read_vmz_blobs(path: str | Path) -> dict[str, np.ndarray]:
    """The blob mapping of a VMZ ``.pkl`` (``{"blobs": {...}}`` or the mapping itself)."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            data = _ArrayUnpickler(file, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        if isinstance(error, WeightsError):
            raise
        raise WeightsError(f"{path}: not a readable Caffe2 pickle ({error})") from None
    if isinstance(data, Mapping) and isinstance(data.get("blobs"), Mapping):
        data = data["blobs"]
    if not isinstance(data, Mapping):
        raise WeightsError(f"{path}: expected a pickled dict with a 'blobs' mapping")
    blobs = {str(name).rpartition("/")[2]: value for name, value in data.items()}
    if not any(isinstance(v, np.ndarray) for v in blobs.values()):
        raise WeightsError(f"{path}: the pickle holds no numpy arrays (not a Caffe2 model)")
    return blobs


def _stage_starts(blobs: Mapping[str, np.ndarray]) -> list[int]:
    starts = sorted(int(m.group(1)) for name in blobs if (m := _SHORTCUT.match(name)))
    if len(starts) != 4 or starts[0] != 0:
        raise WeightsError(
            f"expected an ir-CSN with 4 stages (shortcut projections at the first block of "
            f"each, starting with block 0), found shortcut projections at blocks {starts}"
        )
    return starts


def _block_names(index: int, starts: list[int]) -> str:
    stage = max(s for s, start in enumerate(starts) if start <= index)
    return f"layer{stage + 1}.{index - starts[stage]}"


def _bn(state: dict[str, Tensor], take: Any, blob_prefix: str, key_prefix: str) -> None:
    for suffix, buffer in BN_SUFFIXES.items():
        state[f"{key_prefix}.{buffer}"] = take(f"{blob_prefix}_{suffix}")


def convert_vmz_blobs(blobs: Mapping[str, np.ndarray]) -> dict[str, Tensor]:
    """Rename an ir-CSN's Caffe2 blobs to our backbone's state-dict keys (float32 tensors).

    Raises :class:`WeightsError` naming missing blobs, or backbone-looking blobs that have no
    place in an ir-CSN (e.g. the ``_middle`` convs of ip-CSN or R(2+1)D).
    """
    used: set[str] = set()
    missing: list[str] = []

    def take(name: str) -> Tensor:
        if name not in blobs:
            missing.append(name)
            return torch.empty(0)
        used.add(name)
        return torch.from_numpy(np.array(blobs[name], dtype=np.float32))

    starts = _stage_starts(blobs)
    blocks = sorted({int(m.group(1)) for name in blobs if (m := _COMP.match(name))})
    if blocks != list(range(len(blocks))):
        raise WeightsError(f"residual blocks are not numbered 0..n-1: found {blocks[:10]}...")
    state: dict[str, Tensor] = {"conv1.weight": take("conv1_w")}
    _bn(state, take, "conv1_spatbn_relu", "bn1")
    for index in blocks:
        prefix = _block_names(index, starts)
        for j, (conv, bn) in CSN_CONV_INDEX.items():
            state[f"{prefix}.{conv}.weight"] = take(f"comp_{index}_conv_{j}_w")
            _bn(state, take, f"comp_{index}_spatbn_{j}", f"{prefix}.{bn}")
        if index in starts:
            state[f"{prefix}.downsample.0.weight"] = take(f"shortcut_projection_{index}_w")
            _bn(state, take, f"shortcut_projection_{index}_spatbn", f"{prefix}.downsample.1")
    if missing:
        raise WeightsError(f"the ir-CSN blobs are incomplete; missing {few(missing)}")
    strange = sorted(
        n
        for n in blobs
        if n.startswith(BACKBONE_PREFIXES) and not n.endswith(SKIPPED_SUFFIXES) and n not in used
    )
    if strange:
        raise WeightsError(
            f"blobs that have no place in an ir-CSN (another architecture, e.g. ip-CSN or "
            f"R(2+1)D?): {few(strange)}"
        )
    return state
