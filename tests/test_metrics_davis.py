"""DAVIS J&F: hand-built cases with known answers, and the fast path against the slow one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from d2bench.cli import main as cli_main
from d2bench.metrics.davis import (
    GLOBAL_KEYS,
    EvalError,
    evaluate,
    per_sequence_csv,
    per_sequence_rows,
)
from d2bench.metrics.davis.boundary import boundary_map, boundary_radius
from d2bench.metrics.davis.frame import evaluate_frame
from d2bench.metrics.davis.reference import (
    evaluate_reference,
    reference_boundary,
    reference_dilate,
    reference_disk,
    reference_f,
    reference_j,
)
from d2bench.metrics.davis.statistics import decay_bin_ids, series_statistics
from d2bench.metrics.davis.synthetic import save_ids, write_mask_set

# --- helpers -----------------------------------------------------------------------------


def square(shape: tuple[int, int], top: int, left: int, size: int, value: int = 1) -> np.ndarray:
    ids = np.zeros(shape, dtype=np.uint8)
    ids[top : top + size, left : left + size] = value
    return ids


def write_root(
    folder: Path,
    ground_truth: dict[str, list[np.ndarray]],
    results: dict[str, list[np.ndarray]],
    *,
    unsupervised: bool = False,
) -> tuple[Path, Path]:
    """A DAVIS root (ImageSets/2017/val.txt) and a results folder from id arrays."""
    root, res = folder / "DAVIS", folder / "results"
    listing = root / "ImageSets" / "2017" / "val.txt"
    listing.parent.mkdir(parents=True)
    listing.write_text("".join(f"{name}\n" for name in ground_truth))
    annotations = "Annotations_unsupervised" if unsupervised else "Annotations"
    (root / "Annotations").mkdir(exist_ok=True)
    for name, frames in ground_truth.items():
        for t, ids in enumerate(frames):
            save_ids(root / annotations / "480p" / name / f"{t:05d}.png", ids)
    for name, frames in results.items():
        for t, ids in enumerate(frames):
            save_ids(res / name / f"{t:05d}.png", ids)
    return root, res


def one_pair(gt: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    j, f = evaluate_frame(gt, pred, 1, 1, all_pairs=True)
    return float(j[0, 0]), float(f[0, 0])


# --- light imports -----------------------------------------------------------------------


def test_metrics_package_and_eval_command_import_no_heavy_modules():
    code = (
        "import sys, d2bench.metrics, d2bench.commands.eval; "
        "print('torch' in sys.modules, 'scipy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_metrics_package_exports_the_evaluation_lazily():
    import d2bench.metrics as metrics

    assert metrics.evaluate_davis is evaluate
    assert metrics.EvalError is EvalError


# --- radius, boundary, dilation ----------------------------------------------------------


@pytest.mark.parametrize(
    ("height", "width", "radius"), [(480, 854, 8), (480, 910, 9), (480, 1152, 10), (1080, 1920, 18)]
)
def test_boundary_radius(height, width, radius):
    assert boundary_radius(height, width) == radius


def test_disk_of_radius_8_has_197_pixels():
    assert int(reference_disk(8.0).sum()) == 197


def test_reference_dilation_equals_scipy_with_the_disk():
    rng = np.random.default_rng(0)
    for _ in range(40):
        shape = tuple(int(v) for v in rng.integers(1, 30, size=2))
        bitmap = rng.random(shape) < rng.uniform(0, 0.2)
        radius = float(rng.integers(0, 7))
        expected = ndimage.binary_dilation(bitmap, structure=reference_disk(radius))
        assert np.array_equal(reference_dilate(bitmap, radius), expected)


def test_boundary_of_a_full_frame_mask_is_empty():
    assert not boundary_map(np.ones((7, 9), dtype=bool)).any()


def test_boundary_of_a_single_pixel_is_its_2x2_window():
    mask = np.zeros((4, 4), dtype=bool)
    mask[1, 1] = True
    expected = np.zeros((4, 4), dtype=bool)
    expected[0:2, 0:2] = True  # shifted half a pixel towards the origin
    assert np.array_equal(boundary_map(mask), expected)


def test_boundary_of_masks_touching_the_last_row_and_column():
    corner = np.zeros((3, 3), dtype=bool)
    corner[2, 2] = True  # only the bottom-right pixel: that pixel itself is forced to 0
    expected = np.zeros((3, 3), dtype=bool)
    expected[1, 1] = expected[1, 2] = expected[2, 1] = True
    assert np.array_equal(boundary_map(corner), expected)

    last_row = np.zeros((3, 4), dtype=bool)
    last_row[2, :] = True  # the last row keeps only s ⊕ e, which is 0 along a full row
    expected = np.zeros((3, 4), dtype=bool)
    expected[1, :] = True
    assert np.array_equal(boundary_map(last_row), expected)


def test_boundary_map_equals_the_literal_reference_on_random_masks():
    rng = np.random.default_rng(1)
    for _ in range(50):
        shape = tuple(int(v) for v in rng.integers(1, 25, size=2))
        mask = rng.random(shape) < rng.random()
        assert np.array_equal(boundary_map(mask), reference_boundary(mask))


# --- one frame: J and F ------------------------------------------------------------------

SHAPE = (20, 20)  # radius ceil(0.008 · √800) = 1


def test_both_empty_scores_one():
    empty = np.zeros(SHAPE, dtype=np.uint8)
    assert one_pair(empty, empty) == (1.0, 1.0)


def test_one_empty_scores_zero_either_way():
    empty = np.zeros(SHAPE, dtype=np.uint8)
    mask = square(SHAPE, 5, 5, 5)
    assert one_pair(empty, mask) == (0.0, 0.0)  # P = 0, R = 1
    assert one_pair(mask, empty) == (0.0, 0.0)  # P = 1, R = 0


def test_full_frame_masks_have_empty_boundaries():
    full = np.ones(SHAPE, dtype=np.uint8)
    assert one_pair(full, full) == (1.0, 1.0)  # both boundaries empty: P = R = 1
    partial = square(SHAPE, 0, 0, 10)
    j, f = one_pair(full, partial)
    assert j == 100 / 400
    assert f == 0.0  # n_gt = 0 and n_pred > 0: P = 0, R = 1


def test_shift_by_one_pixel_is_within_the_radius():
    assert boundary_radius(*SHAPE) == 1
    gt = square(SHAPE, 5, 5, 5)
    pred = square(SHAPE, 5, 6, 5)
    assert one_pair(gt, pred) == (20 / 30, 1.0)


def test_precision_counts_a_far_blob_against_the_prediction():
    gt = square(SHAPE, 5, 5, 5)
    pred = gt.copy()
    pred[16, 16] = 1  # a far 1-pixel blob: 4 boundary pixels, none near the ground truth
    precision = 20 / float(24)  # the 5×5 square has 20 boundary pixels
    recall = 20 / float(20)
    expected_f = 2 * precision * recall / (precision + recall)
    assert one_pair(gt, pred) == (25 / 26, expected_f)


def test_disjoint_far_masks_score_zero():
    assert one_pair(square(SHAPE, 0, 0, 4), square(SHAPE, 12, 12, 4)) == (0.0, 0.0)


def test_frame_pairs_equal_the_reference_on_random_frames():
    rng = np.random.default_rng(2)
    for _ in range(40):
        shape = tuple(int(v) for v in rng.integers(3, 40, size=2))
        objects, proposals = int(rng.integers(1, 4)), int(rng.integers(1, 5))
        gt = rng.integers(0, objects + 1, size=shape).astype(np.uint8)
        gt = ndimage.median_filter(gt, size=3)  # blobs rather than salt
        pred = ndimage.median_filter(rng.integers(0, proposals + 1, size=shape), size=3)
        pred = pred.astype(np.uint8)
        j, f = evaluate_frame(gt, pred, objects, proposals, all_pairs=True)
        for p in range(proposals):
            for k in range(objects):
                assert j[p, k] == reference_j(gt == k + 1, pred == p + 1, None)
                assert f[p, k] == reference_f(gt == k + 1, pred == p + 1, None)


# --- statistics --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "ids"),
    [
        (3, [0, 1, 1, 2, 2]),
        (4, [0, 1, 2, 2, 3]),
        (47, [0, 12, 23, 35, 46]),
        (48, [0, 12, 24, 35, 47]),
        (104, [0, 26, 52, 77, 103]),
        (300, [0, 75, 150, 224, 299]),  # no uint8 wrap-around
    ],
)
def test_decay_bin_ids(length, ids):
    assert decay_bin_ids(length).tolist() == ids


def test_series_statistics_by_hand():
    mean, recall, decay = series_statistics(np.array([1.0, 0.5, 0.25, 0.0]))
    assert mean == 1.75 / 4
    assert recall == 0.25  # 0.5 is not above 0.5
    assert decay == 0.75 - 0.125  # bins v[0:2] and v[2:4] (edges 0, 1, 2, 2, 3)


# --- protocols on small folders against the slow path ------------------------------------


@pytest.fixture(scope="module")
def mask_set(tmp_path_factory):
    folder = tmp_path_factory.mktemp("davis")
    sequences = {"alpha": 7, "beta": 5, "gamma": 9, "delta": 6}
    return write_mask_set(
        folder, sequences, height=48, width=80, seed=5, greyscale_sequences=("delta",)
    )


def assert_same(fast: dict, slow: dict) -> None:
    assert fast["global"] == slow["global"]
    assert set(fast["per_object"]) == set(slow["per_object"])
    for key, entry in slow["per_object"].items():
        for field, value in entry.items():
            assert fast["per_object"][key][field] == value, (key, field)


@pytest.mark.parametrize(
    ("protocol", "results", "sequences"),
    [
        ("davis16", "semi", None),
        ("semi", "semi", ["alpha", "beta", "gamma"]),
        ("unsupervised", "unsupervised", ["alpha", "beta", "gamma"]),
    ],
)
def test_protocols_equal_the_slow_path_exactly(mask_set, protocol, results, sequences):
    args = (mask_set["root"], mask_set[results], protocol, "2017/val")
    fast = evaluate(*args, workers=2, sequences=sequences)
    slow = evaluate_reference(*args, sequences=sequences)
    assert_same(fast, slow)
    assert set(fast["global"]) == set(GLOBAL_KEYS)
    assert 0.0 < fast["global"]["J-Mean"] < 1.0  # imperfect results, not a degenerate case
    one_worker = evaluate(*args, workers=1, sequences=sequences)
    assert one_worker["global"] == fast["global"]


def test_davis16_frames_skip_first_and_last(mask_set):
    result = evaluate(mask_set["root"], mask_set["semi"], "davis16", "2017/val", workers=1)
    assert result["per_object"]["alpha_1"]["frames"] == [f"{t:05d}" for t in range(1, 6)]
    assert len(result["per_object"]) == 4  # one binary object per sequence


def test_unsupervised_scores_all_frames(mask_set):
    result = evaluate(
        mask_set["root"],
        mask_set["unsupervised"],
        "unsupervised",
        "2017/val",
        workers=1,
        sequences=["beta"],
    )
    entries = [e for key, e in result["per_object"].items() if key.startswith("beta_")]
    assert all(len(entry["J"]) == 5 for entry in entries)


def test_void_is_ignored_only_by_the_unsupervised_protocol(tmp_path):
    gt = square((30, 40), 10, 10, 8)
    gt[10:18, 18:22] = 255  # a void band to the right of the object
    pred = square((30, 40), 10, 10, 8)
    pred[10:18, 18:22] = 1  # the prediction covers the void band too
    frames = [gt] * 3
    for protocol, unsupervised in (("unsupervised", True), ("semi", False)):
        folder = tmp_path / protocol
        root, res = write_root(folder, {"s": frames}, {"s": [pred] * 3}, unsupervised=unsupervised)
        if not unsupervised:  # no void: the band counts against the prediction
            result = evaluate(root, res, protocol, "2017/val", workers=1)
            assert result["per_object"]["s_1"]["J"] == [64 / 96]
        else:
            result = evaluate(root, res, protocol, "2017/val", workers=1)
            assert result["per_object"]["s_1"]["J"] == [1.0, 1.0, 1.0]
            assert result["per_object"]["s_1"]["F"] == [1.0, 1.0, 1.0]


def two_objects(shape=(30, 40)) -> np.ndarray:
    ids = square(shape, 2, 2, 8, value=1)
    ids[15:25, 20:30] = 2
    return ids


def test_fewer_proposals_than_objects_pads_with_empty_ones(tmp_path):
    gt = two_objects()
    pred = (gt == 2).astype(np.uint8)  # one proposal, exactly object 2
    root, res = write_root(tmp_path, {"s": [gt] * 2}, {"s": [pred] * 2}, unsupervised=True)
    result = evaluate(root, res, "unsupervised", "2017/val", workers=1)
    # rows in proposal order: proposal 1 (object 2), then the empty padding one (object 1)
    assert result["per_object"]["s_1"]["J"] == [1.0, 1.0]
    assert (result["per_object"]["s_1"]["proposal"], result["per_object"]["s_1"]["object"]) == (
        1,
        2,
    )
    assert result["per_object"]["s_2"]["J"] == [0.0, 0.0]  # matched to an empty proposal
    assert result["per_object"]["s_2"]["proposal"] is None
    assert result["per_object"]["s_2"]["object"] == 1
    assert result["global"]["J-Mean"] == 0.5


def test_more_proposals_than_objects_are_matched_and_extras_ignored(tmp_path):
    gt = two_objects()
    pred = np.zeros_like(gt)
    pred[gt == 1] = 3
    pred[gt == 2] = 1
    pred[0:2, 35:40] = 2  # a false positive
    root, res = write_root(tmp_path, {"s": [gt] * 2}, {"s": [pred] * 2}, unsupervised=True)
    result = evaluate(root, res, "unsupervised", "2017/val", workers=1)
    rows = {name: (e["proposal"], e["object"]) for name, e in result["per_object"].items()}
    assert rows == {"s_1": (1, 2), "s_2": (3, 1)}  # matched proposals in proposal order
    assert result["global"]["J&F-Mean"] == 1.0
    assert result["per_sequence"]["s"]["proposals"] == 3


def test_unsupervised_rows_are_named_like_the_official_csv(tmp_path):
    """Row ``s_k`` is the k-th matched proposal in proposal order, not ground-truth object k."""
    gt = two_objects()  # object 1: rows 2..9 × columns 2..9; object 2: rows 15..24 × 20..29
    pred = np.zeros_like(gt)
    pred[15:25, 20:25] = 1  # proposal 1: the left half of object 2
    pred[gt == 1] = 2  # proposal 2: exactly object 1
    frames = {"s": [gt] * 3}
    root, res = write_root(tmp_path, frames, {"s": [pred] * 3}, unsupervised=True)
    fast = evaluate(root, res, "unsupervised", "2017/val", workers=1)
    slow = evaluate_reference(root, res, "unsupervised", "2017/val")
    assert_same(fast, slow)
    assert list(fast["per_object"]) == list(slow["per_object"]) == ["s_1", "s_2"]
    half_j = reference_j(gt == 2, pred == 1, gt == 255)
    half_f = reference_f(gt == 2, pred == 1, gt == 255)
    assert half_j == 0.5 and half_f < 1.0
    assert per_sequence_rows(fast) == [("s_1", half_j, half_f), ("s_2", 1.0, 1.0)]
    assert per_sequence_csv(fast) == (
        f"Sequence,J-Mean,F-Mean\ns_1,0.500,{half_f:.3f}\ns_2,1.000,1.000\n"
    )
    assert [fast["per_object"][k]["object"] for k in ("s_1", "s_2")] == [2, 1]
    assert fast["global"]["J-Mean"] == (half_j + 1.0) / 2
    # without matching (semi) row k stays ground-truth object k
    root, res = write_root(tmp_path / "semi", frames, {"s": [pred] * 3})
    semi = evaluate(root, res, "semi", "2017/val", workers=1)
    assert [semi["per_object"][k]["object"] for k in ("s_1", "s_2")] == [1, 2]


def test_more_than_20_proposals_is_an_error_naming_the_frame(tmp_path):
    gt = two_objects()
    pred = gt.copy()
    pred[0, 39] = 21
    root, res = write_root(tmp_path, {"s": [gt, gt]}, {"s": [gt, pred]}, unsupervised=True)
    with pytest.raises(EvalError, match=r"sequence s, frame 00001: result id 21 .*20 proposals"):
        evaluate(root, res, "unsupervised", "2017/val", workers=1)


# --- errors ------------------------------------------------------------------------------


@pytest.fixture
def small_root(tmp_path):
    gt = two_objects()
    return write_root(tmp_path, {"s": [gt] * 4, "t": [gt] * 3}, {"s": [gt] * 4, "t": [gt] * 3})


def test_missing_result_folder(small_root):
    root, res = small_root
    for path in sorted((res / "t").iterdir()):
        path.unlink()
    (res / "t").rmdir()
    with pytest.raises(EvalError, match=r"sequence t: missing result folder"):
        evaluate(root, res, "semi", "2017/val", workers=1)


def test_missing_result_frame(small_root):
    root, res = small_root
    (res / "s" / "00002.png").unlink()
    with pytest.raises(EvalError, match=r"sequence s, frame 00002: missing result PNG"):
        evaluate(root, res, "semi", "2017/val", workers=2)


def test_rgb_result_png(small_root):
    root, res = small_root
    Image.new("RGB", (40, 30)).save(res / "s" / "00001.png")
    with pytest.raises(EvalError, match=r"sequence s, frame 00001: .*mode 'RGB'"):
        evaluate(root, res, "davis16", "2017/val", workers=1)


def test_id_above_the_object_count_in_semi(small_root):
    root, res = small_root
    pred = two_objects()
    pred[0, 0] = 3
    save_ids(res / "t" / "00001.png", pred)
    with pytest.raises(EvalError, match=r"sequence t, frame 00001: result id 3 .*objects \(2"):
        evaluate(root, res, "semi", "2017/val", workers=1)


def test_result_of_another_size(small_root):
    root, res = small_root
    save_ids(res / "s" / "00001.png", np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(EvalError, match=r"sequence s, frame 00001: the result is 10×10"):
        evaluate(root, res, "semi", "2017/val", workers=1)


def test_unknown_imageset_and_protocol(small_root):
    root, res = small_root
    with pytest.raises(EvalError, match=r"image set '2016/val' not found.*available: 2017/val"):
        evaluate(root, res, "semi", "2016/val")
    with pytest.raises(EvalError, match="unknown protocol 'semi2'"):
        evaluate(root, res, "semi2", "2017/val")


# --- CLI ---------------------------------------------------------------------------------


def test_cli_prints_a_table_and_writes_the_json(small_root, tmp_path, capsys):
    root, res = small_root
    out = tmp_path / "out" / "eval.json"
    code = cli_main(
        [
            "eval",
            "--davis-root",
            str(root),
            "--results",
            str(res),
            "--protocol",
            "semi",
            "--imageset",
            "2017/val",
            "--json",
            str(out),
            "--workers",
            "1",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "J&F-Mean" in printed and "s_2" in printed
    data = json.loads(out.read_text())
    assert list(data["global"]) == list(GLOBAL_KEYS)
    assert data["global"]["J&F-Mean"] == 1.0  # the results are the ground truth
    assert set(data["per_object"]) == {"s_1", "s_2", "t_1", "t_2"}
    entry = data["per_object"]["s_1"]
    assert len(entry["J"]) == len(entry["F"]) == 2
    assert {"J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"} <= set(entry)
    assert data["protocol"]["name"] == "semi"


def test_cli_reports_bad_input_with_exit_code_2(small_root, capsys):
    root, res = small_root
    (res / "s" / "00001.png").unlink()
    code = cli_main(
        [
            "eval",
            "--davis-root",
            str(root),
            "--results",
            str(res),
            "--protocol",
            "semi",
            "--imageset",
            "2017/val",
        ]
    )
    assert code == 2
    assert "sequence s, frame 00001: missing result PNG" in capsys.readouterr().err


# --- benchmark ---------------------------------------------------------------------------


def test_bench_eval_quick_writes_both_reports(tmp_path):
    from d2bench.bench.eval_bench import run_eval_benchmark

    path = run_eval_benchmark(tmp_path, quick=True, workers=2, say=lambda text: None)
    report = json.loads(path.read_text())
    assert path.name.startswith("eval-cpu-") and path.with_suffix(".md").is_file()
    for protocol in ("davis16", "unsupervised"):
        row = report["results"][protocol]
        assert row["slow_path_agrees_bitwise"] is True
        assert row["fast_median_s"] > 0 and row["slow_extrapolated_s"] > 0
    assert str(tmp_path) not in path.read_text()  # no temporary paths in a committed report
