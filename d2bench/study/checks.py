"""Study checks that the schema alone cannot make: row tables, synthetic sizes, twin rows.

Each returns quietly or raises :class:`StudyError` with one line, ``source: key.path: what is
wrong; allowed: ...``, so that ``plan`` and ``run`` refuse a study before anything is written.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..core.config import unknown_key_message

if TYPE_CHECKING:
    from .spec import StudyRow

#: The paper tables the report knows; any other plain name makes a table of the study's own.
PAPER_TABLES: tuple[str, ...] = ("table1", "table2")
_PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+\-]*$")
#: ``Table1``, ``table 3``, ``tab_2``: a paper table spelled wrong, not a table of one's own.
_TABLE_LIKE = re.compile(r"^tab(le)?[\s_.\-]*\d+$", re.IGNORECASE)


class StudyError(ValueError):
    """A study that cannot be run; the message names the key path and what is allowed."""


def check_row_tables(table: Any, where: str, source: str) -> tuple[str, ...]:
    """The tables a row's ``table`` names (one name or a list), refusing misspelt paper tables.

    The report shows rows of ``table1``/``table2`` in the paper's tables and groups any other
    name into a table of its own, so a typo such as ``tabel1`` would silently move a row out of
    the paper table: a name close to a paper table's is refused.
    """
    if table is None:
        return ()
    names = table if isinstance(table, list) else [table]
    allowed = f"allowed: {', '.join(PAPER_TABLES)}, or a name of your own for a separate table"
    for name in names:
        if not isinstance(name, str) or not _PLAIN.match(name):
            raise StudyError(
                f"{source}: {where}.table: must be a table name (letters, digits, . _ + -) or "
                f"a list of them; got {name!r}; {allowed}"
            )
        if name in PAPER_TABLES:
            continue
        close = difflib.get_close_matches(name.lower(), PAPER_TABLES, n=1, cutoff=0.75)
        if close or _TABLE_LIKE.match(name):
            guess = f" (did you mean {close[0]!r}?)" if close else ""
            raise StudyError(
                f"{source}: {where}.table: {name!r} looks like a paper table but is not "
                f"one{guess}; {allowed} (unlike these)"
            )
    if len(set(names)) != len(names):
        raise StudyError(f"{source}: {where}.table: lists a table twice; got {table!r}")
    return tuple(names)


def check_synthetic_data(value: Any, source: str) -> None:
    """``synthetic_data``: false, true, or SynthSpec fields within the generator's bounds."""
    from ..data.spec import SynthSpec

    allowed = tuple(item.name for item in dataclasses.fields(SynthSpec))
    if isinstance(value, bool):
        return
    if not isinstance(value, dict):
        raise StudyError(
            f"{source}: synthetic_data: must be true, false or a mapping of "
            f"{', '.join(allowed)}; got {value!r}"
        )
    for key in value:
        if key not in allowed:
            message = unknown_key_message(key, allowed)
            raise StudyError(f"{source}: synthetic_data.{key}: {message}")
    problems = SynthSpec.problems(value)
    if problems:
        key, text = problems[0]
        raise StudyError(f"{source}: synthetic_data.{key}: {text}")


def check_distinct_configs(rows: Sequence[StudyRow], indices: Sequence[int], source: str) -> None:
    """Refuse two rows whose cells would be the same cells (the same cell key).

    They would share one cell folder and key, yet be scheduled as two runs and shown as two
    identical table rows. The comparison goes through :func:`cell_key`, so whatever the key
    leaves out (machine-local settings) cannot tell two rows apart either. The data and weights
    stand in by their paths here, not their digests: validation reads nothing from disk.
    """
    from .cells import cell_key
    from .signature import CellInputs

    first: dict[str, tuple[int, str]] = {}
    for row, index in zip(rows, indices, strict=True):
        model, data = row.config.model, row.config.data
        key = cell_key(row.config, CellInputs(data=data.root, weights=model.weights))
        if key in first:
            other_index, other = first[key]
            raise StudyError(
                f"{source}: rows[{index}]: row {row.name!r} has the same configuration as row "
                f"{other!r} (rows[{other_index}]), so both would run the same cells (key {key}); "
                "remove one, change a setting, or list both tables on one row "
                "(table: [table1, table2])"
            )
        first[key] = (index, row.name)


def check_gpus_reserved(
    rows: Sequence[StudyRow], indices: Sequence[int], reserved: int, source: str
) -> None:
    """Refuse a row that trains on more GPUs than a cell reserves.

    A cell with ``train.gpus: N > 1`` starts N ``torchrun`` ranks on the GPUs its worker was
    given; the Ray and SLURM backends give every cell of a study ``resources.gpus``, so with fewer
    the ranks would share or miss devices and fail only after the cell was scheduled.
    """
    for row, index in zip(rows, indices, strict=True):
        wanted = row.config.train.gpus
        if wanted > 1 and wanted > reserved:
            raise StudyError(
                f"{source}: rows[{index}].train.gpus: row {row.name!r} trains on {wanted} GPUs "
                f"but each cell reserves resources.gpus = {reserved}; set resources.gpus to at "
                f"least {wanted} (every cell of a study reserves the same), or put the row in a "
                "study of its own"
            )
