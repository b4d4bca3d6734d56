"""Which tables a study's report holds, and which of their rows the study actually runs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import pandas as pd

from .layout import (
    FPS,
    JF,
    MEM,
    LayoutRow,
    TableLayout,
    run_label,
    table1_layout,
    table2_layout,
    with_checkpoints,
)
from .table import normalise_runs, select_runs

if TYPE_CHECKING:
    from ..study import Cell, Study

PAPER_TABLES = {"table1": table1_layout, "table2": table2_layout}


def _pairs(cells: Iterable[Cell]) -> pd.DataFrame:
    """One row per cell: its variant and activation as the runs' frame spells them."""
    records = [
        {
            "variant": c.config.model.variant,
            "activation": c.config.model.activation,
            "row": c.row,
            "cell_key": c.key,
        }
        for c in cells
    ]
    frame = pd.DataFrame.from_records(records, columns=["variant", "activation", "row", "cell_key"])
    return normalise_runs(frame)


def _bind(
    select: Mapping[str, str | tuple[str, ...]], planned: pd.DataFrame
) -> tuple[dict[str, str | tuple[str, ...]] | None, bool]:
    """``select`` narrowed to the cells of the first study row it matches.

    Returns (None, False) when no study row matches, and whether several study rows with
    different cells (e.g. the same variant at two settings) would have matched.
    """
    matched = select_runs(planned, select)
    if matched.empty:
        return None, False
    groups = list(
        dict.fromkeys(
            tuple(sorted(matched.loc[matched["row"] == row, "cell_key"]))
            for row in dict.fromkeys(matched["row"])
        )
    )
    return {**select, "cell_key": groups[0]}, len(groups) > 1


def bind_to_study(layout: TableLayout, cells: Sequence[Cell]) -> tuple[TableLayout, bool]:
    """The layout reading exactly the study's current cells, and whether any row was ambiguous.

    Each row (and the reference) reads the cells of the first study row that has its variant
    and activation; two study rows with the same config share their cells, so Table 1's (IV)
    and Table 2's "1 + elu" show the same runs. Rows the study does not run at all become
    "not in study" instead of "missing".
    """
    planned = _pairs(cells)
    rows = []
    ambiguous = False
    for row in layout.rows:
        select, several = _bind(row.select, planned)
        ambiguous |= several
        rows.append(replace(row, select=select or row.select, planned=select is not None))
    reference = layout.reference
    if reference is not None:
        bound, several = _bind(reference, planned)
        reference = bound or reference
    return replace(layout, rows=tuple(rows), reference=reference), ambiguous


def custom_layout(name: str, cells: Sequence[Cell], title: str | None = None) -> TableLayout:
    """A table of a study's own rows (no paper values), selected by their cells' keys."""
    rows: list[LayoutRow] = []
    reference = None
    for row_name in dict.fromkeys(cell.row for cell in cells):
        row_cells = [cell for cell in cells if cell.row == row_name]
        model = row_cells[0].config.model
        label = f"{row_name} ({run_label(model.variant, model.activation)})"
        select = {"cell_key": tuple(cell.key for cell in row_cells)}
        rows.append(LayoutRow(label=label, select=select))
        if reference is None and model.variant == "baseline":
            reference = (row_name, select)
    return TableLayout(
        name=name,
        title=title or f"Study table {name}",
        row_header="Row",
        columns=(JF, FPS, MEM),
        rows=tuple(rows),
        reference=reference[1] if reference else None,
        reference_label=f"row {reference[0]}" if reference else "",
        show_paper=False,
    )


def tables_of(cell: Cell) -> tuple[str, ...]:
    """The report tables a cell feeds (its row's ``table``: one name or several)."""
    return tuple(name for name in (cell.table or "").split(",") if name)


def _group(cell: Cell) -> str | None:
    tables = tables_of(cell)
    return tables[0] if tables else None


def layouts_for_study(study: Study, cells: Sequence[Cell]) -> tuple[TableLayout, ...]:
    """The paper's tables the study's rows belong to, then one table per other row group.

    When a paper row matches several study rows with different settings (e.g. a variant
    crossed with an axis), the paper table shows the first and a table of every study row
    follows, so nothing is hidden.

    Every table's J&F is the study's ``select``-ed checkpoint; the paper tables also show the
    other one beside it when the study's cells validate per epoch (so both exist).
    """
    layouts: list[TableLayout] = []
    named = [t for t in PAPER_TABLES if t == study.reference or study.rows_of_table(t)]
    any_ambiguous = False
    for table in named:
        layout, ambiguous = bind_to_study(PAPER_TABLES[table](), cells)
        if ambiguous:
            note = (
                " Several study rows share a variant here: each row shows the first of them; "
                "the table of all study rows lists every one."
            )
            layout = replace(layout, paper_note=layout.paper_note + note)
        any_ambiguous |= ambiguous
        layouts.append(with_checkpoints(layout, study.select, both=study.validates))
    others = [cell for cell in cells if not set(tables_of(cell)) & set(PAPER_TABLES)]
    for group in dict.fromkeys(_group(cell) for cell in others):
        group_cells = [cell for cell in others if _group(cell) == group]
        layout = custom_layout(group or study.name, group_cells)
        layouts.append(with_checkpoints(layout, study.select, both=False))
    if any_ambiguous:
        layout = custom_layout("all_rows", cells, "All study rows")
        layouts.append(with_checkpoints(layout, study.select, both=False))
    return tuple(layouts)
