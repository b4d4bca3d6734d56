"""A slow, independent re-statement of the official DAVIS evaluation: the test oracle.

It follows the official tool's structure on purpose and shares none of the fast path's
arithmetic: every frame becomes full-frame float64 one-hot masks, and every (result, object)
pair gets its own boundary maps and disk dilations over the whole frame, with no crops and no
reuse. Only the file listing (image sets, frame names) is shared with the fast path.
``d2bench bench eval`` times it as the "official-like" baseline. No input checks beyond what
the algorithm needs: run :func:`d2bench.metrics.davis.evaluate` for those.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy.optimize import linear_sum_assignment

from .layout import RESOLUTION, list_frames, read_imageset, resolve_root
from .protocols import get_protocol


def reference_radius(shape: tuple[int, int]) -> float:
    return float(np.ceil(0.008 * np.linalg.norm(shape)))


def reference_disk(radius: float) -> np.ndarray:
    """The structuring element: ``dx² + dy² ≤ r²`` on a (2r+1)² grid."""
    steps = np.arange(-radius, radius + 1)
    xx, yy = np.meshgrid(steps, steps)
    return (xx**2 + yy**2) <= radius**2


def reference_boundary(mask: np.ndarray) -> np.ndarray:
    """The official ``seg2bmap`` for an output of the input's size, written out literally."""
    seg = mask.astype(bool)
    east = np.zeros_like(seg)
    south = np.zeros_like(seg)
    south_east = np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]
    boundary = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    boundary[-1, :] = seg[-1, :] ^ east[-1, :]
    boundary[:, -1] = seg[:, -1] ^ south[:, -1]
    boundary[-1, -1] = False
    return boundary


def reference_dilate(bitmap: np.ndarray, radius: float) -> np.ndarray:
    """Full-frame dilation by the disk with zero padding, one horizontal run per disk row.

    The disk row at offset dy is the run ``|dx| ≤ w`` of the structuring element; each run is
    applied to the whole frame through a cumulative sum along the zero-padded rows (what an
    image library does with a non-rectangular kernel, row by row), then shifted by dy.
    """
    disk = reference_disk(radius)
    size = disk.shape[0]
    half = size // 2
    height, width = bitmap.shape
    # totals[:, i] = number of set pixels in padded columns [0, i); the frame starts at half
    totals = np.zeros((height, width + 2 * half + 1), dtype=np.int32)
    np.cumsum(bitmap, axis=1, out=totals[:, half + 1 : half + 1 + width])
    totals[:, half + 1 + width :] = totals[:, half + width : half + 1 + width]
    runs: dict[int, np.ndarray] = {}
    out = np.zeros((height, width), dtype=bool)
    for row in range(size):
        dy = row - half
        if abs(dy) >= height:
            continue
        w = int(np.count_nonzero(disk[row])) // 2
        if w not in runs:
            # pixels in columns [x - w, x + w] of the frame
            upper = totals[:, half + w + 1 : half + w + 1 + width]
            lower = totals[:, half - w : half - w + width]
            runs[w] = upper > lower
        run = runs[w]
        # out[y] |= run[y + dy]
        if dy >= 0:
            out[: height - dy] |= run[dy:]
        else:
            out[-dy:] |= run[: height + dy]
    return out


def reference_j(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None) -> float:
    keep = np.ones_like(gt, dtype=bool) if void is None else np.logical_not(void)
    intersection = np.sum((pred & gt) & keep)
    union = np.sum((pred | gt) & keep)
    return 1.0 if np.isclose(union, 0) else float(intersection / union)


def reference_f(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None) -> float:
    pred = pred.copy()
    gt = gt.copy()
    if void is not None:
        pred[void] = False
        gt[void] = False
    radius = reference_radius(pred.shape)
    pred_boundary = reference_boundary(pred)
    gt_boundary = reference_boundary(gt)
    pred_dilated = reference_dilate(pred_boundary, radius)
    gt_dilated = reference_dilate(gt_boundary, radius)
    gt_match = gt_boundary & pred_dilated
    pred_match = pred_boundary & gt_dilated
    n_pred = np.sum(pred_boundary)
    n_gt = np.sum(gt_boundary)
    if n_pred == 0 and n_gt > 0:
        precision, recall = 1, 0
    elif n_pred > 0 and n_gt == 0:
        precision, recall = 0, 1
    elif n_pred == 0 and n_gt == 0:
        precision, recall = 1, 1
    else:
        precision = np.sum(pred_match) / float(n_pred)
        recall = np.sum(gt_match) / float(n_gt)
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def reference_statistics(values: np.ndarray) -> tuple[float, float, float]:
    mean = np.nanmean(values)
    recall = np.nanmean(values > 0.5)
    ids = np.round(np.linspace(1, len(values), 5) + 1e-10) - 1
    ids = ids.astype(np.int64)
    bins = [values[ids[i] : ids[i + 1] + 1] for i in range(4)]
    decay = np.nanmean(bins[0]) - np.nanmean(bins[3])
    return float(mean), float(recall), float(decay)


def _read(path: Path) -> tuple[np.ndarray, str]:
    with Image.open(path) as image:
        return np.array(image, dtype=np.float64), image.mode


def _one_hot(frame: np.ndarray, count: int) -> np.ndarray:
    """(count, H, W) bool from a float64 id frame, through a float64 volume like the official."""
    volume = np.ones((count, *frame.shape)) * np.arange(1, count + 1)[:, None, None]
    return volume == frame[None]


def _sequence_reference(
    root: Path, results: Path, sequence: str, protocol_name: str
) -> tuple[list[str], list[tuple[int, int | None, np.ndarray, np.ndarray]]]:
    """The scored frames and, per official row, (object id, proposal id, J per frame, F)."""
    protocol = get_protocol(protocol_name)
    frames = list_frames(root, protocol.annotations, sequence)
    gt_folder = root / protocol.annotations / RESOLUTION / sequence
    scored = frames[1:-1] if protocol.skip_first_last else frames
    first, _ = _read(gt_folder / f"{frames[0]}.png")
    first[first == 255] = 0
    count = 1 if protocol.binary else int(np.max(first))

    gts, voids, preds = [], [], []
    for frame in scored:
        gt, mode = _read(gt_folder / f"{frame}.png")
        pred, _ = _read(results / sequence / f"{frame}.png")
        if protocol.binary:
            fg = (gt == 255) if mode == "L" else (gt > 0) & (gt < 255)
            gts.append(fg[None])
            preds.append((pred != 0)[None])
            voids.append(None)
        else:
            void = gt == 255
            gt[void] = 0
            gts.append(_one_hot(gt, count))
            preds.append(pred)
            voids.append(void if protocol.use_void else None)
    proposals = None
    if not protocol.binary:
        proposals = int(max(np.max(p) for p in preds))
        preds = [_one_hot(p, max(proposals, count)) for p in preds]

    num_results = preds[0].shape[0]
    length = len(scored)
    j_res = np.zeros((num_results, count, length))
    f_res = np.zeros((num_results, count, length))
    for k in range(count):
        for j in range(num_results):
            if not protocol.match_proposals and j != k:
                continue
            for t in range(length):
                j_res[j, k, t] = reference_j(gts[t][k], preds[t][j], voids[t])
                f_res[j, k, t] = reference_f(gts[t][k], preds[t][j], voids[t])
    if protocol.match_proposals:
        means = (np.mean(j_res, axis=2) + np.mean(f_res, axis=2)) / 2
        rows, cols = linear_sum_assignment(-means)  # rows ascending: proposal order
        pairs = list(zip(rows, cols, strict=True))
    else:
        pairs = [(k, k) for k in range(count)]
    objects = []
    for row, col in pairs:
        proposal = None
        if protocol.match_proposals and proposals is not None and row < proposals:
            proposal = int(row) + 1
        objects.append((int(col) + 1, proposal, j_res[row, col], f_res[row, col]))
    return scored, objects


def evaluate_reference(
    davis_root: str | Path,
    results_dir: str | Path,
    protocol: str = "davis16",
    imageset: str = "2016/val",
    sequences: list[str] | None = None,
) -> dict[str, Any]:
    """The slow path: ``global`` and ``per_object`` like :func:`~.driver.evaluate`'s.

    Rows are named as the official tool names them: ``<sequence>_<k>`` for the k-th row of the
    sequence (object k, or under matching the k-th matched pair in proposal order).
    """
    matched = get_protocol(protocol).match_proposals
    root = resolve_root(davis_root)
    names = read_imageset(root, imageset)
    if sequences is not None:
        names = [name for name in names if name in sequences]
    stats: dict[str, list[float]] = {key: [] for key in ("JM", "JR", "JD", "FM", "FR", "FD")}
    per_object: dict[str, dict[str, Any]] = {}
    for name in names:
        frames, objects = _sequence_reference(root, Path(results_dir), name, protocol)
        for position, (object_id, proposal, j_values, f_values) in enumerate(objects, start=1):
            jm, jr, jd = reference_statistics(j_values)
            fm, fr, fd = reference_statistics(f_values)
            for key, value in zip(stats, (jm, jr, jd, fm, fr, fd), strict=True):
                stats[key].append(value)
            per_object[f"{name}_{position}"] = {
                "object": object_id,
                **({"proposal": proposal} if matched else {}),
                "J-Mean": jm,
                "J-Recall": jr,
                "J-Decay": jd,
                "F-Mean": fm,
                "F-Recall": fr,
                "F-Decay": fd,
                "frames": frames,
                "J": [float(v) for v in j_values],
                "F": [float(v) for v in f_values],
            }
    final = (np.mean(stats["JM"]) + np.mean(stats["FM"])) / 2.0
    summary = {
        "J&F-Mean": float(final),
        "J-Mean": float(np.mean(stats["JM"])),
        "J-Recall": float(np.mean(stats["JR"])),
        "J-Decay": float(np.mean(stats["JD"])),
        "F-Mean": float(np.mean(stats["FM"])),
        "F-Recall": float(np.mean(stats["FR"])),
        "F-Decay": float(np.mean(stats["FD"])),
    }
    return {"global": summary, "per_object": per_object}
