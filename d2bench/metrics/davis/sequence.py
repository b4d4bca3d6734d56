"""One sequence under one protocol: read its PNGs once, score every evaluated frame.

This is the unit of work of the parallel driver; its input and output pickle cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from .errors import EvalError
from .frame import evaluate_frame
from .layout import annotation_folder, read_label_png
from .protocols import Protocol

VOID_ID = 255


@dataclass(frozen=True)
class SequenceTask:
    """What to evaluate: one sequence, all its annotated frames, where its PNGs are."""

    sequence: str
    frames: tuple[str, ...]
    root: str
    results: str
    protocol: Protocol


@dataclass
class ObjectScores:
    """Per-frame J and F of one ground-truth object (and the proposal matched to it)."""

    object_id: int
    j: np.ndarray
    f: np.ndarray
    proposal_id: int | None = None


@dataclass
class SequenceScores:
    """The objects of a sequence in the official pooling order, and the frames they cover."""

    sequence: str
    frames: list[str]
    num_objects: int
    num_proposals: int | None
    objects: list[ObjectScores] = field(default_factory=list)


def evaluated_frames(frames: tuple[str, ...], protocol: Protocol, sequence: str) -> list[str]:
    """The frames a protocol scores: all, or all but the first and the last."""
    if not protocol.skip_first_last:
        return list(frames)
    if len(frames) < 3:
        raise EvalError(
            f"sequence {sequence}: {len(frames)} annotated frame(s); protocol {protocol.name} "
            f"skips the first and the last frame and needs at least 3"
        )
    return list(frames[1:-1])


def binary_foreground(annotation: np.ndarray, mode: str) -> np.ndarray:
    """DAVIS 2016 foreground as ids 0/1: 255 of a greyscale PNG, else objects 1..254."""
    if mode == "L":
        return (annotation == VOID_ID).view(np.uint8)
    return ((annotation != 0) & (annotation != VOID_ID)).view(np.uint8)


class _Reader:
    """Reads a sequence's annotation and result PNGs, with errors naming sequence and frame."""

    def __init__(self, task: SequenceTask) -> None:
        self.task = task
        self.gt_folder = annotation_folder(
            Path(task.root), task.protocol.annotations, task.sequence
        )
        self.result_folder = Path(task.results) / task.sequence
        if not self.result_folder.is_dir():
            raise EvalError(
                f"sequence {task.sequence}: missing result folder {self.result_folder} "
                f"(expected one PNG per annotated frame, named like the annotations)"
            )

    def annotation(self, frame: str) -> tuple[np.ndarray, str]:
        return read_label_png(
            self.gt_folder / f"{frame}.png",
            sequence=self.task.sequence,
            frame=frame,
            what="annotation",
        )

    def result(self, frame: str, shape: tuple[int, ...]) -> np.ndarray:
        result, _ = read_label_png(
            self.result_folder / f"{frame}.png",
            sequence=self.task.sequence,
            frame=frame,
            what="result",
        )
        if result.shape != shape:
            raise EvalError(
                f"sequence {self.task.sequence}, frame {frame}: the result is "
                f"{result.shape[1]}×{result.shape[0]} pixels, the annotation "
                f"{shape[1]}×{shape[0]}"
            )
        return result


def _count_objects(task: SequenceTask, first: np.ndarray) -> int:
    """K: the largest id of the first annotation frame, void (255) not counted."""
    ids = first[first != VOID_ID]
    num_objects = int(ids.max()) if ids.size else 0
    if num_objects == 0:
        raise EvalError(
            f"sequence {task.sequence}, frame {task.frames[0]}: the first annotation frame has "
            f"no object id (1..254); protocol {task.protocol.name} takes its objects from it "
            f"(greyscale 0/255 DAVIS 2016 annotations work with protocol davis16 only)"
        )
    return num_objects


def evaluate_sequence(task: SequenceTask) -> SequenceScores:
    """Score one sequence; raises EvalError naming the frame for any bad input."""
    protocol = task.protocol
    frames = evaluated_frames(task.frames, protocol, task.sequence)
    reader = _Reader(task)
    if protocol.binary:
        num_objects = 1
    else:
        num_objects = _count_objects(task, reader.annotation(task.frames[0])[0])
    if protocol.match_proposals:
        limit = protocol.max_result_id or 0
        too_high = f"is above the limit of {limit} proposals"
    else:
        limit = num_objects
        too_high = (
            f"is above the number of objects ({num_objects}, the largest id of the first "
            f"annotation frame {task.frames[0]})"
        )

    gts: list[np.ndarray] = []
    preds: list[np.ndarray] = []
    j_rows: list[np.ndarray] = []
    f_rows: list[np.ndarray] = []
    top_id = 0
    for frame in frames:
        annotation, mode = reader.annotation(frame)
        result = reader.result(frame, annotation.shape)
        if protocol.binary:
            gt = binary_foreground(annotation, mode)
            pred = (result != 0).view(np.uint8)
        else:
            frame_top = int(result.max())
            if frame_top > limit:
                raise EvalError(
                    f"sequence {task.sequence}, frame {frame}: result id {frame_top} {too_high}"
                )
            top_id = max(top_id, frame_top)
            gt = np.where(annotation > num_objects, np.uint8(0), annotation)  # void, ids > K
            pred = result
            if protocol.use_void:
                void = annotation == VOID_ID
                if void.any():
                    pred = np.where(void, np.uint8(0), result)
        if protocol.match_proposals:  # the number of proposals is known after the last frame
            gts.append(gt)
            preds.append(pred)
        else:
            j, f = evaluate_frame(gt, pred, num_objects, num_objects, all_pairs=False)
            j_rows.append(j.diagonal().copy())
            f_rows.append(f.diagonal().copy())

    if protocol.match_proposals:
        return _match_proposals(task.sequence, frames, gts, preds, num_objects, top_id)
    scores = SequenceScores(task.sequence, frames, num_objects, None)
    j_all = np.stack(j_rows, axis=-1)
    f_all = np.stack(f_rows, axis=-1)
    for k in range(num_objects):
        scores.objects.append(ObjectScores(k + 1, j_all[k].copy(), f_all[k].copy()))
    return scores


def _match_proposals(
    sequence: str,
    frames: list[str],
    gts: list[np.ndarray],
    preds: list[np.ndarray],
    num_objects: int,
    num_proposals: int,
) -> SequenceScores:
    """Score every (proposal, object) pair and keep the Hungarian matching of the pair means.

    Like the official tool, proposals are padded with empty ones up to the number of objects,
    and the matched pairs are listed in proposal order (the order the statistics are pooled in).
    """
    padded = max(num_proposals, num_objects)
    pairs = [
        evaluate_frame(gt, pred, num_objects, padded, all_pairs=True)
        for gt, pred in zip(gts, preds, strict=True)
    ]
    j_all = np.ascontiguousarray(np.stack([j for j, _ in pairs], axis=-1))  # (P, K, T)
    f_all = np.ascontiguousarray(np.stack([f for _, f in pairs], axis=-1))
    pair_means = (np.mean(j_all, axis=2) + np.mean(f_all, axis=2)) / 2
    rows, cols = linear_sum_assignment(-pair_means)
    scores = SequenceScores(sequence, frames, num_objects, num_proposals)
    for row, col in zip(rows, cols, strict=True):
        proposal = int(row) + 1 if row < num_proposals else None
        scores.objects.append(
            ObjectScores(int(col) + 1, j_all[row, col].copy(), f_all[row, col].copy(), proposal)
        )
    return scores
