"""Session fixtures that start the real services the study tests need: a local Ray instance,
a one-node SLURM cluster and an MLflow tracking server on loopback. Each starts once per test
session, on first use, and is stopped at the end by the process id it was started with."""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stop(process: subprocess.Popen, grace: float = 20.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic DAVIS set shared by every study test (``D2BENCH_TEST_DATA``)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from study_helpers import TINY_SYNTH

    from d2bench.data import SynthSpec, ensure_synthetic_davis

    root = tmp_path_factory.mktemp("synthetic") / "davis"
    ensure_synthetic_davis(root, SynthSpec(**TINY_SYNTH))
    os.environ["D2BENCH_TEST_DATA"] = str(root)
    return root


@pytest.fixture(scope="session")
def ray_address(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A local Ray instance, held by a small head process; yields its address.

    It declares two logical GPUs, so cells reserving ``resources.gpus`` are scheduled as on a
    GPU node (Ray gives each its own ``CUDA_VISIBLE_DEVICES``) while they compute on the CPU.
    """
    pytest.importorskip("ray")
    info = tmp_path_factory.mktemp("ray") / "address"
    script = (
        "import ray, sys, time\n"
        "ctx = ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, logging_level='WARNING',"
        " _node_ip_address='127.0.0.1')\n"
        f"open({str(info)!r}, 'w').write(ctx.address_info['address'])\n"
        "sys.stdout.flush()\n"
        "while True: time.sleep(3600)\n"
    )
    # A loopback test instance: the drivers the tests start connect without an auth token.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    process = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 120
    while not (info.exists() and info.read_text()):
        if process.poll() is not None or time.monotonic() > deadline:
            _stop(process)
            pytest.fail("the local Ray instance did not start")
        time.sleep(0.5)
    yield info.read_text()
    _stop(process, grace=60)


def _slurm_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the test SLURM cluster is started as root; not root here"
    missing = [tool for tool in ("slurmctld", "slurmd", "munged") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed (slurm/test-cluster/install.sh installs them)"
    return None


#: Held shared by every test session using the machine's one SLURM cluster: a session stops the
#: cluster it started only when no other session holds it (two `make test` at once on one host).
SLURM_USERS_LOCK = Path("/run/d2bench-test-slurm.lock")


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[str]:
    """The one-node SLURM cluster of slurm/test-cluster (started, then stopped after the tests
    unless another test session still uses it or it was running before)."""
    reason = _slurm_unavailable()
    if reason:
        pytest.skip(reason)
    folder = REPO / "slurm" / "test-cluster"
    users = SLURM_USERS_LOCK.open("a")
    fcntl.flock(users, fcntl.LOCK_SH)
    was_running = subprocess.run(["pgrep", "-x", "slurmctld"], capture_output=True).returncode == 0
    started = subprocess.run([str(folder / "start.sh")], capture_output=True, text=True)
    if started.returncode != 0:
        pytest.fail(f"slurm/test-cluster/start.sh failed:\n{started.stdout}\n{started.stderr}")
    yield "test-cluster"
    with users:
        try:
            fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)  # no other session holds it
        except BlockingIOError:
            return
        if not was_running:
            subprocess.run([str(folder / "stop.sh")], capture_output=True)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> str:
    """``mlflow server`` on loopback with its own SQLite store; yields its URI."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    process = subprocess.Popen(
        [mlflow, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
         "--artifacts-destination", str(folder / "artifacts")],
        stdout=subprocess.DEVNULL,
        stderr=open(folder / "server.log", "w"),  # noqa: SIM115
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},  # as `d2bench ui`
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300  # a loaded machine starts gunicorn and the job runner slowly
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            _stop(process)
            pytest.fail(f"mlflow server did not start:\n{(folder / 'server.log').read_text()}")
        time.sleep(0.5)
    yield uri
    _stop(process)
