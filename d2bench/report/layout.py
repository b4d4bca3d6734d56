"""What a table shows: its rows (which runs fill each), its metric columns and its reference.

A layout is plain data, so a table can be built from any DataFrame of runs (tests need no
tracker) and the same code renders the paper's Tables 1 and 2 and a custom study's table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from ..core.contract import BEST_VAL_JF_MEAN, JF_MEAN, MEM_ALLOC_GB, PEAK_RSS_GB
from ..core.contract import FPS as FPS_KEY
from ..core.names import (
    ACTIVATION_LABELS,
    ACTIVATION_NAMES,
    DEFAULT_ACTIVATION,
    PAPER_LABELS,
    VARIANT_NAMES,
    takes_activation,
)
from . import paper

#: Variants whose dilation goes through an activation (Table 2 applies to them only).
DILATED_VARIANTS: tuple[str, ...] = tuple(v for v in VARIANT_NAMES if takes_activation(v))


@dataclass(frozen=True)
class MetricColumn:
    """One measured quantity: where it is in the runs' frame and how it is shown."""

    #: Short name used in CSV headers and paper-value look-ups ("jf", "fps", "mem").
    name: str
    header: str
    #: Frame columns to read, first one with any value wins (e.g. GPU memory, else CPU RSS).
    sources: tuple[str, ...]
    #: Multiplier from the tracked value to the shown one (fractions → percent: 100).
    scale: float = 1.0
    decimals: int = 1
    higher_is_better: bool = True
    unit: str = ""
    #: Whether the paper's value and Δ stand beside ours (in a layout that shows the paper's).
    compare_paper: bool = True


@dataclass(frozen=True)
class LayoutRow:
    """One table row: its label, extra text columns, which runs fill it, the paper's values."""

    label: str
    #: Filter on the runs' frame: column -> value, or a tuple of accepted values (all must match).
    select: Mapping[str, str | tuple[str, ...]]
    #: Paper value per metric column name; absent or None = not printed in the paper.
    paper: Mapping[str, float | None] = field(default_factory=dict)
    #: Text of the extra columns (e.g. the "Mod." mark), in the layout's ``extra_headers`` order.
    extras: tuple[str, ...] = ()
    #: False when the study has no row for it: shown as "not in study" rather than "missing".
    planned: bool = True


@dataclass(frozen=True)
class TableLayout:
    """A whole table: rows in display order, metric columns, the significance reference."""

    name: str
    title: str
    row_header: str
    columns: tuple[MetricColumn, ...]
    rows: tuple[LayoutRow, ...]
    extra_headers: tuple[str, ...] = ()
    #: Filter selecting the runs every row is tested against (need not be a shown row).
    reference: Mapping[str, str | tuple[str, ...]] | None = None
    reference_label: str = ""
    #: Two-sided significance threshold of the Welch t-test.
    alpha: float = 0.05
    #: One sentence on what the paper's numbers are, for the caption.
    paper_note: str = ""
    #: Whether the paper's value and the difference are shown (False for a study's own rows).
    show_paper: bool = True
    #: Which checkpoint the J&F columns come from, for the caption (see :func:`with_checkpoints`).
    checkpoint_note: str = ""

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row.extras) != len(self.extra_headers):
                raise ValueError(
                    f"layout {self.name!r}: row {row.label!r} has {len(row.extras)} extra "
                    f"values, the layout has {len(self.extra_headers)} extra columns"
                )
        if not 0 < self.alpha < 1:
            raise ValueError(f"layout {self.name!r}: alpha must be in (0, 1), got {self.alpha}")


JF = MetricColumn("jf", "J&F", (JF_MEAN,), scale=100.0, decimals=1, unit="%")
FPS = MetricColumn("fps", "FPS", (FPS_KEY,), decimals=2, unit="frames/s")
MEM = MetricColumn(
    "mem",
    "Mem (GB)",
    (MEM_ALLOC_GB, PEAK_RSS_GB),
    decimals=2,
    higher_is_better=False,
    unit="GB",
)

#: Header and source of the J&F column of each checkpoint a study can select.
_CHECKPOINT_JF = {
    "best-val": ("J&F best-val", BEST_VAL_JF_MEAN),
    "final": ("J&F final", JF_MEAN),
}
_CHECKPOINT_WORDS = {
    "best-val": (
        "J&F best-val: the weights of the epoch with the best J&F in the per-epoch validation, "
        "as the original release selects them (model_best_eval.pth); that validation runs on "
        "the evaluation split itself, so this number is selected on the evaluation set and "
        "biased upwards"
    ),
    "final": "J&F final: the last epoch's weights (unbiased)",
}


def with_checkpoints(layout: TableLayout, select: str, both: bool) -> TableLayout:
    """``layout`` with its J&F column reading the ``select``-ed checkpoint ("best-val" or
    "final") and, with ``both``, the other checkpoint's J&F beside it; the caption says which.

    The selected column keeps the name ``jf``, so the paper's value and Δ stand beside it; the
    other is ours alone (the paper reports one number per row).
    """
    if select not in _CHECKPOINT_JF:
        raise ValueError(f"select: unknown value {select!r}; allowed: best-val, final")
    shown = [select] + ([other for other in _CHECKPOINT_JF if other != select] if both else [])
    columns: list[MetricColumn] = []
    for column in layout.columns:
        if column.name != JF.name:
            columns.append(column)
            continue
        for index, checkpoint in enumerate(shown):
            header, source = _CHECKPOINT_JF[checkpoint]
            name = JF.name if index == 0 else f"{JF.name}_{checkpoint.replace('-', '_')}"
            columns.append(
                replace(JF, name=name, header=header, sources=(source,), compare_paper=index == 0)
            )
    note = "; ".join(_CHECKPOINT_WORDS[checkpoint] for checkpoint in shown) + "."
    if layout.show_paper and select != "best-val" and both:
        note += " The paper's number is most likely of the best-val kind (the original's test "
        note += "scripts load its best-validation checkpoint)."
    return replace(layout, columns=tuple(columns), checkpoint_note=note)


_MOD_MARK = {True: "✓", False: "✗", None: "–"}


def variant_selector(variant: str, activation: str | None = None) -> dict[str, str]:
    """The frame filter for a variant; dilated variants also pin the activation."""
    if variant in DILATED_VARIANTS:
        return {"variant": variant, "activation": activation or DEFAULT_ACTIVATION}
    return {"variant": variant}


def run_label(variant: str, activation: str | None = None, *, always: bool = False) -> str:
    """A short human label for a (variant, activation) pair, as used in figures.

    The activation is named when it is not the default, or always with ``always`` (when one
    figure shows the same variant with several activations).
    """
    label = PAPER_LABELS.get(variant, variant)
    named = always or activation != DEFAULT_ACTIVATION
    if variant in DILATED_VARIANTS and activation and named:
        label += f", {ACTIVATION_LABELS.get(activation, activation)}"
    return label


def table1_layout(row_filter: Mapping[str, str | tuple[str, ...]] | None = None) -> TableLayout:
    """The paper's Table 1: one row per variant, J&F, FPS and memory.

    ``row_filter`` is added to every row's selector (e.g. to keep one study's runs apart).
    """
    extra = dict(row_filter or {})
    rows = tuple(
        LayoutRow(
            label=PAPER_LABELS[variant],
            select={**variant_selector(variant), **extra},
            paper=dict(paper.TABLE1[variant]),
            extras=(_MOD_MARK[paper.MODULATION[variant]],),
        )
        for variant in VARIANT_NAMES
    )
    return TableLayout(
        name="table1",
        title="Table 1: conv variants in the two deepest refinement blocks",
        row_header="Variant",
        extra_headers=("Mod.",),
        columns=(JF, FPS, MEM),
        rows=rows,
        reference={**variant_selector("baseline"), **extra},
        reference_label=PAPER_LABELS["baseline"],
        paper_note=(
            f"Paper: DAVIS'16 val, FPS and memory at inference on a {paper.PAPER_HARDWARE}; "
            f"the original 3DC-Seg scores {paper.ORIGINAL_BASELINE_JF} J&F."
        ),
    )


def table2_layout(row_filter: Mapping[str, str | tuple[str, ...]] | None = None) -> TableLayout:
    """The paper's Table 2: variant (IV) with each dilation activation, J&F.

    Its rows are tested against its own "1 + elu" row (the paper's choice, the model of Table
    1's (IV)), not against a variant the table does not show.
    """
    extra = dict(row_filter or {})
    rows = tuple(
        LayoutRow(
            label=ACTIVATION_LABELS[activation],
            select={**variant_selector("d2conv3d_iv", activation), **extra},
            paper={"jf": paper.TABLE2[activation]},
        )
        for activation in ACTIVATION_NAMES
    )
    return TableLayout(
        name="table2",
        title="Table 2: dilation activation of D²Conv3D (IV)",
        row_header="Activation",
        columns=(JF,),
        rows=rows,
        reference={**variant_selector("d2conv3d_iv", DEFAULT_ACTIVATION), **extra},
        reference_label=f"the {ACTIVATION_LABELS[DEFAULT_ACTIVATION]} row",
        paper_note="Paper: DAVIS'16 val, variant (IV).",
    )
