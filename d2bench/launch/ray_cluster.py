"""Can the Ray cluster run this study's cells? Asked once, before anything is scheduled or written.

A cell reports to the tracking store and writes its folder under the runs folder from whichever
node Ray places it on. On a cluster with nodes on other hosts, a SQLite (or file) store on the
driver's disk is out of their reach, and the runs folder is reachable only if it is storage those
nodes mount at the same path; a cell started there would fail, or worse, write where nobody looks.
So the driver refuses such a launch up front, and refuses cells no node could ever hold.

The decisions are plain functions over the node list and the probe results (testable without a
multi-node cluster); :func:`alive_nodes` and :func:`probe_runs_dir` gather those facts from a
live cluster. Nodes an autoscaler adds later are not probed.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from ..study.spec import Resources
from .preflight import PreflightError

GIB = 1024**3
#: Seconds a node has to answer the runs-folder probe.
PROBE_TIMEOUT_S = 60.0
#: Stores only the machine they live on can open.
LOCAL_STORE_SCHEMES = frozenset({"", "file", "sqlite"})


class ClusterError(PreflightError):
    """The Ray cluster cannot run the study as asked; the message says what to use instead."""


@dataclass(frozen=True)
class RayNode:
    node_id: str
    hostname: str
    resources: Mapping[str, float]


def cell_request(resources: Resources) -> dict[str, float]:
    """What Ray reserves for one cell, in Ray's resource names (memory in bytes)."""
    return {
        "CPU": float(resources.cpus),
        "GPU": float(resources.gpus),
        "memory": float(int(resources.memory_gb * GIB)),
    }


def fits(node: RayNode, request: Mapping[str, float]) -> bool:
    return all(node.resources.get(name, 0.0) >= amount for name, amount in request.items())


def capacity_problem(nodes: Sequence[RayNode], request: Mapping[str, float]) -> str | None:
    """None when some node can hold a cell; else what the largest node offers."""
    if any(fits(node, request) for node in nodes):
        return None
    if not nodes:
        return "the Ray cluster has no live node"
    offered = "; ".join(f"{node.hostname}: {_describe(node.resources)}" for node in nodes)
    return (
        f"no Ray node can hold a cell of {_describe(request)} (resources.cpus, .gpus, "
        f".memory_gb); the nodes offer {offered}"
    )


def _describe(resources: Mapping[str, float]) -> str:
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    memory = resources.get("memory", 0.0) / GIB
    return f"{cpus:g} CPU, {gpus:g} GPU, {memory:.1f} GB memory"


def candidate_nodes(nodes: Sequence[RayNode], request: Mapping[str, float]) -> list[RayNode]:
    """The nodes a cell may land on: those that can hold one (all of them when none can yet,
    as on an autoscaling cluster, where any may grow into one)."""
    fitting = [node for node in nodes if fits(node, request)]
    return fitting or list(nodes)


def other_hosts(nodes: Iterable[RayNode], this_host: str) -> list[str]:
    """Hosts of ``nodes`` other than this one (``gpu-07`` and ``gpu-07.cluster`` are one host:
    Ray may report the full name where ``socket.gethostname()`` gives the short one)."""
    here = _short(this_host)
    return sorted({node.hostname for node in nodes if _short(node.hostname) != here})


def _short(hostname: str) -> str:
    """The host's name without its domain (an IP address stays whole)."""
    if hostname.replace(".", "").isdigit() or ":" in hostname:
        return hostname
    return hostname.split(".", 1)[0].lower()


def is_local_store(tracking_uri: str) -> bool:
    """A SQLite file, a file store or a bare path: reachable from this machine only."""
    if tracking_uri.startswith("databricks"):
        return False
    return urlparse(tracking_uri).scheme.lower() in LOCAL_STORE_SCHEMES


def tracking_problem(tracking_uri: str, foreign_hosts: Sequence[str]) -> str | None:
    if not foreign_hosts or not is_local_store(tracking_uri):
        return None
    return (
        f"--ray-address: the cluster has nodes on other hosts ({', '.join(foreign_hosts)}) that "
        f"cannot reach the local tracking store {tracking_uri}; use an MLflow tracking server: "
        "--tracking-uri http://HOST:PORT (slurm/README.md says how to start one)"
    )


def storage_problem(runs_dir: Path, sightings: Sequence[tuple[RayNode, bool | None]]) -> str | None:
    """An error when some node did not find the probe's marker under the runs folder."""
    blind = sorted({node.hostname for node, seen in sightings if seen is False})
    if not blind:
        return None
    return (
        f"--ray-address: the runs folder {runs_dir} is not visible from the Ray node(s) on "
        f"{', '.join(blind)}; put it on shared storage that every node mounts at the same path "
        "(--runs-dir or the study's runs_dir)"
    )


def unanswered(sightings: Sequence[tuple[RayNode, bool | None]]) -> list[str]:
    return sorted({node.hostname for node, seen in sightings if seen is None})


# -- facts from a live cluster (ray is connected) ---------------------------------------------


def alive_nodes() -> list[RayNode]:
    import ray

    return [
        RayNode(
            node_id=info["NodeID"],
            hostname=info.get("NodeManagerHostname") or info.get("NodeManagerAddress", "?"),
            resources=dict(info.get("Resources", {})),
        )
        for info in ray.nodes()
        if info.get("Alive")
    ]


def probe_runs_dir(
    runs_dir: Path, nodes: Sequence[RayNode], timeout: float = PROBE_TIMEOUT_S
) -> list[tuple[RayNode, bool | None]]:
    """Write a marker under ``runs_dir`` and ask a task pinned to each node whether it sees it;
    None for a node that did not answer in time (or could not run the probe). Leaves nothing
    behind (the marker, and the runs folder too when the probe created it)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    created = _missing_parents(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    marker = runs_dir / f".d2bench-probe-{token}"
    marker.write_text(token)

    def marker_matches(path: str, expected: str) -> bool:
        """On a node: does it see the driver's marker? Nested, so that Ray ships it by value
        and the probe tests the storage alone, not whether d2bench is installed there."""
        try:
            with open(path) as handle:
                return handle.read() == expected
        except OSError:
            return False

    try:
        sees = ray.remote(num_cpus=0, max_retries=0)(marker_matches)
        refs = [
            sees.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False)
            ).remote(str(marker), token)
            for node in nodes
        ]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
        done = set(ready)
        answers: list[tuple[RayNode, bool | None]] = []
        for node, ref in zip(nodes, refs, strict=True):
            answers.append((node, _answer(ref) if ref in done else None))
        for ref in refs:
            if ref not in done:
                ray.cancel(ref, force=True)
        return answers
    finally:
        marker.unlink(missing_ok=True)
        for folder in reversed(created):
            _remove_if_empty(folder)


def _answer(ref: object) -> bool | None:
    """A probe's verdict; None when the task itself failed (the node could not run it)."""
    import ray

    try:
        return bool(ray.get(ref))
    except ray.exceptions.RayError:
        return None


def _missing_parents(path: Path) -> list[Path]:
    """``path`` and its ancestors that do not exist yet, outermost first."""
    missing = []
    for folder in [path, *path.parents]:
        if folder.exists():
            break
        missing.append(folder)
    return list(reversed(missing))


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):
        os.rmdir(folder)


def check_cluster(
    resources: Resources, runs_dir: Path, tracking_uri: str, this_host: str
) -> list[str]:
    """Raise :class:`ClusterError` when the connected (existing) cluster cannot run the study;
    return warnings otherwise."""
    nodes = alive_nodes()
    request = cell_request(resources)
    warnings = []
    capacity = capacity_problem(nodes, request)
    if capacity is not None:
        warnings.append(f"{capacity}; the cells wait until the cluster has such a node")
    candidates = candidate_nodes(nodes, request)
    problem = tracking_problem(tracking_uri, other_hosts(candidates, this_host))
    if problem is not None:
        raise ClusterError(problem)
    runs_dir = runs_dir.resolve()
    sightings = probe_runs_dir(runs_dir, candidates)
    problem = storage_problem(runs_dir, sightings)
    if problem is not None:
        raise ClusterError(problem)
    silent = unanswered(sightings)
    if silent:
        warnings.append(
            f"the Ray node(s) on {', '.join(silent)} did not answer within {PROBE_TIMEOUT_S:.0f} s "
            f"whether they see the runs folder {runs_dir}; cells placed there may fail"
        )
    return warnings


def fit_to_local_node(
    request: Mapping[str, float], nodes: Sequence[RayNode]
) -> tuple[dict[str, float], list[str]]:
    """The request, with CPUs and memory capped at what the largest node offers, and a warning
    per cap: a local instance never grows, so a larger request would wait forever, whereas on
    one's own machine running one cell at a time is what one expects."""
    fitted, warnings = dict(request), []
    for name, unit, scale in (("CPU", "CPUs", 1), ("memory", "GB of memory", GIB)):
        most = max((node.resources.get(name, 0.0) for node in nodes), default=0.0)
        if 0 < most < fitted.get(name, 0.0):
            warnings.append(
                f"a cell asks for {fitted[name] / scale:g} {unit} but the local Ray instance "
                f"has {most / scale:.3g}; reserving {most / scale:.3g} (one cell at a time)"
            )
            fitted[name] = most
    return fitted, warnings
