"""Paired comparison of table rows against the reference row over the evaluation sequences.

Table rows are 0.1–2 J&F apart and have 1–3 seeds each, so a test over seeds alone says little.
Both rows score the same sequences, though: the difference per sequence is paired, and the
sequences are the larger sample. For each compared row:

* **Pairing.** Each cell (seed) of the row and of the reference holds J&F per sequence
  (:mod:`d2bench.core.per_sequence`). Only sequences that every cell of both rows scored are used
  (the intersection; the comparison says which were left out). A cell's J&F is the
  object-weighted mean over those sequences (the dataset J&F when none is left out); a row's
  is the mean over its seeds; Δ = row − reference, in points.
* **Bootstrap.** Each of ``resamples`` draws resamples the sequences with replacement, the
  same draw for both rows (each sequence with all its objects and all its seeds), and,
  independently, the seeds with replacement: one draw for both rows when they ran the same
  seeds (paired by seed), else one per row. With one seed a side only sequences vary. Both
  levels resampled errs on the wide side. The generator is seeded from ``seed`` and the runs
  compared, so a table is the same every time it is made, whatever other rows it holds.
* **p-value.** The smallest α′ at which the row's percentile interval excludes 0 (computed
  exactly from the sorted draws), so "p < a" and "the 1 − a interval excludes 0" are the same
  statement.
* **Correction.** Holm's step-down over the m rows of the table that get an interval: the row
  with the i-th smallest p is tested at a = α/(m − i + 1) until one is not rejected; that row and
  all after it keep its level. Each row's interval is shown at the level of its step, so a row
  is marked better (worse) exactly when its shown interval lies above (below) 0, and the marks
  of a table keep the family-wise error at α.
* **Too few sequences.** With n sequences a percentile bootstrap has few distinct resamples and
  calls any difference of one sign on every sequence certain; below ``min_sequences`` a row
  gets its Δ but no interval, and does not count in m.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..core.contract import JF_MEAN

#: Bootstrap draws per comparison.
DEFAULT_RESAMPLES = 10_000
#: The default seed of the bootstrap's generator.
DEFAULT_SEED = 0
#: Fewest paired sequences for an interval (DAVIS'16 val has 20, DAVIS'17 val 30).
MIN_SEQUENCES = 10
#: Columns of the per-sequence scores the comparison reads (one checkpoint's).
SCORE_COLUMNS: tuple[str, ...] = ("run_id", "seed", "sequence", "objects", JF_MEAN)


@dataclass(frozen=True)
class PairedDelta:
    """One row against the reference before correction: the estimate and its draws."""

    #: Row − reference, in display units (``scale`` times the fractions).
    delta: float
    draws: np.ndarray
    sequences: int
    #: Sequences scored by some cell of the two rows but not by all (left out of the pairing).
    dropped: tuple[str, ...]
    row_seeds: int
    reference_seeds: int
    paired_seeds: bool


@dataclass(frozen=True)
class Comparison:
    """One row against the reference, as shown: Δ, the corrected interval, the mark."""

    #: Row − reference (None: the scores could not be paired; ``reason`` says why).
    delta: float | None
    sequences: int
    dropped: tuple[str, ...]
    row_seeds: int
    reference_seeds: int
    paired_seeds: bool
    #: The interval and its confidence level (None: too few sequences for one).
    low: float | None = None
    high: float | None = None
    level: float | None = None
    #: The bootstrap p-value and its Holm-adjusted value over the table's m rows.
    p_value: float | None = None
    p_holm: float | None = None
    #: +1 better than the reference, −1 worse, 0 neither (or no interval).
    mark: int = 0
    #: Why there is no interval ("" when there is one).
    reason: str = ""

    @property
    def has_interval(self) -> bool:
        return self.low is not None and self.high is not None


def _check_scores(scores: pd.DataFrame, what: str) -> pd.DataFrame:
    missing = [column for column in SCORE_COLUMNS if column not in scores.columns]
    if missing:
        raise ValueError(f"{what}: per-sequence scores lack columns {missing}")
    frame = scores.loc[:, list(SCORE_COLUMNS)].copy()
    frame["run_id"] = frame["run_id"].astype(str)
    frame["sequence"] = frame["sequence"].astype(str)
    frame[JF_MEAN] = pd.to_numeric(frame[JF_MEAN], errors="coerce")
    frame["objects"] = pd.to_numeric(frame["objects"], errors="coerce")
    bad = frame[~np.isfinite(frame[JF_MEAN]) | ~(frame["objects"] > 0)]
    if not bad.empty:
        first = bad.iloc[0]
        raise ValueError(
            f"{what}: run {first['run_id']} sequence {first['sequence']!r} has no finite "
            f"{JF_MEAN} or no positive object count"
        )
    duplicated = frame.duplicated(["run_id", "sequence"])
    if duplicated.any():
        first = frame[duplicated].iloc[0]
        raise ValueError(
            f"{what}: run {first['run_id']} scores sequence {first['sequence']!r} twice"
        )
    if frame.empty:
        raise ValueError(f"{what}: no per-sequence scores")
    return frame


def _cells(frame: pd.DataFrame) -> list[tuple[str, int]]:
    """(run_id, seed) per cell, ordered by seed then run."""
    seeds = frame.groupby("run_id", sort=False)["seed"].first()
    return sorted(((run, int(seed)) for run, seed in seeds.items()), key=lambda c: (c[1], c[0]))


def _matrices(
    frame: pd.DataFrame, cells: list[tuple[str, int]], sequences: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(Σ objects·J&F, objects) as sequences × cells."""
    frame = frame.assign(weighted=frame[JF_MEAN] * frame["objects"])
    runs = [run for run, _ in cells]
    sums = frame.pivot(index="sequence", columns="run_id", values="weighted")
    counts = frame.pivot(index="sequence", columns="run_id", values="objects")
    return (
        sums.loc[sequences, runs].to_numpy(dtype=float),
        counts.loc[sequences, runs].to_numpy(dtype=float),
    )


def _generator(
    seed: int, row_runs: Sequence[str], reference_runs: Sequence[str]
) -> np.random.Generator:
    """A generator fixed by ``seed`` and the runs compared (not by the rest of the table)."""
    text = "|".join(sorted(row_runs)) + "||" + "|".join(sorted(reference_runs))
    return np.random.default_rng([seed, zlib.crc32(text.encode())])


def _seed_weights(rng: np.random.Generator, n: int, resamples: int) -> np.ndarray:
    if n == 1:
        return np.ones((resamples, 1))
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(float)


def paired_delta(
    row: pd.DataFrame,
    reference: pd.DataFrame,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    scale: float = 100.0,
) -> PairedDelta:
    """Δ of ``row`` against ``reference`` and its bootstrap draws (see the module docstring).

    Both frames hold :data:`SCORE_COLUMNS`, one record per (run, sequence), J&F as a fraction.
    Raises ValueError on bad scores or when the two rows share no sequence.
    """
    if resamples < 100:
        raise ValueError(f"resamples must be at least 100, got {resamples}")
    row_frame = _check_scores(row, "row")
    reference_frame = _check_scores(reference, "reference")
    row_cells, reference_cells = _cells(row_frame), _cells(reference_frame)
    every = [row_frame, reference_frame]
    per_cell = [
        set(frame.loc[frame["run_id"] == run, "sequence"])
        for frame, cells in zip(every, (row_cells, reference_cells), strict=True)
        for run, _ in cells
    ]
    shared = set.intersection(*per_cell)
    scored = set.union(*per_cell)
    if not shared:
        raise ValueError(
            "row and reference share no evaluation sequence: "
            f"row scores {sorted(set(row_frame['sequence']))[:5]}…, "
            f"reference {sorted(set(reference_frame['sequence']))[:5]}…"
        )
    sequences = sorted(shared)
    row_sums, row_counts = _matrices(row_frame, row_cells, sequences)
    ref_sums, ref_counts = _matrices(reference_frame, reference_cells, sequences)

    row_seeds = [s for _, s in row_cells]
    reference_seeds = [s for _, s in reference_cells]
    paired = row_seeds == reference_seeds and len(set(row_seeds)) == len(row_seeds)

    def estimate(weights: np.ndarray, row_w: np.ndarray, ref_w: np.ndarray) -> np.ndarray:
        row_jf = (weights @ row_sums) / (weights @ row_counts)
        ref_jf = (weights @ ref_sums) / (weights @ ref_counts)
        row_mean = (row_jf * row_w).sum(axis=-1) / row_w.shape[-1]
        ref_mean = (ref_jf * ref_w).sum(axis=-1) / ref_w.shape[-1]
        return scale * (row_mean - ref_mean)

    ones = np.ones((1, len(sequences)))
    delta = float(
        estimate(ones, np.ones((1, len(row_cells))), np.ones((1, len(reference_cells))))[0]
    )
    rng = _generator(seed, [r for r, _ in row_cells], [r for r, _ in reference_cells])
    n = len(sequences)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(float)
    row_w = _seed_weights(rng, len(row_cells), resamples)
    ref_w = row_w if paired else _seed_weights(rng, len(reference_cells), resamples)
    draws = estimate(weights, row_w, ref_w)
    return PairedDelta(
        delta=delta,
        draws=draws,
        sequences=n,
        dropped=tuple(sorted(scored - shared)),
        row_seeds=len(row_cells),
        reference_seeds=len(reference_cells),
        paired_seeds=paired,
    )


def _last_at_or_below_zero(ordered: np.ndarray) -> float:
    """sup{x : q(x) ≤ 0}, q the linear interpolation of ``ordered`` at indices 0 … n − 1."""
    if ordered[0] > 0:
        return 0.0
    if ordered[-1] <= 0:
        return float(len(ordered) - 1)
    j = int(np.searchsorted(ordered, 0.0, side="right"))  # first index with a value > 0
    below, above = ordered[j - 1], ordered[j]
    return (j - 1) + (0.0 - below) / (above - below)


def interval_p_value(draws: np.ndarray) -> float:
    """The smallest α′ at which the percentile interval ``quantile(draws, [α′/2, 1 − α′/2])``
    (numpy's linear quantiles) excludes 0: the interval at level 1 − a excludes 0 iff p < a."""
    ordered = np.sort(np.asarray(draws, dtype=float))
    if ordered.size < 2:
        raise ValueError("a bootstrap p-value needs at least two draws")
    span = ordered.size - 1
    lower = _last_at_or_below_zero(ordered)  # q(a/2) > 0 iff a/2 · span > lower
    upper = _last_at_or_below_zero(-ordered[::-1])  # the same for the negated draws
    return float(min(1.0, 2.0 * min(lower, upper) / span))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values: max over the smaller ones of min(1, (m − i + 1) · p_(i))."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p_values[index])))
        adjusted[index] = running
    return adjusted


def holm_levels(p_values: Sequence[float], alpha: float) -> tuple[list[float], list[bool]]:
    """Per hypothesis, the error level of its Holm step and whether it is rejected.

    Rejected ones keep the level they were rejected at, α/(m − i + 1); the first one not
    rejected and all after it get that step's level.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    levels = [0.0] * m
    rejected = [False] * m
    stopped: float | None = None
    for rank, index in enumerate(order):
        level = alpha / (m - rank)
        if stopped is None and p_values[index] < level:
            rejected[index] = True
            levels[index] = level
            continue
        if stopped is None:
            stopped = level
        levels[index] = stopped
    return levels, rejected


def compare_rows(
    rows: Sequence[pd.DataFrame | None],
    reference: pd.DataFrame,
    *,
    alpha: float = 0.05,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    min_sequences: int = MIN_SEQUENCES,
    scale: float = 100.0,
    higher_is_better: bool = True,
) -> list[Comparison | None]:
    """Each row (None: nothing to compare) against ``reference``, Holm-corrected over the rows
    that get an interval. Returns one entry per row, None where the row was None; a row whose
    scores cannot be paired gets a Comparison without Δ whose ``reason`` says why. Bad
    ``reference`` scores raise ValueError."""
    _check_scores(reference, "reference")
    deltas: list[PairedDelta | None] = []
    errors: dict[int, str] = {}
    for index, frame in enumerate(rows):
        if frame is None:
            deltas.append(None)
            continue
        try:
            deltas.append(
                paired_delta(frame, reference, resamples=resamples, seed=seed, scale=scale)
            )
        except ValueError as error:  # one row's bad scores must not hide the others
            deltas.append(None)
            errors[index] = str(error)
    family = [i for i, d in enumerate(deltas) if d is not None and d.sequences >= min_sequences]
    p_values = [interval_p_value(deltas[i].draws) for i in family]  # type: ignore[union-attr]
    adjusted = holm(p_values)
    levels, rejected = holm_levels(p_values, alpha)
    out: list[Comparison | None] = []
    for index, found in enumerate(deltas):
        if index in errors:
            out.append(Comparison(None, 0, (), 0, 0, False, reason=errors[index]))
            continue
        if found is None:
            out.append(None)
            continue
        common = dict(
            delta=found.delta,
            sequences=found.sequences,
            dropped=found.dropped,
            row_seeds=found.row_seeds,
            reference_seeds=found.reference_seeds,
            paired_seeds=found.paired_seeds,
        )
        if index not in family:
            reason = f"{found.sequences} sequence(s); an interval needs ≥ {min_sequences}"
            out.append(Comparison(**common, reason=reason))
            continue
        k = family.index(index)
        level = levels[k]
        low, high = (float(v) for v in np.quantile(found.draws, [level / 2, 1 - level / 2]))
        sign = 0
        if rejected[k]:  # p < level: the interval excludes 0 (the check guards rounding)
            sign = 1 if low > 0 else -1 if high < 0 else 0
        mark = sign if higher_is_better else -sign
        out.append(
            Comparison(
                **common,
                low=low,
                high=high,
                level=1 - level,
                p_value=p_values[k],
                p_holm=adjusted[k],
                mark=mark,
            )
        )
    return out
