"""The paired comparison against the reference row, from per-sequence scores of known shape."""

from __future__ import annotations

import itertools
import re
from io import StringIO

import numpy as np
import pandas as pd
import pytest
from test_report import _check_latex_structure, _md_rows

from d2bench.core.per_sequence import (
    BEST_VAL_EVAL_FILE,
    EVAL_FILE,
    cell_records,
    global_jf,
    records_from_eval,
    records_from_table,
)
from d2bench.metrics.davis.statistics import global_summary
from d2bench.report import build_table, table1_layout, to_csv, to_latex, to_markdown
from d2bench.report.sequences import per_sequence_frame
from d2bench.report.statistics import (
    compare_rows,
    holm,
    holm_levels,
    interval_p_value,
    paired_delta,
)

N_SEQ = 20
#: Per-sequence difficulty: what every row shares (J&F fractions).
BASE = np.linspace(0.55, 0.9, N_SEQ)
#: Seed-to-seed wobble per sequence, the same for every row (a seed of a row = a seed).
WOBBLE = 0.01 * np.sin(np.arange(N_SEQ))
#: Zero-mean noise per sequence (pairs ±e): a row with it has Δ = 0 exactly.
SYMMETRIC = np.repeat(np.linspace(0.004, 0.03, N_SEQ // 2), 2) * np.tile([1, -1], N_SEQ // 2)


def _scores(name: str, values_per_seed: list[np.ndarray], first_seed: int = 0) -> pd.DataFrame:
    """One record per (seed, sequence): ``values_per_seed[k]`` are seed k's J&F fractions."""
    records = [
        {"run_id": f"{name}-{first_seed + k}", "seed": first_seed + k, "sequence": f"s{q:02d}",
         "objects": 1, "jf_mean": float(value)}
        for k, values in enumerate(values_per_seed)
        for q, value in enumerate(values)
    ]  # fmt: skip
    return pd.DataFrame.from_records(records)


def _row(name: str, shift: float = 0.0, noise: np.ndarray | None = None, seeds: int = 2):
    noise = np.zeros(N_SEQ) if noise is None else noise
    return _scores(name, [BASE + shift + noise + (k - 0.5) * WOBBLE for k in range(seeds)])


def _null_noise(index: int) -> np.ndarray:
    """Zero-mean noise of the same size as SYMMETRIC, shuffled differently per index."""
    return np.random.default_rng(index).permutation(SYMMETRIC)


def test_a_clear_shift_is_marked_better_and_zero_mean_noise_is_not():
    reference = _row("base")
    better = _row("better", shift=0.02, noise=0.2 * _null_noise(1))
    worse = _row("worse", shift=-0.015, noise=0.2 * _null_noise(2))
    null = _row("null", noise=SYMMETRIC)
    found = compare_rows([better, worse, null], reference, resamples=2000)
    assert [c.mark for c in found] == [1, -1, 0]
    assert found[0].delta == pytest.approx(2.0) and found[0].low > 0
    assert found[1].delta == pytest.approx(-1.5) and found[1].high < 0
    assert found[2].delta == pytest.approx(0.0, abs=1e-12)
    assert found[2].low < 0 < found[2].high and found[2].p_value > 0.5
    assert all(c.sequences == N_SEQ and c.paired_seeds and not c.dropped for c in found)
    # Holm: the two clear rows are rejected at 0.05/3 and 0.05/2, the null row keeps 0.05
    assert sorted(round(1 - c.level, 6) for c in found) == [
        round(0.05 / 3, 6),
        0.025,
        0.05,
    ]


def test_more_rows_widen_a_rows_interval_and_can_remove_its_mark():
    reference = _row("base")
    moderate = _row("moderate", shift=0.006, noise=0.6 * _null_noise(7))
    alone = compare_rows([moderate], reference, resamples=4000)[0]
    assert alone.mark == 1 and 0.01 < alone.p_value < 0.05  # marked on its own
    widths = [alone.high - alone.low]
    marks = [alone.mark]
    for extra in range(1, 5):
        others = [_row(f"null{i}", noise=_null_noise(10 + i)) for i in range(extra)]
        found = compare_rows([moderate, *others], reference, resamples=4000)[0]
        assert found.p_value == alone.p_value  # its draws do not depend on the other rows
        assert found.delta == alone.delta
        widths.append(found.high - found.low)
        marks.append(found.mark)
    assert all(b >= a for a, b in itertools.pairwise(widths))
    assert widths[-1] > widths[0]
    assert marks[0] == 1 and marks[-1] == 0  # corrected for 5 rows, no longer marked


def test_the_bootstrap_is_reproducible_and_its_seed_matters():
    reference, row = _row("base"), _row("row", shift=0.005, noise=_null_noise(3))
    first = compare_rows([row], reference, resamples=1000, seed=5)[0]
    again = compare_rows([row], reference, resamples=1000, seed=5)[0]
    other = compare_rows([row], reference, resamples=1000, seed=6)[0]
    assert (first.low, first.high, first.p_value) == (again.low, again.high, again.p_value)
    assert (first.low, first.high) != (other.low, other.high)
    assert first.delta == other.delta


def test_seed_pairing_and_object_weighting():
    reference = _row("base", seeds=2)
    same_seeds = _row("row", shift=0.01, seeds=2)
    other_seeds = _scores("row", [BASE + 0.01, BASE + 0.02, BASE + 0.03], first_seed=5)
    assert paired_delta(same_seeds, reference, resamples=200).paired_seeds
    unpaired = paired_delta(other_seeds, reference, resamples=200)
    assert not unpaired.paired_seeds and unpaired.row_seeds == 3
    assert unpaired.delta == pytest.approx(2.0)
    # a sequence with 3 objects weighs 3 times in a cell's J&F (the dataset's J&F)
    weighted = reference.assign(objects=np.where(reference["sequence"] == "s00", 3, 1))
    shifted = weighted.assign(
        run_id="w-" + weighted["run_id"],
        jf_mean=weighted["jf_mean"] + np.where(weighted["sequence"] == "s00", 0.22, 0.0),
    )
    assert paired_delta(shifted, weighted, resamples=200).delta == pytest.approx(
        100 * 3 * 0.22 / (N_SEQ + 2)
    )


def test_missing_sequences_pair_on_the_intersection_and_bad_scores_are_named():
    reference = _row("base")
    row = _row("row", shift=0.01)
    gappy = row[~((row["run_id"] == "row-1") & row["sequence"].isin(["s03", "s17"]))]
    found = paired_delta(gappy, reference, resamples=200)
    assert found.sequences == N_SEQ - 2 and found.dropped == ("s03", "s17")
    assert found.delta == pytest.approx(1.0)
    elsewhere = row.assign(sequence="other-" + row["sequence"])
    (result,) = compare_rows([elsewhere], reference, resamples=200)
    assert result.delta is None and "share no evaluation sequence" in result.reason
    with pytest.raises(ValueError, match=r"run row-0 scores sequence 's00' twice"):
        paired_delta(pd.concat([row, row.iloc[:1]]), reference)
    with pytest.raises(ValueError, match=r"lack columns \['objects'\]"):
        paired_delta(row.drop(columns="objects"), reference)
    with pytest.raises(ValueError, match="resamples must be at least 100"):
        paired_delta(row, reference, resamples=10)


def test_too_few_sequences_give_a_delta_without_an_interval():
    few = 5
    reference = _scores("base", [BASE[:few]])
    row = _scores("row", [BASE[:few] + 0.05])
    (found,) = compare_rows([row], reference, resamples=500)
    assert found.delta == pytest.approx(5.0)
    assert not found.has_interval and found.mark == 0 and "needs ≥ 10" in found.reason


def test_the_p_value_is_where_the_percentile_interval_starts_to_exclude_zero():
    rng = np.random.default_rng(0)
    for trial in range(100):
        draws = rng.normal(rng.normal(), 1.0, size=int(rng.integers(2, 60)))
        if trial % 4 == 0:
            draws = np.round(draws)  # ties, zeros
        p_value = interval_p_value(draws)
        for level in np.linspace(0.002, 0.998, 25):
            if abs(level - p_value) < 1e-9:
                continue
            low, high = np.quantile(draws, [level / 2, 1 - level / 2])
            assert (low > 0 or high < 0) == (p_value < level), (draws, level)
    assert interval_p_value(np.zeros(10)) == 1.0
    assert interval_p_value(np.arange(1.0, 11.0)) == 0.0


def test_holm_matches_a_worked_example():
    p_values = [0.01, 0.04, 0.03, 0.005]
    assert holm(p_values) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    levels, rejected = holm_levels(p_values, 0.05)
    assert rejected == [True, False, False, True]
    assert levels == pytest.approx([0.05 / 3, 0.025, 0.025, 0.0125])
    with pytest.raises(ValueError, match="alpha"):
        holm_levels(p_values, 1.5)


# --- the table ----------------------------------------------------------------------------


def _frame_and_scores():
    rows = {"baseline": 0.0, "aspp": 0.0, "dcnv1": 0.02, "dcnv2": -0.015}
    noises = {"baseline": np.zeros(N_SEQ), "aspp": SYMMETRIC, "dcnv1": 0.2 * _null_noise(1),
              "dcnv2": 0.2 * _null_noise(2)}  # fmt: skip
    runs, scores = [], []
    for variant, shift in rows.items():
        part = _row(variant, shift=shift, noise=noises[variant])
        for run_id, cell in part.groupby("run_id", sort=True):
            seed = int(cell["seed"].iloc[0])
            runs.append({"run_id": run_id, "row": variant, "seed": seed, "status": "FINISHED",
                         "variant": variant, "jf_mean": global_jf(cell.to_dict("records")),
                         "fps": 4.0 + 0.01 * seed + (variant == "dcnv1")})  # fmt: skip
        scores.append(part.drop(columns="seed").assign(checkpoint="final"))
    runs.append(
        {
            "run_id": "d2-i",
            "row": "i",
            "seed": 0,
            "status": "FINISHED",
            "variant": "d2conv3d_i",
            "jf_mean": 0.7,
            "fps": 4.0,
        }
    )  # no per-sequence file
    return pd.DataFrame(runs), pd.concat(scores, ignore_index=True)


def test_the_table_shows_delta_interval_and_marks_in_every_format():
    frame, scores = _frame_and_scores()
    table = build_table(frame, table1_layout(), per_sequence=scores, resamples=2000)
    assert table.paired is not None and table.paired.family == 3
    text = to_markdown(table)
    header = "ΔJ&F vs Revised Baseline [95% CI, Holm]"
    assert header in text
    rows = _md_rows(text)
    delta = 4  # Mod., J&F ours, paper, Δ, then the comparison
    assert rows["Revised Baseline"][delta] == "reference"
    assert rows["DCNv1"][delta].startswith("+2.0 [+") and rows["DCNv1"][delta].endswith("▲")
    assert rows["DCNv2"][delta].startswith("−1.5 [−") and rows["DCNv2"][delta].endswith("▼")
    assert re.fullmatch(r"[+−]0\.0 \[−0\.\d, \+0\.\d\]", rows["ASPP"][delta])
    assert rows["(I) S (\\|D\\|=1)"][delta] == "n/a"  # finished, but no per-sequence scores
    assert rows["(II) S (\\|D\\|=2)"][delta] == "missing"
    # J&F is judged by the comparison alone: no Welch dagger on it, still on FPS
    assert "†" not in rows["DCNv1"][1] and rows["DCNv1"][5].endswith("† (n=2)")
    caption = table.caption
    assert "Holm-corrected over the m = 3 row(s)" in caption
    assert "a percentile bootstrap interval from 2000 draws (generator seed 0)" in caption
    assert "columns other than J&F; uncorrected" in caption

    latex = to_latex(table)
    _check_latex_structure(latex, body_rows=8)
    assert r"$\blacktriangle$" in latex and r"$\blacktriangledown$" in latex

    parsed = pd.read_csv(StringIO(to_csv(table))).set_index("label")
    assert parsed.loc["DCNv1", "jf_ref_mark"] == "better"
    assert parsed.loc["DCNv2", "jf_ref_mark"] == "worse"
    assert parsed.loc["Revised Baseline", "jf_ref_mark"] == "reference"
    assert parsed.loc["DCNv1", "jf_ref_delta"] == pytest.approx(2.0)
    assert parsed.loc["DCNv1", "jf_ref_low"] > 0 and parsed.loc["DCNv1", "jf_ref_sequences"] == 20
    assert parsed.loc["DCNv1", "jf_ref_p_holm"] < 0.05 < parsed.loc["ASPP", "jf_ref_p_holm"]
    assert not parsed.loc["DCNv1", "jf_significant"] and parsed.loc["DCNv1", "jf_p_welch"] > 0


def test_without_scores_for_the_reference_the_table_is_as_before():
    frame, scores = _frame_and_scores()
    without = scores[~scores["run_id"].str.startswith("baseline")]
    table = build_table(frame, table1_layout(), per_sequence=without, resamples=200)
    assert table.paired is None and "ΔJ&F vs" not in to_markdown(table)
    assert "jf_ref_delta" not in to_csv(table)


# --- the per-sequence records ---------------------------------------------------------------


def _eval_result(values: dict[str, list[tuple[float, float]]]) -> dict:
    """An eval.json-shaped result: per sequence, (J, F) per object."""
    per_object, pooled = {}, []
    for sequence, objects in values.items():
        for k, (j, f) in enumerate(objects, start=1):
            entry = {"sequence": sequence, "object": k, "J-Mean": j, "F-Mean": f,
                     "J-Recall": 1.0, "J-Decay": 0.0, "F-Recall": 1.0, "F-Decay": 0.0}  # fmt: skip
            per_object[f"{sequence}_{k}"] = entry
            pooled.append(entry)
    return {"per_object": per_object, "global": global_summary(pooled)}


def test_records_add_up_to_the_evaluations_global_jf(tmp_path):
    from d2bench.runner import cell

    assert (EVAL_FILE, BEST_VAL_EVAL_FILE) == (cell.EVAL_FILE, cell.BEST_VAL_EVAL_FILE)
    result = _eval_result({"a": [(0.9, 0.8), (0.5, 0.3)], "b": [(0.7, 0.6)]})
    records = records_from_eval(result)
    assert [(r["sequence"], r["objects"]) for r in records] == [("a", 2), ("b", 1)]
    assert records[0]["jf_mean"] == pytest.approx((0.9 + 0.8 + 0.5 + 0.3) / 4)
    assert global_jf(records) == pytest.approx(result["global"]["J&F-Mean"], abs=1e-12)
    with pytest.raises(ValueError, match="no per_object"):
        records_from_eval({"global": {}})

    import json

    (tmp_path / EVAL_FILE).write_text(json.dumps(result))
    assert {r["checkpoint"] for r in cell_records(tmp_path)} == {"final"}
    both = cell_records(tmp_path, {"best_val_eval": EVAL_FILE})  # best epoch = last epoch
    assert [r["checkpoint"] for r in both] == ["final", "final", "best_val", "best_val"]
    table = {"columns": list(both[0]), "data": [list(r.values()) for r in both + both[:1]]}
    assert records_from_table(table) == both  # a row appended twice counts once


def test_the_report_reads_the_table_else_the_eval_files_and_drops_what_does_not_add_up():
    result = _eval_result({"a": [(0.9, 0.8)], "b": [(0.7, 0.6)]})
    good = result["global"]["J&F-Mean"]
    records = records_from_eval(result)
    table = {"columns": list(records[0]), "data": [list(r.values()) for r in records]}
    files = {
        ("r1", "per_sequence.json"): table,
        ("r2", "eval.json"): result,
        ("r3", "eval.json"): result,
    }
    runs = pd.DataFrame(
        [
            {"run_id": "r1", "status": "FINISHED", "jf_mean": good},
            {"run_id": "r2", "status": "FINISHED", "jf_mean": good, "best_val/jf_mean": good},
            {"run_id": "r3", "status": "FINISHED", "jf_mean": good + 0.01},  # other weights
            {"run_id": "r4", "status": "FAILED", "jf_mean": float("nan")},
        ]
    )
    frame = per_sequence_frame(runs, lambda run_id, name: files.get((run_id, name)))
    assert sorted(frame.groupby("run_id").size().items()) == [("r1", 2), ("r2", 4)]
    assert set(frame.loc[frame["run_id"] == "r2", "checkpoint"]) == {"final", "best_val"}
