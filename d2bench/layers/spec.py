"""The typed description of one layer variant (one row of the paper's Tables 1–2).

A spec says *what* replaces a 3×3×3 convolution; :mod:`.replace` decides *where*. Specs are
frozen and validated on construction so that a typo in a study configuration fails at once,
naming the field, instead of silently training the wrong model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NoReturn

from ..core.variants import CATALOGUE
from ..ops.geometry import KERNEL_TAPS
from .activations import canonical_activation

#: A layer family: the kind of a registered variant class (see :mod:`d2bench.core.variants`).
VariantKind = str
DilationAxes = Literal["", "s", "yx", "tyx"]
#: The dtype the sampling operator runs in under autocast (see :class:`.SampledConv3d`).
SamplingPrecision = Literal["autocast", "fp32"]

#: The package's kinds, in table order (``conv``, ``aspp``, ``dcn``, ``d2``); a spec accepts any
#: kind registered in the process, these and those registered at run time.
KINDS: tuple[str, ...] = CATALOGUE.kinds()
DILATION_AXES: tuple[str, ...] = ("", "s", "yx", "tyx")
SAMPLING_PRECISIONS: tuple[str, ...] = ("autocast", "fp32")

#: Number of predicted dilation channels per axes setting: one shared spatial value,
#: separate y and x, or separate t, y and x.
DILATION_CHANNELS: dict[str, int] = {"": 0, "s": 1, "yx": 2, "tyx": 3}

#: Free (t, y, x) offsets for each of the 27 taps of a deformable convolution.
OFFSET_CHANNELS = 3 * KERNEL_TAPS


def _fail(field: str, allowed: str, value: object) -> NoReturn:
    raise ValueError(f"VariantSpec.{field} must be {allowed}; got {value!r}")


@dataclass(frozen=True)
class VariantSpec:
    """One way of replacing a 3×3×3 convolution.

    Attributes:
        name: label of the variant (a registry name or anything the user chooses).
        kind: ``conv`` (left as is), ``aspp`` (ASPP-3D block), ``dcn`` (free offsets),
            ``d2`` (dynamic dilation), or the kind of a variant class registered at run time.
        modulation: predict a sigmoid mask per tap (``dcn`` and ``d2`` only).
        dilation_axes: ``d2`` only: ``s`` = (1, d, d), ``yx`` = (1, d_y, d_x),
            ``tyx`` = (d_t, d_y, d_x); empty for the other kinds.
        activation: ``d2`` only: dilation activation (see :data:`.ACTIVATIONS`; aliases are
            normalised to the canonical name); empty for the other kinds.
        blocks: dotted names of the sub-modules to convert; None = the whole module given.
        checkpoint_branch: recompute the deformation branch in backward instead of storing its
            activations (training only; ignored by kinds without a branch).
        sampling_precision: ``autocast`` runs the sampling operator in the autocast dtype (as
            ``nn.Conv3d``), ``fp32`` in float32 as the original's operator did (``dcn`` and
            ``d2`` only; ignored by the other kinds). A runtime setting, like
            ``checkpoint_branch``: it changes no weight.
    """

    name: str
    kind: VariantKind
    modulation: bool = False
    dilation_axes: DilationAxes = ""
    activation: str = ""
    blocks: tuple[str, ...] | None = None
    checkpoint_branch: bool = False
    sampling_precision: SamplingPrecision = "autocast"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            _fail("name", "a non-empty string", self.name)
        kinds = CATALOGUE.kinds()
        if self.kind not in kinds:
            _fail("kind", f"one of {', '.join(kinds)}", self.kind)
        if not isinstance(self.modulation, bool):
            _fail("modulation", "a bool", self.modulation)
        if self.modulation and self.kind in ("conv", "aspp"):
            _fail("modulation", f"False for kind {self.kind!r} (no deformation branch)", True)
        if not isinstance(self.checkpoint_branch, bool):
            _fail("checkpoint_branch", "a bool", self.checkpoint_branch)
        if self.sampling_precision not in SAMPLING_PRECISIONS:
            allowed = f"one of {', '.join(SAMPLING_PRECISIONS)}"
            _fail("sampling_precision", allowed, self.sampling_precision)
        self._check_d2_fields()
        self._normalise_blocks()

    def _check_d2_fields(self) -> None:
        if self.dilation_axes not in DILATION_AXES:
            _fail(
                "dilation_axes",
                "one of 's', 'yx', 'tyx' (or '' for kinds other than d2)",
                self.dilation_axes,
            )
        if self.kind != "d2":
            if self.dilation_axes:
                _fail(
                    "dilation_axes",
                    f"'' for kind {self.kind!r} (only d2 has dilation axes)",
                    self.dilation_axes,
                )
            if self.activation:
                _fail(
                    "activation",
                    f"'' for kind {self.kind!r} (only d2 uses an activation)",
                    self.activation,
                )
            return
        if not self.dilation_axes:
            _fail("dilation_axes", "one of 's', 'yx', 'tyx' for kind 'd2'", self.dilation_axes)
        try:
            canonical = canonical_activation(self.activation)
        except ValueError as error:
            raise ValueError(f"VariantSpec.{error}") from None
        object.__setattr__(self, "activation", canonical)

    def _normalise_blocks(self) -> None:
        blocks = self.blocks
        if blocks is None:
            return
        if isinstance(blocks, str) or not isinstance(blocks, Sequence):
            _fail(
                "blocks", "None or a sequence of dotted module names (not a single string)", blocks
            )
        if not all(isinstance(b, str) for b in blocks):
            _fail("blocks", "a sequence of strings", blocks)
        object.__setattr__(self, "blocks", tuple(blocks))

    @property
    def dilation_channels(self) -> int:
        """Predicted dilation channels: 1, 2 or 3 for ``d2``, else 0."""
        return DILATION_CHANNELS[self.dilation_axes]

    @property
    def layer_type(self) -> type:
        """The registered class that implements this spec's kind."""
        return CATALOGUE.layer(self.kind)

    @property
    def branch_channels(self) -> int:
        """Output channels of the deformation branch (0 where there is none): the layer class
        says (``branch_channels_for``)."""
        return self.layer_type.branch_channels_for(self)  # type: ignore[attr-defined]

    @property
    def replaces_convs(self) -> bool:
        """Whether applying this variant changes a model at all (the baseline does not)."""
        return self.layer_type.replaces_convs  # type: ignore[attr-defined]
