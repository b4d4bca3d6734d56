"""J and F of one frame for (proposal, object) pairs, from two id images.

Counts come from one joint histogram of (ground-truth id, result id) over the frame, boundaries
from each mask's own bounding box grown by one pixel, found for all ids in one pass
(``scipy.ndimage.find_objects``), and the dilation test from :class:`MaskBoundary`. Each mask's
boundary is built once per frame and reused by every pair it is in. Divisions are done in
float64 in the official order, so the values are bit-identical to the official tool's.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .boundary import MaskBoundary, boundary_radius, grown_box, key_stride


def f_from_counts(near_pred: int, count_pred: int, near_gt: int, count_gt: int) -> float:
    """F from ``|b_pred ∧ dil(b_gt)|``, ``|b_pred|``, ``|b_gt ∧ dil(b_pred)|``, ``|b_gt|``."""
    if count_pred == 0 and count_gt > 0:
        precision, recall = 1.0, 0.0
    elif count_pred > 0 and count_gt == 0:
        precision, recall = 0.0, 1.0
    elif count_pred == 0 and count_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = near_pred / float(count_pred)
        recall = near_gt / float(count_gt)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def j_from_counts(intersection: np.ndarray, union: np.ndarray) -> np.ndarray:
    """``intersection / union`` in float64, 1 where the union is empty."""
    with np.errstate(divide="ignore", invalid="ignore"):
        jaccard = intersection / union
    jaccard[union == 0] = 1.0
    return jaccard


#: Up to this many ids, bounding boxes come from one row/column reduction per id; above it
#: from one ``find_objects`` pass over the frame.
_PER_ID_BOXES = 6


def _span(flags: np.ndarray) -> slice | None:
    where = np.flatnonzero(flags)
    return slice(int(where[0]), int(where[-1]) + 1) if where.size else None


def bounding_boxes(labels: np.ndarray, count: int) -> list[tuple[slice, slice] | None]:
    """The bounding box of each id 1..count of an id image (None where the id is absent).

    With ``count == 1`` the image must hold only 0 and 1 (the callers' binary masks).
    """
    if count > _PER_ID_BOXES:
        boxes = ndimage.find_objects(labels, max_label=count)
        return [None if box is None else (box[0], box[1]) for box in boxes]
    result: list[tuple[slice, slice] | None] = []
    for index in range(1, count + 1):
        # a 0/1 image (count == 1) is its own mask
        mask = labels if count == 1 else (labels == index).view(np.uint8)
        rows = _span(np.bitwise_or.reduce(mask, axis=1))
        if rows is None:
            result.append(None)
            continue
        cols = _span(np.bitwise_or.reduce(mask[rows], axis=0))
        result.append((rows, cols))
    return result


def mask_boundaries(labels: np.ndarray, count: int, radius: int) -> list[MaskBoundary]:
    """The boundary of each id 1..count of an id image (empty ids get an empty boundary).

    With ``count == 1`` the image must hold only 0 and 1.
    """
    height, width = labels.shape
    stride = key_stride(width, radius)
    boundaries = []
    for index, box in enumerate(bounding_boxes(labels, count), start=1):
        if box is None:
            boundaries.append(MaskBoundary.empty(radius, stride))
            continue
        rows, cols = grown_box(box[0], box[1], height, width)
        crop = labels[rows, cols] == index
        boundaries.append(MaskBoundary.from_crop(crop, rows.start, cols.start, radius, stride))
    return boundaries


def joint_histogram(
    gt: np.ndarray, pred: np.ndarray, num_objects: int, num_proposals: int
) -> np.ndarray:
    """Pixel counts of every (gt id, result id) pair as an (K+1)×(P+1) int64 array."""
    bins = num_proposals + 1
    if num_objects == 1 and num_proposals == 1:  # binary masks: three counts suffice
        intersection = np.count_nonzero(gt & pred)
        area_gt = np.count_nonzero(gt)
        area_pred = np.count_nonzero(pred)
        background = gt.size - area_gt - area_pred + intersection
        return np.array(
            [[background, area_pred - intersection], [area_gt - intersection, intersection]],
            dtype=np.int64,
        )
    if (num_objects + 1) * bins <= 256:
        index = gt * np.uint8(bins)
        index += pred
    else:
        index = gt.astype(np.intp) * bins
        index += pred
    counts = np.bincount(index.ravel(), minlength=(num_objects + 1) * bins)
    return counts.reshape(num_objects + 1, bins)


def evaluate_frame(
    gt: np.ndarray,
    pred: np.ndarray,
    num_objects: int,
    num_proposals: int,
    *,
    all_pairs: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """J and F of a frame as (P, K) float64 arrays, entry [j, k] for result j+1 vs object k+1.

    ``gt`` holds object ids 0..K and ``pred`` result ids 0..P (uint8, same shape; void already
    set to 0 in both where the protocol uses it). With ``all_pairs`` false only the diagonal
    (id k against object k, needs P == K) is computed and the rest of the arrays is NaN.
    """
    height, width = gt.shape
    radius = boundary_radius(height, width)
    histogram = joint_histogram(gt, pred, num_objects, num_proposals)
    intersection = histogram[1:, 1:].T  # (P, K)
    area_gt = histogram.sum(axis=1)[1:]
    area_pred = histogram.sum(axis=0)[1:]
    union = area_pred[:, None] + area_gt[None, :] - intersection
    jaccard = j_from_counts(intersection, union)

    gt_boundaries = mask_boundaries(gt, num_objects, radius)
    pred_boundaries = mask_boundaries(pred, num_proposals, radius)
    f_measure = np.full((num_proposals, num_objects), np.nan)
    for j, pred_boundary in enumerate(pred_boundaries):
        for k, gt_boundary in enumerate(gt_boundaries):
            if not all_pairs and j != k:
                continue
            f_measure[j, k] = f_from_counts(
                gt_boundary.count_within(pred_boundary),
                pred_boundary.count,
                pred_boundary.count_within(gt_boundary),
                gt_boundary.count,
            )
    if not all_pairs:
        off_diagonal = ~np.eye(num_proposals, num_objects, dtype=bool)
        jaccard[off_diagonal] = np.nan
    return jaccard, f_measure
