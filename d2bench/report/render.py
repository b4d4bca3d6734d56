"""Print a built :class:`~d2bench.report.table.Table` as Markdown, LaTeX (booktabs) or CSV.

Every renderer shows the same things: per metric our mean ± std with n (bold when best, a
dagger when significant), the paper's value and the difference; rows without results say why.
When the table compares rows with the reference over sequences, a column after J&F holds Δ,
its corrected interval and the mark (▲ better, ▼ worse).
"""

from __future__ import annotations

import io

import pandas as pd

from .layout import MetricColumn
from .table import (
    BETTER_MARK,
    SIGNIFICANCE_MARK,
    WORSE_MARK,
    CellStats,
    Table,
    TableRow,
    paired_header,
)

#: Rows in these states have no numbers: the state itself is printed in place of ours.
_EMPTY_STATES = ("missing", "failed", "running", "not in study")
_DASH = "–"


def _compared(table: Table, column: MetricColumn) -> bool:
    """Whether ``column`` gets the paper's value and Δ beside ours."""
    return table.layout.show_paper and column.compare_paper


def _number(value: float, column: MetricColumn) -> str:
    return f"{value:.{column.decimals}f}"


def _signed(value: float, column: MetricColumn) -> str:
    text = f"{value:+.{column.decimals}f}"
    return text.replace("-", "−")


def value_text(cell: CellStats, column: MetricColumn) -> str:
    """``mean ± std`` (just the mean with one seed), in display units."""
    if cell.mean is None:
        return ""
    if cell.std is None:
        return _number(cell.mean, column)
    return f"{_number(cell.mean, column)} ± {_number(cell.std, column)}"


def count_text(cell: CellStats, row: TableRow) -> str:
    """``n=3`` plus how many seeds of the row failed or still run."""
    text = f"n={cell.n}"
    if row.n_failed:
        text += f", {row.n_failed} failed"
    if row.n_running:
        text += f", {row.n_running} running"
    return text


def _ours_plain(cell: CellStats, column: MetricColumn, row: TableRow) -> tuple[str, str, str]:
    """(value, mark, count) or (state, "", "") for rows/cells without a value."""
    if row.status in _EMPTY_STATES:
        return row.status, "", ""
    if cell.mean is None:
        return "n/a", "", ""
    mark = SIGNIFICANCE_MARK if cell.significant else ""
    return value_text(cell, column), mark, count_text(cell, row)


def _paper_text(cell: CellStats, column: MetricColumn) -> str:
    return _DASH if cell.paper is None else _number(cell.paper, column)


def _diff_text(cell: CellStats, column: MetricColumn) -> str:
    return _DASH if cell.diff is None else _signed(cell.diff, column)


def _paired_after(table: Table, column: MetricColumn) -> bool:
    """Whether the paired comparison's column follows ``column``."""
    return table.paired is not None and column.name == table.paired.column


def paired_text(row: TableRow, column: MetricColumn) -> tuple[str, str]:
    """(text, mark) of a row's paired comparison: ``+2.1 [+1.0, +3.2]`` and ▲, ▼ or ""; the
    row's state, ``reference``, ``n/a`` (no scores) or ``+0.4 (2 seq.)`` (no interval)."""
    if row.status in _EMPTY_STATES:
        return row.status, ""
    if row.is_reference:
        return "reference", ""
    found = row.comparison
    if found is None or found.delta is None:
        return "n/a", ""
    delta = _signed(found.delta, column)
    if found.low is None or found.high is None:
        return f"{delta} ({found.sequences} seq.)", ""
    mark = BETTER_MARK if found.mark > 0 else WORSE_MARK if found.mark < 0 else ""
    return f"{delta} [{_signed(found.low, column)}, {_signed(found.high, column)}]", mark


# --- Markdown ------------------------------------------------------------------------------


def _md_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*").replace("_", "\\_")


def _md_ours(cell: CellStats, column: MetricColumn, row: TableRow) -> str:
    value, mark, count = _ours_plain(cell, column, row)
    if not count:
        return value
    shown = f"**{value}**" if cell.best else value
    return f"{shown}{mark} ({count})"


def to_markdown(table: Table, caption: bool = True) -> str:
    """A GitHub-flavoured Markdown table, followed by its caption."""
    layout = table.layout
    headers = [layout.row_header, *layout.extra_headers]
    for column in table.columns:
        if _compared(table, column):
            headers += [f"{column.header} (ours)", f"{column.header} (paper)", "Δ"]
        else:
            headers.append(column.header)
        if _paired_after(table, column):
            headers.append(paired_header(table))
    n_text = 1 + len(layout.extra_headers)
    aligns = ["---"] * n_text + ["--:"] * (len(headers) - n_text)
    lines = [
        "| " + " | ".join(_md_escape(h) for h in headers) + " |",
        "|" + "|".join(aligns) + "|",
    ]
    for row in table.rows:
        cells = [_md_escape(row.label), *(_md_escape(e) for e in row.extras)]
        for column, cell in zip(table.columns, row.cells, strict=True):
            cells.append(_md_ours(cell, column, row))
            if _compared(table, column):
                cells += [_paper_text(cell, column), _diff_text(cell, column)]
            if _paired_after(table, column):
                text, mark = paired_text(row, column)
                cells.append(f"{text} {mark}" if mark else text)
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    if caption and table.caption:
        text += f"\n{_md_escape(table.caption)}\n"
    return text


# --- LaTeX -----------------------------------------------------------------------------------

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "|": r"\textbar{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "±": r"$\pm$",
    "−": r"$-$",
    "–": "--",
    "Δ": r"$\Delta$",
    "²": r"\textsuperscript{2}",
    "✓": r"\checkmark",
    "✗": r"$\times$",
    "†": r"$^\dagger$",
    "▲": r"$\blacktriangle$",
    "▼": r"$\blacktriangledown$",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
    "×": r"$\times$",
}


def latex_escape(text: str) -> str:
    """Text safe inside a LaTeX document (needs only booktabs and amssymb)."""
    return "".join(_LATEX_SPECIAL.get(char, char) for char in text)


def _tex_ours(cell: CellStats, column: MetricColumn, row: TableRow) -> str:
    value, mark, count = _ours_plain(cell, column, row)
    if not count:
        return r"\textit{" + latex_escape(value) + "}"
    shown = latex_escape(value)
    if cell.best:
        shown = r"\textbf{" + shown + "}"
    if mark:
        shown += r"$^\dagger$"
    return shown + r" {\scriptsize(" + latex_escape(count) + ")}"


def _tex_paired(row: TableRow, column: MetricColumn) -> str:
    text, mark = paired_text(row, column)
    if row.comparison is None or row.comparison.delta is None or row.is_reference:
        return r"\textit{" + latex_escape(text) + "}"
    return latex_escape(text) + (" " + latex_escape(mark) if mark else "")


def to_latex(table: Table, label: str | None = None) -> str:
    """A ``table`` float with a booktabs ``tabular``, ready to ``\\input`` (booktabs, amssymb)."""
    layout = table.layout
    n_text = 1 + len(layout.extra_headers)
    widths = [3 if _compared(table, column) else 1 for column in table.columns]
    n_paired = 1 if table.paired is not None else 0
    n_columns = n_text + sum(widths) + n_paired
    spec = "l" * n_text + "r" * (sum(widths) + n_paired)
    header_lines = []
    headers = [latex_escape(layout.row_header), *(latex_escape(h) for h in layout.extra_headers)]
    if any(width == 3 for width in widths):
        group_row = ["" for _ in range(n_text)]
        rules = []
        first = n_text + 1
        for column, width in zip(table.columns, widths, strict=True):
            if width == 3:
                group_row.append(r"\multicolumn{3}{c}{" + latex_escape(column.header) + "}")
                rules.append(rf"\cmidrule(lr){{{first}-{first + 2}}}")
                headers += ["Ours", "Paper", r"$\Delta$"]
            else:
                group_row.append("")
                headers.append(latex_escape(column.header))
            first += width
            if _paired_after(table, column):
                group_row.append("")
                headers.append(latex_escape(paired_header(table)))
                first += 1
        header_lines += [" & ".join(group_row) + r" \\", " ".join(rules)]
    else:
        for column in table.columns:
            headers.append(latex_escape(column.header))
            if _paired_after(table, column):
                headers.append(latex_escape(paired_header(table)))
    lines = [
        "% Generated by d2bench report; needs \\usepackage{booktabs,amssymb}.",
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        r"\caption{" + latex_escape(table.caption) + "}",
        r"\label{" + (label or f"tab:{layout.name}") + "}",
        r"\begin{tabular}{" + spec + "}",
        r"\toprule",
        *header_lines,
        " & ".join(headers) + r" \\",
        r"\midrule",
    ]
    for row in table.rows:
        cells = [latex_escape(row.label), *(latex_escape(e) for e in row.extras)]
        for column, cell in zip(table.columns, row.cells, strict=True):
            cells.append(_tex_ours(cell, column, row))
            if _compared(table, column):
                cells.append(latex_escape(_paper_text(cell, column)))
                cells.append(latex_escape(_diff_text(cell, column)))
            if _paired_after(table, column):
                cells.append(_tex_paired(row, column))
        if len(cells) != n_columns:
            raise AssertionError(f"row {row.label!r}: {len(cells)} cells for {n_columns} columns")
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


# --- CSV -------------------------------------------------------------------------------------


def to_frame(table: Table) -> pd.DataFrame:
    """One row per table row, numbers in display units, one column per statistic."""
    records = []
    for row in table.rows:
        record: dict[str, object] = {"label": row.label}
        for header, extra in zip(table.layout.extra_headers, row.extras, strict=True):
            record[header] = extra
        record.update(
            status=row.status,
            finished=row.n_finished,
            failed=row.n_failed,
            running=row.n_running,
        )
        for column, cell in zip(table.columns, row.cells, strict=True):
            prefix = column.name
            record[f"{prefix}_mean"] = cell.mean
            record[f"{prefix}_std"] = cell.std
            record[f"{prefix}_n"] = cell.n
            if _compared(table, column):
                record[f"{prefix}_paper"] = cell.paper
                record[f"{prefix}_diff"] = cell.diff
            record[f"{prefix}_p_welch"] = cell.p_value
            record[f"{prefix}_significant"] = cell.significant
            record[f"{prefix}_best"] = cell.best
            if _paired_after(table, column):
                record.update(_paired_record(row, prefix))
        records.append(record)
    return pd.DataFrame.from_records(records)


def _paired_record(row: TableRow, prefix: str) -> dict[str, object]:
    """``{prefix}_ref_*``: the paired comparison's numbers (empty where there are none)."""
    found = row.comparison
    mark = ""
    if found is not None:
        mark = "better" if found.mark > 0 else "worse" if found.mark < 0 else ""
    return {
        f"{prefix}_ref_delta": None if found is None else found.delta,
        f"{prefix}_ref_low": None if found is None else found.low,
        f"{prefix}_ref_high": None if found is None else found.high,
        f"{prefix}_ref_level": None if found is None else found.level,
        f"{prefix}_ref_p": None if found is None else found.p_value,
        f"{prefix}_ref_p_holm": None if found is None else found.p_holm,
        f"{prefix}_ref_mark": "reference" if row.is_reference else mark,
        f"{prefix}_ref_sequences": None if found is None else found.sequences,
        f"{prefix}_ref_seeds_paired": None if found is None else found.paired_seeds,
    }


def to_csv(table: Table) -> str:
    """The table as CSV text (full precision; empty fields where there is no value)."""
    buffer = io.StringIO()
    to_frame(table).to_csv(buffer, index=False)
    return buffer.getvalue()
