"""Boundary maps and the disk-dilation test of F, computed on crops and counted exactly.

F needs ``|b_pred ∧ dil(b_gt)|``: how many boundary pixels of one mask lie within the radius
``r`` of some boundary pixel of the other (dilation by the disk ``dy² + dx² ≤ r²``). Rather
than dilating a frame-sized bitmap, :class:`MaskBoundary` keeps the boundary pixels of one mask
as sorted keys: a point is in the dilation exactly when, for some row offset ``dy`` in
``[−r, r]``, the nearest boundary pixel of row ``y + dy`` is at a horizontal distance ``h`` with
``dy² + h² ≤ r²``. That costs ``2r + 1`` binary searches per point of the other boundary, and
all of it is integer arithmetic, so the counts equal those of a full-frame dilation.
"""

from __future__ import annotations

import math

import numpy as np

from .protocols import BOUNDARY_THRESHOLD


def boundary_radius(height: int, width: int, threshold: float = BOUNDARY_THRESHOLD) -> int:
    """``ceil(threshold · sqrt(H² + W²))``: 8 for 480×854, 9 for 480×910, 10 for 480×1152."""
    return math.ceil(threshold * math.sqrt(float(height * height + width * width)))


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """The DAVIS 1-pixel boundary of a boolean mask (shifted half a pixel to the origin).

    ``b = (s ⊕ e) ∨ (s ⊕ so) ∨ (s ⊕ se)`` with the east, south and south-east neighbours
    (0 outside); the last row keeps only ``s ⊕ e``, the last column only ``s ⊕ so``, and the
    bottom-right pixel is 0. On a crop grown by one pixel beyond the mask this gives the
    full-frame boundary restricted to the crop, as long as the crop's last row and column are
    either empty or the frame's own.
    """
    s = mask.astype(bool, copy=False)
    height, width = s.shape
    b = np.zeros_like(s)
    if height == 0 or width == 0:
        return b
    # interior: all three neighbours exist
    inner = s[:-1, :-1]
    b[:-1, :-1] = (inner ^ s[:-1, 1:]) | (inner ^ s[1:, :-1]) | (inner ^ s[1:, 1:])
    # last row: east neighbour only; last column: south neighbour only
    b[-1, :-1] = s[-1, :-1] ^ s[-1, 1:]
    b[:-1, -1] = s[:-1, -1] ^ s[1:, -1]
    b[-1, -1] = False
    return b


def grown_box(
    rows: slice, cols: slice, height: int, width: int, margin: int = 1
) -> tuple[slice, slice]:
    """A bounding box (slices) grown by ``margin`` pixels on every side, clipped to the frame."""
    return (
        slice(max(rows.start - margin, 0), min(rows.stop + margin, height)),
        slice(max(cols.start - margin, 0), min(cols.stop + margin, width)),
    )


def key_stride(width: int, radius: int) -> int:
    """Row stride of the boundary keys ``y · stride + x``: wide enough that two pixels of
    different rows are always more than ``radius`` apart in key space."""
    return width + 2 * radius + 2


class MaskBoundary:
    """The boundary pixels of one mask in frame coordinates, and its dilation test.

    Build it with :meth:`from_crop`. ``count`` is ``|b|``; :meth:`count_within` counts the
    pixels of another boundary inside this one's dilation by the disk of ``radius``. Pixels
    are kept as sorted keys ``y · stride + x`` (row-major, the order ``np.nonzero`` gives), so
    the nearest boundary pixel of a row, left or right of a column, is one binary search away.
    """

    __slots__ = ("count", "keys", "radius", "stride", "x0", "x1", "xs", "y0", "y1", "ys")

    def __init__(self, ys: np.ndarray, xs: np.ndarray, radius: int, stride: int) -> None:
        self.ys = ys.astype(np.int64, copy=False)
        self.xs = xs.astype(np.int64, copy=False)
        self.radius = radius
        self.stride = stride
        self.count = int(ys.size)
        self.keys = self.ys * stride + self.xs
        if self.count:
            self.y0, self.y1 = int(self.ys[0]), int(self.ys[-1])
            self.x0, self.x1 = int(self.xs.min()), int(self.xs.max())
        else:
            self.y0 = self.y1 = self.x0 = self.x1 = 0

    @classmethod
    def from_crop(
        cls, crop_mask: np.ndarray, top: int, left: int, radius: int, stride: int
    ) -> MaskBoundary:
        """Boundary of a mask given as its crop (grown by 1 px, see :func:`boundary_map`)."""
        ys, xs = np.nonzero(boundary_map(crop_mask))
        return cls(ys + top, xs + left, radius, stride)

    @classmethod
    def empty(cls, radius: int, stride: int) -> MaskBoundary:
        none = np.zeros(0, dtype=np.int64)
        return cls(none, none, radius, stride)

    def count_within(self, other: MaskBoundary) -> int:
        """``|b_other ∧ dil(b_self)|``: pixels of ``other`` within ``radius`` of this boundary.

        For each pixel of ``other`` and each row offset ``dy`` in ``[−r, r]``, the horizontal
        distance ``h`` to the nearest pixel of this boundary in row ``y + dy`` comes from a
        binary search; the pixel counts when some ``dy² + h² ≤ r²``.
        """
        if not self.count or not other.count:
            return 0
        r = self.radius
        if (
            other.y1 < self.y0 - r
            or other.y0 > self.y1 + r
            or other.x1 < self.x0 - r
            or other.x0 > self.x1 + r
        ):
            return 0
        ys, xs = other.ys, other.xs
        near = (ys >= self.y0 - r) & (ys <= self.y1 + r) & (xs >= self.x0 - r) & (xs <= self.x1 + r)
        if not near.all():
            ys, xs = ys[near], xs[near]
            if not ys.size:
                return 0
        offsets = np.arange(-r, r + 1, dtype=np.int64)
        targets = ((ys[None, :] + offsets[:, None]) * self.stride + xs[None, :]).ravel()
        index = np.searchsorted(self.keys, targets)
        last = self.count - 1
        # keys at or after each target, and before it; a gap above r means none in reach
        after = self.keys[np.minimum(index, last)] - targets
        before = targets - self.keys[np.maximum(index - 1, 0)]
        after[after < 0] = r + 1
        before[before < 0] = r + 1
        gap = np.minimum(np.minimum(after, before), r + 1).reshape(offsets.size, -1)
        squared = gap * gap + (offsets * offsets)[:, None]
        return int(np.count_nonzero(squared.min(axis=0) <= r * r))
