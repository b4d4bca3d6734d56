"""The cell-result contract: what a cell writes into its folder and which metric keys it reports.

The cell runner writes these, the tracker logs them, the report reads them: all three take the
names from here, so a file or a key is renamed in one place. The ``maps.npz`` schema has its one
writer and reader here too (numpy only), so the runner that stores the maps and the report that
draws them cannot disagree on which arrays are layers and which are not.

Torch-free, and numpy is imported only by the maps file's writer and reader.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

# -- the files of a cell folder ---------------------------------------------------------------

#: Written last: flat metrics, speed record, environment, config, cell key, artifact paths.
RESULT_FILE = "result.json"
#: The resolved config the cell ran (a torchrun rank reads it back).
CONFIG_FILE = "config.yaml"
#: The stage-by-stage log.
LOG_FILE = "cell.log"
#: The training curve, one JSON object per optimiser step / epoch.
METRICS_FILE = "metrics.jsonl"
#: The trainer's checkpoints (regular and best-validation).
CHECKPOINT_DIR = "checkpoints"
#: The masks of the latest per-epoch validation pass.
VALIDATION_DIR = "validation"
#: Predictions of the final weights, in the DAVIS results layout.
MASKS_DIR = "masks"
#: Their J&F per object and global.
EVAL_FILE = "eval.json"
#: Predictions of the best-validation weights (when they are not the final ones), and their J&F.
BEST_VAL_MASKS_DIR = "masks-best_val"
BEST_VAL_EVAL_FILE = "eval-best_val.json"
#: The out-of-bounds sampling statistic per layer (when measured).
OOB_FILE = "oob.json"
#: The dilation/modulation maps of one sequence (when asked for): see :func:`write_maps_file`.
MAPS_FILE = "maps.npz"

#: Files of a cell folder copied to its tracked run (when present): the report reads them there.
CELL_ARTIFACTS: tuple[str, ...] = (
    CONFIG_FILE,
    LOG_FILE,
    RESULT_FILE,
    EVAL_FILE,
    BEST_VAL_EVAL_FILE,
    OOB_FILE,
    METRICS_FILE,
    MAPS_FILE,
)
#: The tracked run's per-sequence J&F table (:mod:`d2bench.core.per_sequence`).
PER_SEQUENCE_TABLE = "per_sequence.json"

#: Keys of ``result["artifacts"]``: which file of the folder holds what.
ARTIFACT_MASKS, ARTIFACT_MAPS, ARTIFACT_OOB = "masks", "maps", "oob"
ARTIFACT_LOG, ARTIFACT_CURVE, ARTIFACT_EVAL = "log", "curve", "eval"
ARTIFACT_BEST_VAL_MASKS, ARTIFACT_BEST_VAL_EVAL = "best_val_masks", "best_val_eval"

# -- the metric keys of ``result["metrics"]`` (and of the tracked run) ------------------------

JF_MEAN, J_MEAN, J_RECALL, J_DECAY = "jf_mean", "j_mean", "j_recall", "j_decay"
F_MEAN, F_RECALL, F_DECAY = "f_mean", "f_recall", "f_decay"
#: The DAVIS evaluation's global scores (``eval.json``) -> the cell's J&F keys.
JF_KEYS_BY_DAVIS_NAME: dict[str, str] = {
    "J&F-Mean": JF_MEAN,
    "J-Mean": J_MEAN,
    "J-Recall": J_RECALL,
    "J-Decay": J_DECAY,
    "F-Mean": F_MEAN,
    "F-Recall": F_RECALL,
    "F-Decay": F_DECAY,
}
JF_KEYS: tuple[str, ...] = tuple(JF_KEYS_BY_DAVIS_NAME.values())

FPS = "fps"
#: GPU memory (allocated, reserved) or, on CPU, the process's peak resident set.
MEM_ALLOC_GB, MEM_RESERVED_GB, PEAK_RSS_GB = "mem_alloc_gb", "mem_reserved_gb", "peak_rss_gb"
MEMORY_KEYS: tuple[str, ...] = (MEM_ALLOC_GB, MEM_RESERVED_GB, PEAK_RSS_GB)
#: The speed record's memory keys (``result["speed"]["memory"]``) -> the cell's memory keys.
MEMORY_KEYS_BY_SPEED_KEY: dict[str, str] = {
    "max_allocated_gb": MEM_ALLOC_GB,
    "max_reserved_gb": MEM_RESERVED_GB,
    "peak_rss_gb": PEAK_RSS_GB,
}

#: ``oob_*``: pooled over all sampling locations; ``oob_layer_mean_*``: the mean over layers.
OOB_POOLED, OOB_LAYER_MEAN = "oob_", "oob_layer_mean_"
OOB_PREFIXES: tuple[str, ...] = (OOB_POOLED, OOB_LAYER_MEAN)
#: (key word, the word ``oob.json`` uses in ``<word>_outside_share``).
OOB_KINDS: tuple[tuple[str, str], ...] = (("full", "fully"), ("partial", "partly"))
OOB_AXES: tuple[str, ...] = ("t", "y", "x")
#: Every OOB key: ``{prefix}{full,partial}[_{t,y,x}]``.
OOB_KEYS: tuple[str, ...] = tuple(
    f"{prefix}{kind}{suffix}"
    for prefix in OOB_PREFIXES
    for kind, _ in OOB_KINDS
    for suffix in ("", *(f"_{axis}" for axis in OOB_AXES))
)


def _oob_keys_by_axis(prefix: str) -> tuple[str, ...]:
    """A prefix's OOB keys, both kinds over the whole field first, then per axis."""
    whole = tuple(f"{prefix}{kind}" for kind, _ in OOB_KINDS)
    return whole + tuple(f"{prefix}{kind}_{axis}" for kind, _ in OOB_KINDS for axis in OOB_AXES)


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _reading_shares(reading: Any, prefix: str) -> dict[str, float]:
    """``{prefix}{full,partial}[_{t,y,x}]`` from one reading of an ``oob.json``."""
    if not isinstance(reading, Mapping):
        return {}
    out: dict[str, float] = {}
    per_axis = reading.get("per_axis") if isinstance(reading.get("per_axis"), Mapping) else {}
    for kind, word in OOB_KINDS:
        value = _finite(reading.get(f"{word}_outside_share"))
        if value is not None:
            out[f"{prefix}{kind}"] = value
        for axis in OOB_AXES:
            shares = per_axis.get(axis)
            if not isinstance(shares, Mapping):
                continue
            value = _finite(shares.get(f"{word}_outside_share"))
            if value is not None:
                out[f"{prefix}{kind}_{axis}"] = value
    return out


def oob_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """The flat OOB keys of an ``oob.json`` (the OOB recorder's summary): its ``total`` (pooled)
    and ``total.layer_mean`` (the mean over layers; absent from files written before it
    existed). Shares that are absent (nothing sampled) leave their key out."""
    total = summary.get("total")
    if not isinstance(total, Mapping):
        return {}
    return {
        **_reading_shares(total, OOB_POOLED),
        **_reading_shares(total.get("layer_mean"), OOB_LAYER_MEAN),
    }


TRAIN_LOSS, TRAIN_SECONDS, EPOCHS = "train_loss", "train_seconds", "epochs"

#: The prefix of the best-validation checkpoint's metrics (``best_val/jf_mean``).
BEST_VAL_PREFIX = "best_val/"
BEST_VAL_EPOCH = f"{BEST_VAL_PREFIX}epoch"
BEST_VAL_JF_MEAN = f"{BEST_VAL_PREFIX}{JF_MEAN}"

#: The validation curve's metric keys, logged once per validated epoch (step = epochs done).
VAL_JF, VAL_J, VAL_F = "val/jf_mean", "val/j_mean", "val/f_mean"

#: The final metrics the report reads, in the order of the tracker's run columns.
FINAL_METRICS: tuple[str, ...] = (
    *JF_KEYS,
    FPS,
    *MEMORY_KEYS,
    *(key for prefix in OOB_PREFIXES for key in _oob_keys_by_axis(prefix)),
    TRAIN_LOSS,
    TRAIN_SECONDS,
    # the best-validation checkpoint's J&F (with per-epoch validation)
    *(f"{BEST_VAL_PREFIX}{key}" for key in JF_KEYS),
    BEST_VAL_EPOCH,
)

# -- maps.npz ---------------------------------------------------------------------------------

#: The JSON metadata (sequence, clip plan, variant, frame size, padding) under this key.
MAPS_METADATA_KEY = "__metadata__"
#: The video's frames (F×H×W×3), stored beside the maps for drawing; not a layer.
MAPS_FRAMES_KEY = "frames"
#: A layer's arrays: ``<layer>/dilation`` (clips×3×T'×H'×W', axes t, y, x) and
#: ``<layer>/modulation_mean`` (clips×T'×H'×W'), float32.
MAPS_DILATION, MAPS_MODULATION_MEAN = "dilation", "modulation_mean"


@dataclass(frozen=True)
class RecordedMaps:
    """What a maps file holds: per layer its arrays, the frames if stored, the metadata."""

    layers: dict[str, dict[str, np.ndarray]]
    frames: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def write_maps_file(
    path: str | Path,
    layers: Mapping[str, Mapping[str, Any]],
    metadata: Mapping[str, Any] | None = None,
    *,
    frames: Any = None,
) -> Path:
    """Write ``layers`` (arrays as float32 under ``<layer>/<name>``), ``metadata`` (JSON) and
    ``frames`` (kept as given) to a compressed ``.npz``. Returns the path written (``.npz``
    appended if missing)."""
    import numpy as np

    flat: dict[str, np.ndarray] = {}
    for layer, arrays in layers.items():
        for name, value in arrays.items():
            flat[f"{layer}/{name}"] = np.asarray(value, dtype=np.float32)
    if metadata is not None:
        flat[MAPS_METADATA_KEY] = np.asarray(json.dumps(dict(metadata)))
    if frames is not None:
        flat[MAPS_FRAMES_KEY] = np.ascontiguousarray(frames)
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **flat)
    return path


def read_maps_file(path: str | Path) -> RecordedMaps:
    """Read what :func:`write_maps_file` wrote; the frames and the metadata are never taken for
    a layer. ValueError naming the file when it is not a readable ``.npz``."""
    import numpy as np

    layers: dict[str, dict[str, np.ndarray]] = {}
    frames = None
    metadata: dict[str, Any] = {}
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a readable .npz maps file ({error})") from None
    with data:
        for key in data.files:
            if key == MAPS_METADATA_KEY:
                metadata = json.loads(str(data[key]))
            elif key == MAPS_FRAMES_KEY:
                frames = data[key]
            else:
                layer, _, name = key.rpartition("/")
                layers.setdefault(layer, {})[name] = data[key]
    return RecordedMaps(layers, frames, metadata)
