"""Per-object Mean, Recall and Decay of a per-frame series, and the dataset summary."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Decay compares the first and the last of this many overlapping bins.
DECAY_BINS = 4

#: The seven dataset-level values, in the official table's order.
GLOBAL_KEYS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")


def decay_bin_ids(length: int) -> np.ndarray:
    """Bin edges ``round(linspace(1, T, 5) + 1e-10) − 1`` (half rounds up), as int64.

    The official code casts these to uint8 and so breaks for T ≥ 256; this does not.
    """
    if length < 1:
        raise ValueError(f"a series needs at least one frame, got {length}")
    edges = np.round(np.linspace(1, length, DECAY_BINS + 1) + 1e-10) - 1
    return edges.astype(np.int64)


def series_statistics(values: np.ndarray) -> tuple[float, float, float]:
    """Mean, recall (share of frames > 0.5) and decay (mean of bin 0 − mean of bin 3)."""
    values = np.asarray(values, dtype=np.float64)
    mean = np.mean(values)
    recall = np.mean(values > 0.5)
    ids = decay_bin_ids(values.size)
    bins = [values[ids[i] : ids[i + 1] + 1] for i in range(DECAY_BINS)]
    decay = np.mean(bins[0]) - np.mean(bins[-1])
    return float(mean), float(recall), float(decay)


def object_summary(j_values: np.ndarray, f_values: np.ndarray) -> dict[str, float]:
    """J and F Mean, Recall and Decay of one object, keyed like the official table."""
    jm, jr, jd = series_statistics(j_values)
    fm, fr, fd = series_statistics(f_values)
    return {
        "J-Mean": jm,
        "J-Recall": jr,
        "J-Decay": jd,
        "F-Mean": fm,
        "F-Recall": fr,
        "F-Decay": fd,
    }


def global_summary(objects: Sequence[dict[str, float]]) -> dict[str, float]:
    """Dataset values: each statistic averaged over the objects in the given (official) order."""
    if not objects:
        raise ValueError("no objects to summarise")

    def pooled(key: str) -> np.float64:
        return np.mean([obj[key] for obj in objects])

    summary = {key: float(pooled(key)) for key in GLOBAL_KEYS[1:]}
    j_and_f = (pooled("J-Mean") + pooled("F-Mean")) / 2.0
    return {"J&F-Mean": float(j_and_f), **summary}
