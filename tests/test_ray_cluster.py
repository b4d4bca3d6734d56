"""Whether a Ray cluster can run a study: the decisions over node lists (no cluster needed), the
runs-folder probe on a real local Ray instance, and the CLI's one-line refusal."""

from __future__ import annotations

from pathlib import Path

import pytest
from study_helpers import d2bench, write_study

from d2bench.launch.ray_cluster import (
    GIB,
    RayNode,
    candidate_nodes,
    capacity_problem,
    cell_request,
    fit_to_local_node,
    is_local_store,
    other_hosts,
    storage_problem,
    tracking_problem,
    unanswered,
)
from d2bench.study.spec import Resources

HERE = "driver-host"


def node(name: str, host: str, cpus: float = 8, gpus: float = 0, memory_gb: float = 32) -> RayNode:
    return RayNode(name, host, {"CPU": cpus, "GPU": gpus, "memory": memory_gb * GIB})


def test_a_cell_reserves_the_studys_memory_in_bytes() -> None:
    request = cell_request(Resources(cpus=2, gpus=1, memory_gb=6))
    assert request == {"CPU": 2.0, "GPU": 1.0, "memory": float(6 * 1024**3)}


@pytest.mark.parametrize(
    ("uri", "local"),
    [
        ("sqlite:////home/me/mlruns/mlflow.db", True),
        ("file:///home/me/mlruns", True),
        ("/home/me/mlruns", True),
        ("mlruns", True),
        ("http://mlflow.cluster:5000", False),
        ("https://mlflow.example.org", False),
        ("postgresql://user@db/mlflow", False),
        ("databricks", False),
    ],
)
def test_which_tracking_stores_only_this_machine_reaches(uri: str, local: bool) -> None:
    assert is_local_store(uri) is local


def test_sqlite_is_refused_only_when_cells_can_land_on_another_host() -> None:
    uri = "sqlite:////home/me/mlruns/mlflow.db"
    one_host = [node("a", HERE), node("b", HERE)]
    two_hosts = [node("a", HERE), node("b", "gpu-07")]
    assert tracking_problem(uri, other_hosts(one_host, HERE)) is None
    problem = tracking_problem(uri, other_hosts(two_hosts, HERE))
    assert problem is not None and "\n" not in problem
    assert "gpu-07" in problem and uri in problem and "--tracking-uri http://" in problem
    assert tracking_problem("http://mlflow:5000", other_hosts(two_hosts, HERE)) is None
    assert other_hosts([node("a", f"{HERE}.cluster.example.org")], HERE) == []
    assert other_hosts([node("a", "10.0.0.5")], "10.0.0.7") == ["10.0.0.5"]


def test_a_head_that_cannot_hold_a_cell_does_not_count_as_a_place_cells_run() -> None:
    request = cell_request(Resources(cpus=4, gpus=1, memory_gb=16))
    head = node("head", "head-host", cpus=0, gpus=0)
    worker = node("w", HERE, cpus=16, gpus=4, memory_gb=128)
    assert candidate_nodes([head, worker], request) == [worker]
    assert other_hosts(candidate_nodes([head, worker], request), HERE) == []
    # none fits yet (an autoscaler may add one): every node is a candidate
    assert candidate_nodes([head], request) == [head]


def test_a_runs_folder_some_node_does_not_see_is_refused_naming_the_node() -> None:
    runs = Path("/home/me/runs")
    a, b, c = node("a", HERE), node("b", "gpu-07"), node("c", "gpu-08")
    assert storage_problem(runs, [(a, True), (b, True)]) is None
    problem = storage_problem(runs, [(a, True), (b, False), (c, None)])
    assert problem is not None and "\n" not in problem
    assert "gpu-07" in problem and "gpu-08" not in problem and "shared storage" in problem
    assert str(runs) in problem
    assert unanswered([(a, True), (b, False), (c, None)]) == ["gpu-08"]


def test_capacity_names_what_the_nodes_offer_when_none_can_hold_a_cell() -> None:
    request = cell_request(Resources(cpus=2, gpus=0, memory_gb=64))
    assert capacity_problem([node("a", HERE, memory_gb=128)], request) is None
    problem = capacity_problem([node("a", HERE, memory_gb=32)], request)
    assert problem is not None and "64.0 GB memory" in problem and "32.0 GB memory" in problem


def test_a_local_instance_caps_cpus_and_memory_at_its_node_with_a_warning() -> None:
    request = cell_request(Resources(cpus=4, gpus=0, memory_gb=64))
    fitted, warnings = fit_to_local_node(request, [node("a", HERE, cpus=2, memory_gb=12)])
    assert fitted == {"CPU": 2.0, "GPU": 0.0, "memory": 12 * GIB}
    assert len(warnings) == 2 and "64 GB of memory" in warnings[1]
    same, none = fit_to_local_node(cell_request(Resources()), [node("a", HERE)])
    assert same == cell_request(Resources()) and none == []


@pytest.mark.slow
def test_the_probe_finds_the_marker_from_every_node_of_a_real_instance_and_cleans_up(
    tmp_path: Path, ray_address: str
) -> None:
    import ray

    from d2bench.launch.ray_cluster import alive_nodes, probe_runs_dir

    runs = tmp_path / "not-yet" / "runs"
    ray.init(address=ray_address, logging_level="WARNING", include_dashboard=False)
    try:
        nodes = alive_nodes()
        sightings = probe_runs_dir(runs, nodes, timeout=60)
    finally:
        ray.shutdown()
    assert len(nodes) == 1 and [seen for _, seen in sightings] == [True]
    assert not (tmp_path / "not-yet").exists()  # the folders it made are gone again


@pytest.mark.slow
def test_a_one_node_instance_here_passes_sqlite_and_a_local_runs_folder_and_warns_on_capacity(
    tmp_path: Path, synthetic_data: Path, ray_address: str
) -> None:
    """On a one-node instance on this host, SQLite and a local runs folder pass the checks."""
    # 4096 GB: the most a study may ask for per cell, and more than any node here has.
    study = write_study(tmp_path, "ray-check", resources={"gpus": 0, "cpus": 1,
                        "memory_gb": 4096, "time_min": 10})  # fmt: skip
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    done = d2bench("run", str(study), "--backend", "ray", "--ray-address", ray_address,
                   "--tracking-uri", uri, "--dry-run", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "no Ray node can hold a cell" in done.stderr
    assert "would schedule 2 cell(s)" in done.stdout
    assert not list((tmp_path / "runs").glob(".d2bench-probe-*"))
