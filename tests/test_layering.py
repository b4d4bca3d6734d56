"""The package's floors: every import points down (or sideways within a floor), never up.

Parsed from the source, not imported, so a lazy import inside a function counts as much as one at
the top of a module: it runs back up just the same when the function is called. The one sanctioned
exception is named below with its reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "d2bench"

#: Floor of each sub-package (and top-level module), lowest first. Same floor: may import each
#: other. The orchestration floor (study, launch, tracking, report) stands on the torch-free
#: foundation and on ``data``'s torch-free spec and digest only.
FLOORS: dict[str, int] = {
    "core": 0,
    "data": 1,
    "ops": 1,
    "layers": 2,
    "models": 3,
    "engine": 4,
    "metrics": 5,
    "runner": 6,
    "study": 10,
    "tracking": 10,
    "launch": 10,
    "report": 10,
    "bench": 20,
    "operator_demo": 20,
    "commands": 30,
    "cli": 30,
    "__main__": 30,
    "__init__": 0,
    "__version__": 0,
}

#: Torch floors the orchestration floor must not reach (data's torch-free modules it may).
TORCH_FLOORS = {"ops", "layers", "models", "engine", "metrics", "runner", "bench"}

#: (importing module prefix, imported module prefix): why it may point up.
SANCTIONED = {
    ("d2bench.launch.task", "d2bench.runner"): "the worker process runs its cell",
    ("d2bench.launch.task", "d2bench.engine.signals"): "the worker process catches a preemption",
    ("d2bench.launch.measure_job", "d2bench.runner"): "the measuring job runs its rows",
    ("d2bench.launch.measure_backends", "d2bench.runner"): "a failed row's error type",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, text: str | None = None) -> list[tuple[int, str]]:
    """(line, absolute module) of every d2bench import in ``path``, lazy ones included."""
    module = _module_name(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: list[tuple[int, str]] = []
    source = path.read_text() if text is None else text
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not node.module:  # ``from .. import ops``: each name may be a module
                found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
                continue
            found.append((node.lineno, target))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return [(line, name) for line, name in found if name.startswith("d2bench.")]


def _floor_name(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _floor(module: str) -> int:
    name = _floor_name(module)
    if name not in FLOORS:
        raise AssertionError(f"{module}: its floor is not named in FLOORS (add it)")
    return FLOORS[name]


def _violations() -> list[str]:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = _module_name(path)
        for line, target in _imports(path):
            if target == "d2bench" or _floor_name(target) == _floor_name(source):
                continue
            if any(source.startswith(a) and target.startswith(b) for a, b in SANCTIONED):
                continue
            upward = _floor(target) > _floor(source)
            orchestration = FLOORS[_floor_name(source)] == 10
            into_torch = orchestration and _floor_name(target) in TORCH_FLOORS
            if upward or into_torch:
                where = f"{path.relative_to(PACKAGE.parent)}:{line}"
                problems.append(f"{where}: {source} imports {target}")
    return problems


def test_no_import_runs_back_up_a_floor() -> None:
    problems = _violations()
    assert not problems, "imports that run back up:\n" + "\n".join(problems)


def test_every_package_has_a_floor() -> None:
    for path in PACKAGE.iterdir():
        if path.name.startswith((".", "_")) and path.name not in ("__init__.py", "__main__.py"):
            continue
        if path.is_dir() and (path / "__init__.py").exists():
            assert path.name in FLOORS, f"d2bench/{path.name}/ has no floor in FLOORS"
        elif path.suffix == ".py":
            assert path.stem in FLOORS, f"d2bench/{path.name} has no floor in FLOORS"


@pytest.mark.parametrize(
    ("source", "text", "expected"),
    [
        ("d2bench/engine/x.py", "from ..metrics.davis import evaluate\n", "d2bench.metrics.davis"),
        ("d2bench/core/x.py", "def f():\n    import d2bench.ops\n", "d2bench.ops"),
        ("d2bench/report/x.py", "from .. import layers\n", "d2bench.layers"),
    ],
)
def test_the_checker_sees_an_upward_import(source: str, text: str, expected: str) -> None:
    """The parser resolves relative, lazy and ``from .. import`` forms (else it would miss them)."""
    path = PACKAGE.parent / source
    lines = [name for _, name in _imports(path, text)]
    assert expected in lines
    assert _floor(expected) > _floor(_module_name(path)) or _floor_name(expected) in TORCH_FLOORS
