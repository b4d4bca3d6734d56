"""An installed wheel stands on its own: in a fresh virtual environment outside the repository it
builds the operators from its own sources, finds its packaged studies and cluster profiles, and
runs a D²Conv3D row of the packaged smoke study end to end.

Nothing is downloaded: the wheel is built without build isolation, and the fresh environment sees
this environment's third-party packages (torch, mlflow, ...) through a ``.pth`` line. A ``.pth``
line adds a folder without running the ``.pth`` files inside it, so this checkout's editable
install stays inactive there and ``d2bench`` can only come from the wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from study_helpers import TINY_SYNTH

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
#: What a wheel is built from; the rest of a clone (tests, data, runs) is not part of it.
PROJECT_FILES = ("pyproject.toml", "README.md", "d2bench")
#: Folders whose every file is package data the wheel must carry.
DATA_FOLDERS = ("d2bench/ops/csrc", "d2bench/studies", "d2bench/slurm_profiles")
#: Single data files the wheel must carry.
DATA_FILES = ("d2bench/bench/targets.toml",)


def _shipped_data() -> list[str]:
    """Every data file of the checkout's package that a wheel must hold (by path in it)."""
    files = [
        path.relative_to(REPO).as_posix()
        for folder in DATA_FOLDERS
        for path in sorted((REPO / folder).rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    ]
    return files + list(DATA_FILES)


def _run(command: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600):
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    output = f"{done.stdout}\n{done.stderr}"
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{output}"
    return done


def _build_wheel(tmp_path: Path) -> Path:
    """A wheel built from a copy of the project files (an in-tree build writes build/ here)."""
    source = tmp_path / "source"
    source.mkdir()
    for name in PROJECT_FILES:
        if (REPO / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.so", "*.o")
            shutil.copytree(REPO / name, source / name, ignore=ignore)
        else:
            shutil.copy(REPO / name, source / name)
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "--quiet", str(source), "-w", str(wheels)], cwd=tmp_path)  # fmt: skip
    (wheel,) = wheels.glob("d2bench-*.whl")
    return wheel


def _fresh_venv(folder: Path) -> tuple[Path, Path]:
    """A virtual environment without d2bench that sees this one's third-party packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    purelib = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=folder
    ).stdout.strip()
    host = [path for path in site.getsitepackages() if Path(path).is_dir()]
    (Path(purelib) / "host-packages.pth").write_text("".join(f"{path}\n" for path in host))
    return python, Path(purelib)


def _isolated_env(venv: Path, tmp_path: Path) -> dict[str, str]:
    """The environment of the installed commands: nothing points back at the checkout."""
    dropped = ("PYTHONPATH", "PYTHONHOME", "PYTEST_CURRENT_TEST", "D2BENCH_OPS_SRC",
               "D2BENCH_GIT_REVISION")  # fmt: skip
    env = {key: value for key, value in os.environ.items() if key not in dropped}
    env.update(
        PATH=os.pathsep.join([str(venv / "bin"), env.get("PATH", "")]),
        VIRTUAL_ENV=str(venv),
        D2BENCH_OPS="compiled",
        D2BENCH_BUILD_CUDA="0",  # CPU kernels only: the build every machine can make
        D2BENCH_BUILD_DIR=str(tmp_path / "ops-build"),  # empty: the operators really compile
        D2BENCH_CACHE_DIR=str(tmp_path / "cache"),
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    return env


def _tiny_study(folder: Path, packaged_smoke: Path) -> Path:
    """The installed smoke study, reduced to one D²Conv3D cell of the tiniest size."""
    spec = {
        "extends": str(packaged_smoke),
        "name": "wheel-smoke",
        "synthetic_data": TINY_SYNTH,
        "base": {
            "model": {"tiny_width": 4, "decoder_channels": 8},
            "data": {"root": str(folder / "data"), "clip_len": 4, "window": 2},
            "train": {"epochs": 1, "max_steps_per_epoch": 2, "batch_size": 1},
            "infer": {"clip_len": 4, "gap": 4, "save_maps_for": None},
        },
        "rows": [
            {
                "name": "d2conv3d_iv",
                "table": "table1",
                "model": {"variant": "d2conv3d_iv", "activation": "1+elu"},
            }
        ],
        "seeds": [0],
        "measure": ["jf"],
        "select": "final",
        "backend": {"name": "local"},
    }
    path = folder / "wheel-smoke.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_an_installed_wheel_builds_the_operators_and_runs_a_study(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    shipped = set(zipfile.ZipFile(wheel).namelist())
    expected = _shipped_data()
    assert len(expected) > 25  # the operator sources, studies and profiles were found
    assert not [name for name in expected if name not in shipped], sorted(shipped)

    # The environment lies in another project's repository, as a project's .venv would.
    _run(["git", "init", "--quiet", str(tmp_path)], cwd=tmp_path)
    venv = tmp_path / "venv"
    python, purelib = _fresh_venv(venv)
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
          "--no-index", "--quiet", str(wheel)], cwd=tmp_path)  # fmt: skip
    work = tmp_path / "work"  # no studies/ or slurm/ here: the packaged ones must be found
    work.mkdir()
    env = _isolated_env(venv, tmp_path)
    installed = purelib / "d2bench"

    probe = (
        "import d2bench, json\n"
        "from d2bench.core.provenance import git_state\n"
        "from d2bench.launch.profiles import load_profile\n"
        "from d2bench.study import packaged_study_names, resolve_study_file\n"
        "print(json.dumps({'package': d2bench.__file__, 'names': packaged_study_names(),\n"
        "    'smoke': str(resolve_study_file('smoke')),\n"
        "    'partition': load_profile('gpu-cluster').partition,\n"
        "    'checkout': git_state()['git_checkout']}))\n"
    )
    found = json.loads(_run([str(python), "-c", probe], cwd=work, env=env).stdout)
    assert Path(found["package"]).is_relative_to(installed)
    assert found["names"] == ["node-sweep", "node-sweep-ddp", "smoke", "table1", "table2"]
    assert Path(found["smoke"]) == installed / "studies" / "smoke.yaml"
    assert found["partition"] == "gpu"
    assert found["checkout"] is False  # the surrounding repository's revision is not d2bench's

    d2bench = str(venv / "bin" / "d2bench")
    built = _run([d2bench, "ops", "build"], cwd=work, env=env).stdout
    assert f"built from {installed / 'ops' / 'csrc'}" in built
    assert list((tmp_path / "ops-build").glob("*/d2bench_ops_cpu.so")), built

    study = _tiny_study(work, installed / "studies" / "smoke.yaml")
    _run([d2bench, "run", str(study), "--backend", "local"], cwd=work, env=env)
    status = json.loads(_run([d2bench, "status", str(study), "--json"], cwd=work, env=env).stdout)
    assert [cell["state"] for cell in status["cells"]] == ["done"], status
    unknown = subprocess.run([d2bench, "plan", "no-such-study"], cwd=work, env=env,
                             capture_output=True, text=True)  # fmt: skip
    assert unknown.returncode == 2
    assert "packaged studies: node-sweep, node-sweep-ddp, smoke, table1, table2" in unknown.stderr
