"""What ``d2bench measure`` measures: one finished cell per row, its evaluated checkpoint.

FPS and memory depend on the network's shape and the inference settings, not on the trained
weights' values, so one finished cell per row stands for the row (its lowest finished seed).
Torch-free: nothing here loads a checkpoint, it only names the file.
"""

from __future__ import annotations

from pathlib import Path

from ..core.measurement import MeasureTarget, evaluated_checkpoint, read_finished_result
from ..study.cells import Cell
from ..study.spec import Study


class MeasurePlanError(ValueError):
    """The study cannot be measured (nothing finished); one line saying what to do."""


def plan_targets(
    study: Study, cells: list[Cell], runs_dir: Path
) -> tuple[list[MeasureTarget], list[str]]:
    """One target per row that has a finished cell (its lowest seed), and the rows without."""
    targets: list[MeasureTarget] = []
    unmeasured: list[str] = []
    for row in study.rows:
        row_cells = sorted((c for c in cells if c.row == row), key=lambda c: c.seed)
        for cell in row_cells:
            cell_dir = cell.cell_dir(runs_dir).resolve()
            result = read_finished_result(cell_dir, cell.key)
            if result is None:
                continue
            checkpoint = evaluated_checkpoint(cell_dir, result)
            if checkpoint is None and cell.config.train.epochs > 0:
                continue  # trained, but its checkpoints are gone: nothing to load
            config = cell.config.model_dump(mode="json")
            root = Path(config["data"]["root"]).expanduser().resolve()
            config["data"] = {**config["data"], "root": str(root)}
            targets.append(
                MeasureTarget(
                    row=row,
                    seed=cell.seed,
                    key=cell.key,
                    row_keys=tuple(c.key for c in row_cells),
                    variant=cell.config.model.variant,
                    activation=cell.config.model.activation,
                    cell_dir=str(cell_dir),
                    checkpoint=None if checkpoint is None else str(checkpoint),
                    config=config,
                )
            )
            break
        else:
            unmeasured.append(row)
    if not targets:
        raise MeasurePlanError(
            f"study {study.name}: no finished cell under {runs_dir / 'cells'} to measure "
            f"(run `d2bench run {study.path or study.name}` first, or pass --runs-dir)"
        )
    return targets, unmeasured
