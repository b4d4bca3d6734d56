"""Study specs, their expansion into cells with stable keys, and the planner. Torch-free."""

from .cells import PROTOCOL_VERSION, Cell, cell_key, expand_cells
from .packaged import packaged_study_names, resolve_study_file
from .planner import CellRecord, CellState, Plan, PlannedCell, make_plan
from .signature import MACHINE_LOCAL_KEYS, CellInputs, experiment_signature
from .spec import (
    MEASUREMENTS,
    BackendDefaults,
    Resources,
    Study,
    StudyError,
    StudyRow,
    StudySpec,
    check_data_roots,
    load_study,
    parse_study,
)

__all__ = [
    "MACHINE_LOCAL_KEYS",
    "MEASUREMENTS",
    "PROTOCOL_VERSION",
    "BackendDefaults",
    "Cell",
    "CellInputs",
    "CellRecord",
    "CellState",
    "Plan",
    "PlannedCell",
    "Resources",
    "Study",
    "StudyError",
    "StudyRow",
    "StudySpec",
    "cell_key",
    "check_data_roots",
    "expand_cells",
    "experiment_signature",
    "load_study",
    "make_plan",
    "packaged_study_names",
    "parse_study",
    "resolve_study_file",
]
