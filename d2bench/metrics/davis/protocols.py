"""The three evaluation protocols and the settings that tell them apart."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .errors import EvalError

#: Boundary tolerance: the radius is this fraction of the frame's diagonal, rounded up.
BOUNDARY_THRESHOLD = 0.008

#: The unsupervised protocol rejects results with more proposals than this.
MAX_PROPOSALS = 20


@dataclass(frozen=True)
class Protocol:
    """How ground truth and results are read and which frames and pixels count."""

    name: str
    #: Folder under the DAVIS root holding the ground truth (then ``480p/<sequence>``).
    annotations: str
    #: One binary object per sequence (the union of all objects) instead of objects 1..K.
    binary: bool
    #: The first and the last frame of each sequence are not evaluated.
    skip_first_last: bool
    #: Ground-truth pixels labelled 255 are left out of J and F.
    use_void: bool
    #: Proposals are matched to objects (Hungarian) instead of id k scoring object k.
    match_proposals: bool
    #: Largest allowed result id; None: the number of objects (or any id when ``binary``).
    max_result_id: int | None
    description: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "boundary_threshold": BOUNDARY_THRESHOLD}


PROTOCOLS: dict[str, Protocol] = {
    "davis16": Protocol(
        name="davis16",
        annotations="Annotations",
        binary=True,
        skip_first_last=True,
        use_void=False,
        match_proposals=False,
        max_result_id=None,
        description="DAVIS 2016: one binary object per sequence (ground truth: objects 1..254 of "
        "a palette annotation, or 255 of a greyscale one; results: any non-zero id), first and "
        "last frame skipped, no void",
    ),
    "semi": Protocol(
        name="semi",
        annotations="Annotations",
        binary=False,
        skip_first_last=True,
        use_void=False,
        match_proposals=False,
        max_result_id=None,
        description="DAVIS 2017 semi-supervised: objects 1..K of the first annotation frame, "
        "first and last frame skipped, no void, statistics pooled over objects",
    ),
    "unsupervised": Protocol(
        name="unsupervised",
        annotations="Annotations_unsupervised",
        binary=False,
        skip_first_last=False,
        use_void=True,
        match_proposals=True,
        max_result_id=MAX_PROPOSALS,
        description=f"DAVIS 2017/2019 unsupervised: all frames, void excluded, at most "
        f"{MAX_PROPOSALS} proposals matched to objects by the Hungarian algorithm on "
        f"(mean J + mean F) / 2",
    ),
}


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``; an EvalError listing the known ones otherwise."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        known = ", ".join(PROTOCOLS)
        raise EvalError(f"unknown protocol {name!r}; expected one of: {known}") from None
