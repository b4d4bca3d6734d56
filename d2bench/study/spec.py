"""The study spec: a YAML file naming a base cell config, rows as deltas on it, seeds and resources.

The paper's tables are lists of named rows, not Cartesian grids, so a study is a list of rows,
each a partial cell config merged onto ``base``; optional ``axes`` cross every row with a few
values of one key. Every problem is reported before anything runs, as ``key.path: message``,
because a study that fails after an hour of scheduling wastes a cluster allocation.
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..core.config import (
    CellConfig,
    Int,
    Real,
    Seed,
    describe_validation_error,
    unknown_key_message,
)
from ..core.yaml_files import YamlFileError, read_yaml_file
from .checks import (
    StudyError,
    check_distinct_configs,
    check_gpus_reserved,
    check_row_tables,
    check_synthetic_data,
)
from .interpolate import InterpolationError, empty_references, interpolate
from .packaged import resolve_study_file

MEASUREMENTS: tuple[str, ...] = ("jf", "fps", "memory", "oob")
BACKENDS: tuple[str, ...] = ("local", "ray", "slurm")
REFERENCE_TABLES: tuple[str, ...] = ("table1", "table2")
#: Which checkpoint's J&F a study's tables lead with: the best per-epoch validation (as
#: released; selected on the evaluation split itself) or the final epoch's (unbiased).
SELECTIONS: tuple[str, ...] = ("best-val", "final")
#: Keys a row may hold besides the sections of a cell config.
ROW_FIELDS: tuple[str, ...] = ("name", "table", "label")
CONFIG_SECTIONS: tuple[str, ...] = tuple(CellConfig.model_fields)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+\-]*$")
#: A study name names files (``runs/_backend/<study>.lock``) and an MLflow experiment.
MAX_NAME_LENGTH = 100
MAX_SEEDS = 1000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Resources(_Strict):
    """What one cell needs; the Ray and SLURM backends reserve exactly this."""

    gpus: Int = Field(0, ge=0, le=64)
    cpus: Int = Field(1, ge=1, le=1024)
    memory_gb: Real = Field(4.0, gt=0, le=4096)
    #: At most 30 days.
    time_min: Int = Field(60, ge=1, le=43_200)


class BackendDefaults(_Strict):
    """Defaults for ``d2bench run``; the command line overrides each."""

    name: Literal["local", "ray", "slurm"] = "local"
    #: Cluster profile, ``slurm/<profile>.yaml`` (or a path to such a file).
    slurm_profile: str = Field("test-cluster", min_length=1)
    ray_address: str | None = Field(None, min_length=1)
    #: Ray Tune retries of a trial whose worker died (resumes from the cell's checkpoint).
    max_failures: Int = Field(2, ge=0, le=100)
    #: Cap on cells running at once (None: as many as the resources allow).
    max_concurrent: Int | None = Field(None, ge=1, le=100_000)


class StudySpec(_Strict):
    """The validated top level of a study file (after ``extends`` and interpolation)."""

    name: str
    description: str = ""
    reference: Literal["table1", "table2"] | None = None
    base: dict[str, Any]
    rows: list[dict[str, Any]] = Field(min_length=1, max_length=10_000)
    axes: dict[str, list[Any]] = Field(default_factory=dict)
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1, max_length=MAX_SEEDS)
    measure: list[Literal["jf", "fps", "memory", "oob"]] | None = None
    #: The checkpoint whose J&F the tables show first (see :data:`SELECTIONS`). A study-level
    #: choice, not a cell config key: every cell that validates records the J&F of both
    #: checkpoints, so switching ``select`` re-reports the same cells and trains nothing.
    select: Literal["best-val", "final"] = "final"
    resources: Resources = Resources()
    backend: BackendDefaults = BackendDefaults()
    #: Where cell folders go (relative paths: to the working directory).
    runs_dir: str = Field("runs", min_length=1)
    #: Generate synthetic DAVIS-format data at each data root when it is missing: ``true``
    #: (the generator's defaults) or a mapping of :class:`d2bench.data.SynthSpec` fields
    #: (checked by :func:`check_synthetic_data`, which names the field at fault).
    synthetic_data: Any = False

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not 1 <= len(value) <= MAX_NAME_LENGTH:
            raise ValueError(
                f"must be 1 to {MAX_NAME_LENGTH} characters (it names files and an MLflow "
                f"experiment); got {len(value)}"
            )
        if not _NAME.match(value):
            raise ValueError("must be letters, digits and . _ + - (it names an MLflow experiment)")
        return value

    def synth_spec(self) -> Any:
        """The :class:`d2bench.data.SynthSpec` to generate, or None."""
        if self.synthetic_data is False:
            return None
        from ..data.spec import SynthSpec

        return (
            SynthSpec(**self.synthetic_data)
            if isinstance(self.synthetic_data, dict)
            else SynthSpec()
        )

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError(f"seeds must be distinct; got {value}")
        return value


@dataclass(frozen=True)
class StudyRow:
    """One named row of a study (after crossing with ``axes``)."""

    name: str
    config: CellConfig
    #: The report tables the row belongs to (the row's ``table``, else the study's reference).
    tables: tuple[str, ...] = ()
    label: str | None = None

    @property
    def table(self) -> str | None:
        return self.tables[0] if self.tables else None


@dataclass(frozen=True)
class Study:
    """A validated study: its rows in order, seeds, resources and backend defaults."""

    name: str
    path: Path | None
    spec: StudySpec
    row_specs: tuple[StudyRow, ...]
    #: The resolved spec as YAML (what the study's parent run stores).
    text: str = field(repr=False, default="")

    @property
    def rows(self) -> tuple[str, ...]:
        return tuple(row.name for row in self.row_specs)

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(self.spec.seeds)

    @property
    def reference(self) -> str | None:
        return self.spec.reference

    @property
    def measure(self) -> tuple[str, ...]:
        """What every cell measures (jf, fps, memory, oob), from ``measure`` or the base."""
        if self.spec.measure is not None:
            return tuple(name for name in MEASUREMENTS if name in self.spec.measure)
        flags = self.row_specs[0].config.measure
        return tuple(name for name in MEASUREMENTS if getattr(flags, name))

    @property
    def select(self) -> str:
        return self.spec.select

    @property
    def validates(self) -> bool:
        """Whether every row validates per epoch (so its cells record both checkpoints)."""
        return all(
            row.config.train.validate_every_epochs > 0 and row.config.train.epochs > 0
            for row in self.row_specs
        )

    @property
    def resources(self) -> Resources:
        return self.spec.resources

    @property
    def backend(self) -> BackendDefaults:
        return self.spec.backend

    @property
    def runs_dir(self) -> Path:
        return Path(self.spec.runs_dir)

    def row(self, name: str) -> StudyRow:
        for row in self.row_specs:
            if row.name == name:
                return row
        raise KeyError(f"study {self.name} has no row {name!r}; rows: {', '.join(self.rows)}")

    def row_config(self, name: str) -> CellConfig:
        """The resolved cell config of a row (seed: the base's; cells set their own)."""
        return self.row(name).config

    def row_variant(self, name: str) -> str:
        return self.row_config(name).model.variant

    def row_activation(self, name: str) -> str | None:
        return self.row_config(name).model.activation

    def row_table(self, name: str) -> str | None:
        """The first table of a row (most rows belong to one)."""
        return self.row(name).table

    def row_tables(self, name: str) -> tuple[str, ...]:
        return self.row(name).tables

    def rows_of_table(self, table: str) -> tuple[str, ...]:
        """The rows that feed one report table, in study order (a row may feed several)."""
        return tuple(row.name for row in self.row_specs if table in row.tables)

    def data_roots(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(row.config.data.root for row in self.row_specs))


def deep_merge(base: Mapping[str, Any], delta: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``delta``, recursing into mappings (lists and scalars replace)."""
    merged = copy.deepcopy(dict(base))
    for key, value in delta.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _read_yaml_mapping(path: Path) -> dict[str, Any]:
    try:
        data = read_yaml_file(path, "study file")
    except YamlFileError as error:
        raise StudyError(str(error)) from None
    if data is None:
        raise StudyError(f"{path}: the file is empty; a study needs name, base and rows")
    if not isinstance(data, dict):
        raise StudyError(f"{path}: the top level must be a mapping (name, base, rows, ...)")
    return data


def read_spec_tree(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The raw mapping of a study file with its ``extends`` chain merged (the file wins)."""
    path = path.resolve()
    if path in _seen:
        chain = " -> ".join(str(item) for item in (*_seen, path))
        raise StudyError(f"extends: circular chain {chain}")
    data = _read_yaml_mapping(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str) or not parent:
        raise StudyError(f"{path}: extends: must be the path of a YAML file; got {parent!r}")
    parent_path = (path.parent / parent).resolve()
    if not parent_path.is_file():
        raise StudyError(f"{path}: extends: file {parent_path.name} not found next to the study")
    merged = read_spec_tree(parent_path, (*_seen, path))
    return deep_merge(merged, data)


@dataclass(frozen=True)
class _Context:
    """Where messages point: the file, and notes on values that came from empty variables."""

    source: str
    hints: Mapping[str, str] = field(default_factory=dict)

    def describe(self, error: ValidationError, model: type[BaseModel], prefix: str = "") -> str:
        return describe_validation_error(error, self.source, model, prefix, dict(self.hints))


def _validate_spec(tree: dict[str, Any], context: _Context) -> StudySpec:
    try:
        spec = StudySpec.model_validate(tree)
    except ValidationError as error:
        raise StudyError(context.describe(error, StudySpec)) from None
    check_synthetic_data(spec.synthetic_data, context.source)
    return spec


def _check_row_keys(index: int, row: dict[str, Any], source: str) -> str:
    name = row.get("name")
    where = f"rows[{index}]"
    if not isinstance(name, str) or not name:
        raise StudyError(f"{source}: {where}.name: every row needs a name (a non-empty string)")
    if not _NAME.match(name):
        raise StudyError(
            f"{source}: {where}.name: {name!r} is not a plain name (letters, digits, . _ + -)"
        )
    allowed = (*ROW_FIELDS, *CONFIG_SECTIONS)
    for key in row:
        if key not in allowed:
            raise StudyError(
                f"{source}: {where}.{key}: in row {name!r}: {unknown_key_message(key, allowed)}"
            )
    if "label" in row and not isinstance(row["label"], str):
        raise StudyError(f"{source}: {where}.label: must be a string; got {row['label']!r}")
    return name


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    parts = dotted.split(".")
    delta: dict[str, Any] = {}
    node = delta
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return deep_merge(tree, delta)


def _check_axis_key(dotted: str, source: str) -> None:
    section, _, leaf = dotted.partition(".")
    model = CellConfig.model_fields.get(section)
    sub = getattr(model, "annotation", None) if model else None
    fields = getattr(sub, "model_fields", None)
    if model is None or not leaf or fields is None or leaf not in fields:
        keys = [
            f"{name}.{key}"
            for name in CONFIG_SECTIONS
            for key in getattr(CellConfig.model_fields[name].annotation, "model_fields", {})
        ]
        close = difflib.get_close_matches(dotted, keys, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise StudyError(
            f"{source}: axes.{dotted}: not a config key{hint}; write section.key with section "
            "one of " + ", ".join(name for name in CONFIG_SECTIONS if name != "device")
        )


def _axis_label(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _expand_rows(spec: StudySpec, context: _Context) -> tuple[StudyRow, ...]:
    source = context.source
    try:
        CellConfig.model_validate(spec.base)
    except ValidationError as error:
        raise StudyError(context.describe(error, CellConfig, "base")) from None
    measure_delta: dict[str, Any] = {}
    if spec.measure is not None:
        measure_delta = {"measure": {name: name in spec.measure for name in MEASUREMENTS}}
    for dotted, values in spec.axes.items():
        _check_axis_key(dotted, source)
        if not values:
            raise StudyError(f"{source}: axes.{dotted}: needs at least one value")

    seen: dict[str, int] = {}
    rows: list[StudyRow] = []
    indices: list[int] = []
    for index, raw in enumerate(spec.rows):
        name = _check_row_keys(index, raw, source)
        if name in seen:
            raise StudyError(
                f"{source}: rows[{index}].name: duplicate row name {name!r} "
                f"(also rows[{seen[name]}]); row names must be unique"
            )
        seen[name] = index
        delta = {key: value for key, value in raw.items() if key not in ROW_FIELDS}
        merged = deep_merge(deep_merge(spec.base, delta), measure_delta)
        own_tables = check_row_tables(raw.get("table"), f"rows[{index}]", source)
        tables = own_tables if "table" in raw else ((spec.reference,) if spec.reference else ())
        for axis_name, axis_tree in _axis_combinations(merged, spec.axes, name):
            try:
                config = CellConfig.model_validate(axis_tree)
            except ValidationError as error:
                raise StudyError(context.describe(error, CellConfig, f"rows[{index}]")) from None
            rows.append(StudyRow(axis_name, config, tables, raw.get("label")))
            indices.append(index)
    names = [row.name for row in rows]
    if len(set(names)) != len(names):
        raise StudyError(f"{source}: axes: crossing rows with axes gives duplicate row names")
    check_distinct_configs(rows, indices, source)
    check_gpus_reserved(rows, indices, spec.resources.gpus, source)
    if spec.select == "best-val":
        _check_rows_validate(rows, indices, source)
    return tuple(rows)


def _check_rows_validate(rows: list[StudyRow], indices: list[int], source: str) -> None:
    """``select: best-val`` needs a validated checkpoint in every cell."""
    for row, index in zip(rows, indices, strict=True):
        train = row.config.train
        if train.validate_every_epochs < 1 or train.epochs < 1:
            key = "validate_every_epochs" if train.epochs >= 1 else "epochs"
            raise StudyError(
                f"{source}: rows[{index}].train.{key}: select: best-val needs per-epoch "
                f"validation, and row {row.name!r} has train.epochs {train.epochs}, "
                f"train.validate_every_epochs {train.validate_every_epochs}; set both ≥ 1, "
                "or select: final"
            )


def _axis_combinations(
    tree: dict[str, Any], axes: dict[str, list[Any]], row_name: str
) -> list[tuple[str, dict[str, Any]]]:
    combos: list[tuple[str, dict[str, Any]]] = [(row_name, tree)]
    for dotted, values in axes.items():
        leaf = dotted.rsplit(".", 1)[-1]
        combos = [
            (f"{name}/{leaf}={_axis_label(value)}", _set_dotted(item, dotted, value))
            for name, item in combos
            for value in values
        ]
    return combos


def parse_study(
    tree: dict[str, Any],
    source: str = "study",
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Study:
    """Validate a raw study mapping (``extends`` already merged) into a :class:`Study`."""
    try:
        resolved = interpolate(tree, environ)
    except InterpolationError as error:
        raise StudyError(f"{source}: {error}") from None
    context = _Context(source, empty_references(tree, environ))
    spec = _validate_spec(resolved, context)
    rows = _expand_rows(spec, context)
    text = yaml.safe_dump(resolved, sort_keys=False)
    return Study(spec.name, path, spec, rows, text)


def load_study(
    path: str | Path, *, check_data: bool = False, environ: Mapping[str, str] | None = None
) -> Study:
    """Read, interpolate and validate a study file (:class:`StudyError` on any problem).

    ``path`` may also be a packaged study's name (``smoke``; see :mod:`.packaged`).
    ``check_data`` also requires every data root to exist (unless the study generates synthetic
    data), which ``d2bench run`` asks for and read-only commands such as ``plan`` do not.
    """
    path = resolve_study_file(path)
    study = parse_study(read_spec_tree(path), str(path), path, environ)
    if check_data:
        check_data_roots(study)
    return study


def check_data_roots(study: Study) -> None:
    """Fail when a row's data root is missing (synthetic studies generate theirs instead)."""
    if study.spec.synthetic_data is not False:
        return
    for row in study.row_specs:
        root = Path(row.config.data.root)
        if not root.is_dir():
            source = study.path or study.name
            raise StudyError(
                f"{source}: rows[{row.name}].data.root: data root {root} does not exist "
                "(set DAVIS_ROOT or data.root to a DAVIS folder, or set synthetic_data: true)"
            )
