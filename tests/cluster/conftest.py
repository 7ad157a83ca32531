"""Fixtures of the cluster tests: a real local Ray cluster (head plus two worker nodes),
a real mosquitto and real RTSP cameras serving a face clip, all on this machine."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from streamer.testing.mqtt import Broker
from streamer.testing.net import free_port
from streamer.testing.sources import RtspServer, loop_clip

WORKER_CPUS = 4  # logical CPUs of each worker node (camera actors ask for 1)

if importlib.util.find_spec("ray") is None:
    pytest.skip(
        "Ray is not installed (optional extra: pip install 'streamer[cluster]')",
        allow_module_level=True,
    )


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """Head (no CPUs: cameras run on workers) plus two worker nodes; this process is
    the driver."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        # a free port: another Ray on this machine (a user's, a parallel run) holds 8265
        head_node_args={"num_cpus": 0, "include_dashboard": True, "dashboard_port": free_port()},
    )
    for _ in range(2):
        cluster.add_node(num_cpus=WORKER_CPUS)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace="streamer-tests", log_to_driver=False)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()  # type: ignore[no-untyped-call]


@pytest.fixture(scope="session")
def face_clip(store_path: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cluster") / "face_loop.mp4"
    return loop_clip(store_path("single_face.mp4"), out, 600.0)


@pytest.fixture(scope="session")
def cameras(face_clip: Path) -> Iterator[list[RtspServer]]:
    """Three real RTSP cameras on loopback serving the face clip (tests: ``rtsp``)."""
    servers = [RtspServer(face_clip, mount=f"/cam{i}") for i in range(3)]
    try:
        for srv in servers:
            srv.start()
        yield servers
    finally:
        for srv in servers:
            srv.stop()


@pytest.fixture(scope="session")
def mqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A real mosquitto on loopback (tests using it are marked ``mqtt``)."""
    broker = Broker(tmp_path_factory.mktemp("broker"), free_port())
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
