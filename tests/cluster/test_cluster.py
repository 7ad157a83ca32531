"""Cluster mode end to end on a real local Ray cluster (head plus two worker nodes),
three real RTSP cameras and a real mosquitto: VA from every camera, failover when an
actor's process or a whole node dies, never two publishing actors for one camera, and a
clean stop on the driver's SIGTERM."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from streamer.config import AppConfig, parse_config
from streamer.errors import ClusterError
from streamer.testing.mqtt import Broker
from streamer.testing.sources import RtspServer
from tests.helpers.mqtt import Collector, wait_until
from tests.helpers.wait import wait_until_sync

pytestmark = [pytest.mark.cluster, pytest.mark.rtsp, pytest.mark.mqtt]

NAMESPACE = "e2e"
PREFIX = "e2e"
FAILOVER_S = 30.0  # a camera must be back within this after its actor or node died
START_S = 180.0  # deadline for a fresh deployment to publish (slow shared machine)
TAKEOVER = "already connected, closing old connection"  # mosquitto's session takeover


def write_config(
    path: Path,
    urls: list[str],
    broker: Broker,
    address: str,
    namespace: str = NAMESPACE,
    prefix: str = PREFIX,
    extra: str = "",
) -> Path:
    cams = "\n".join(
        f"  - name: cam{i}\n    url: {url}\n    backoff: {{initial_s: 0.2, max_s: 1}}"
        for i, url in enumerate(urls)
    )
    path.write_text(
        f"cameras:\n{cams}\n"
        f"mqtt: {{host: {broker.host}, port: {broker.port}, prefix: {prefix}, "
        "reconnect_min_s: 0.1, reconnect_max_s: 1}\n"
        f"cluster:\n  address: '{address}'\n  namespace: {namespace}\n  lease_s: 3\n"
        f"  start_timeout_s: {START_S}\n{extra}"
    )
    return path


@dataclass
class Deployment:
    cfg: AppConfig
    stop: threading.Event
    thread: threading.Thread

    def actor(self, camera: str) -> Any:
        import ray

        return ray.get_actor(f"camera:{camera}", namespace=NAMESPACE)

    def status(self, camera: str, timeout_s: float = 5.0) -> Any:
        import ray

        try:
            return ray.get(self.actor(camera).status.remote(), timeout=timeout_s)
        except Exception:  # restarting, or its node is gone: no answer yet
            return None


@pytest.fixture(scope="module")
def deployment(
    ray_cluster: Any,
    models: None,
    cameras: list[RtspServer],
    mqtt_broker: Broker,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Deployment]:
    """The three cameras running on the cluster, driven from this process."""
    from streamer.cluster.driver import run_cluster
    from streamer.config import load_config

    path = write_config(
        tmp_path_factory.mktemp("e2e") / "cluster.yaml",
        [c.url for c in cameras],
        mqtt_broker,
        ray_cluster.address,
    )
    cfg = load_config(path)
    stop = threading.Event()
    errors: list[BaseException] = []

    def drive() -> None:
        try:
            run_cluster(cfg, source=str(path), stop=stop)
        except BaseException as err:
            errors.append(err)

    thread = threading.Thread(target=drive, name="test-driver", daemon=True)
    thread.start()
    dep = Deployment(cfg, stop, thread)

    def all_online() -> bool:
        assert not errors, errors
        return all(
            (st := dep.status(f"cam{i}", 1.0)) is not None and st.state == "online"
            for i in range(3)
        )

    wait_until_sync(all_online, START_S, "the cameras online on the cluster", poll_s=0.5)
    yield dep
    stop.set()
    thread.join(60)
    assert not errors, errors


def va_after(col: Collector, camera: str, t0: float) -> list[dict[str, Any]]:
    return [
        json.loads(p)
        for t, p, _ in col.messages
        if t.startswith(f"{PREFIX}/{camera}/faces/")
        and t.endswith("/va")
        and json.loads(p)["wall_time"] > t0
    ]


def states(col: Collector, camera: str) -> list[str]:
    return [json.loads(p)["state"] for p in col.payloads(f"{PREFIX}/{camera}/status") if p]


async def test_every_camera_publishes_va(deployment: Deployment, mqtt_broker: Broker) -> None:
    async with Collector(mqtt_broker.host, mqtt_broker.port, f"{PREFIX}/#") as col:
        await wait_until(
            lambda: all(va_after(col, f"cam{i}", 0.0) for i in range(3)),
            START_S,
            "VA from every camera",
        )
        assert col.payloads(f"{PREFIX}/available")[-1] == b"online"  # the driver's
    for i in range(3):
        va = va_after(col, f"cam{i}", 0.0)
        assert all(-1.0 <= r["valence"] <= 1.0 and -1.0 <= r["arousal"] <= 1.0 for r in va)
    nodes = {deployment.status(f"cam{i}").node_id for i in range(3)}
    assert len(nodes) == 2  # spread over both worker nodes
    assert TAKEOVER not in mqtt_broker.log_text()


async def test_killed_actor_process_comes_back(deployment: Deployment, mqtt_broker: Broker) -> None:
    before = deployment.status("cam0")
    assert before is not None and before.leased
    async with Collector(mqtt_broker.host, mqtt_broker.port, f"{PREFIX}/#") as col:
        t_kill = time.time()
        os.kill(before.pid, signal.SIGKILL)
        await wait_until(
            lambda: (
                (st := deployment.status("cam0", 1.0)) is not None
                and st.pid != before.pid
                and st.state == "online"
            ),
            FAILOVER_S,
            "cam0 back online in a new actor process",
        )
        await wait_until(lambda: bool(va_after(col, "cam0", t_kill)), FAILOVER_S, "VA from cam0")
    after = deployment.status("cam0")
    assert after.reconstructed and after.epoch > before.epoch
    seen = states(col, "cam0")
    # Retained "online" first (subscribe), then the last will, then the new actor's.
    assert "offline" in seen and seen[-1] == "online", seen
    assert seen.index("offline") < len(seen) - 1
    assert TAKEOVER not in mqtt_broker.log_text()


async def test_a_duplicate_camera_actor_never_publishes(
    deployment: Deployment, mqtt_broker: Broker
) -> None:
    import ray

    from streamer.cluster.actor import camera_actor_class
    from streamer.cluster.driver import start_cameras
    from streamer.cluster.lease import REGISTRY_NAME

    # The driver refuses a second actor under the camera's name ...
    assert deployment.cfg.cluster is not None
    with pytest.raises(ClusterError, match="camera cam0: an actor 'camera:cam0' already runs"):
        start_cameras(deployment.cfg, deployment.cfg.cluster)
    # ... and a copy started under another name (by hand, or a zombie) is fenced.
    registry = ray.get_actor(REGISTRY_NAME, namespace=NAMESPACE)
    copy = (
        camera_actor_class()
        .options(name="copy-of-cam1", namespace=NAMESPACE)
        .remote(deployment.cfg.model_dump_json(), "cam1", registry, deployment.cfg.cluster.lease_s)
    )
    try:
        dup = ray.get(copy.status.remote(), timeout=60)
        start = deployment.status("cam1").published
        await wait_until(
            lambda: (
                (st := deployment.status("cam1", 1.0)) is not None and st.published > start + 20
            ),
            FAILOVER_S,
            "the camera's own actor to publish 20 more messages",
        )
        dup = ray.get(copy.status.remote(), timeout=10)
        assert not dup.leased and dup.published == 0 and dup.frames == 0
        assert dup.state == "waiting-lease"
        assert deployment.status("cam1").leased
    finally:
        ray.kill(copy, no_restart=True)
    assert TAKEOVER not in mqtt_broker.log_text()


async def test_removing_a_worker_node_fails_its_cameras_over(
    ray_cluster: Any, deployment: Deployment, mqtt_broker: Broker
) -> None:
    from tests.cluster.conftest import WORKER_CPUS

    where = {f"cam{i}": deployment.status(f"cam{i}").node_id for i in range(3)}
    victim = next(n for n in ray_cluster.worker_nodes if n.node_id in where.values())
    moved = sorted(c for c, n in where.items() if n == victim.node_id)
    async with Collector(mqtt_broker.host, mqtt_broker.port, f"{PREFIX}/#") as col:
        t_cut = time.time()
        ray_cluster.remove_node(victim)
        try:
            await wait_until(
                lambda: all(
                    (st := deployment.status(c, 1.0)) is not None
                    and st.node_id != victim.node_id
                    and st.state == "online"
                    for c in moved
                ),
                FAILOVER_S,
                f"{', '.join(moved)} online on the other node",
            )
            await wait_until(
                lambda: all(va_after(col, c, t_cut) for c in moved),
                FAILOVER_S,
                "VA from the moved cameras",
            )
        finally:
            ray_cluster.add_node(num_cpus=WORKER_CPUS)  # room for the next tests
    for c in moved:
        seen = states(col, c)
        assert "offline" in seen and seen[-1] == "online", (c, seen)
    assert TAKEOVER not in mqtt_broker.log_text()


def test_driver_sigterm_stops_every_actor_with_retained_stopped(
    ray_cluster: Any,
    models: None,
    cameras: list[RtspServer],
    mqtt_broker: Broker,
    tmp_path: Path,
) -> None:
    import asyncio

    from ray.util.state import list_actors

    ns, prefix = "e2e-term", "term"
    path = write_config(
        tmp_path / "term.yaml",
        [c.url for c in cameras[:2]],
        mqtt_broker,
        "auto",
        namespace=ns,
        prefix=prefix,
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamer",
            "run",
            "--config",
            str(path),
            "--cluster",
            ray_cluster.address,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "300"},
    )

    def alive() -> list[Any]:
        return list_actors(filters=[("ray_namespace", "=", ns), ("state", "=", "ALIVE")])

    wanted = {f"{prefix}/available", *(f"{prefix}/cam{i}/status" for i in range(2))}

    async def retained_states() -> dict[str, bytes]:
        """The retained messages a new subscriber gets (waits briefly for all of them)."""
        async with Collector(mqtt_broker.host, mqtt_broker.port, f"{prefix}/#") as col:
            with contextlib.suppress(AssertionError):
                await wait_until(
                    lambda: wanted <= {t for t, _, r in col.messages if r}, 5.0, "retained"
                )
            return {t: p for t, p, retained in col.messages if retained}

    def driver_cameras_online() -> bool:
        assert proc.poll() is None, proc.communicate()
        got = asyncio.run(retained_states())
        return all(
            json.loads(got.get(f"{prefix}/cam{i}/status", b'{"state": ""}'))["state"] == "online"
            for i in range(2)
        )

    try:
        wait_until_sync(driver_cameras_online, START_S, "the driver's cameras online", poll_s=0.5)
        assert len([a for a in alive() if (a.name or "").startswith("camera:")]) == 2
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    stop_s = float(stderr.split("camera actors stopped in ")[1].split(" s")[0])
    assert stop_s < 10.0  # measured by the driver, from the signal to the last actor gone
    assert alive() == []
    got = asyncio.run(retained_states())
    for i in range(2):
        assert json.loads(got[f"{prefix}/cam{i}/status"])["state"] == "stopped"
    assert got[f"{prefix}/available"] == b"stopped"


def test_cluster_without_mqtt_is_refused(tmp_path: Path) -> None:
    from streamer.cli import main

    path = tmp_path / "no-mqtt.yaml"
    path.write_text("cameras:\n  - {name: door, url: rtsp://127.0.0.1:1/x}\ncluster: {}\n")
    with pytest.raises(Exception, match=r"cluster mode needs an `mqtt:` section"):
        parse_config(path.read_text(), str(path))
    assert main(["run", "--config", str(path)]) == 1
    path.write_text("cameras:\n  - {name: door, url: rtsp://127.0.0.1:1/x}\n")
    assert main(["run", "--config", str(path), "--cluster", "auto"]) == 1


def test_unreachable_cluster_address_is_a_clear_error(tmp_path: Path) -> None:
    from streamer.testing.net import free_port

    path = tmp_path / "c.yaml"
    path.write_text("cameras:\n  - {name: door, url: rtsp://127.0.0.1:1/x}\nmqtt: {}\n")
    address = f"127.0.0.1:{free_port()}"
    proc = subprocess.run(
        [sys.executable, "-m", "streamer", "run", "--config", str(path), "--cluster", address],
        capture_output=True,
        text=True,
        timeout=120,  # bounded: the driver must give up on its own well before this
        check=False,
    )
    assert proc.returncode == 1
    assert f"error: cluster address {address}: cannot connect" in proc.stderr


def test_camera_asking_for_resources_no_node_has_is_named(
    ray_cluster: Any, mqtt_broker: Broker, tmp_path: Path
) -> None:
    from streamer.cluster.driver import run_cluster

    path = write_config(
        tmp_path / "big.yaml",
        ["rtsp://127.0.0.1:1/x"],
        mqtt_broker,
        ray_cluster.address,
        namespace="e2e-big",
        extra="  camera_resources: {num_cpus: 1, num_gpus: 4}\n",
    )
    with pytest.raises(ClusterError, match=r"camera cam0: asks for \{CPU: 1, GPU: 4\}"):
        run_cluster(parse_config(path.read_text(), str(path)))


def test_cluster_status_names_node_state_and_restarts(
    deployment: Deployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from streamer.cli import main

    path = tmp_path / "status.yaml"
    path.write_text(deployment.cfg.model_dump_json())  # JSON is YAML
    assert main(["cluster", "status", "--config", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {r["camera"]: r for r in report["cameras"]}
    assert sorted(rows) == ["cam0", "cam1", "cam2"]
    for row in rows.values():
        assert row["actor"] == f"camera:{row['camera']}" and row["node_id"]
        assert row["state"] == "online" and row["fps"] > 0 and row["restarts"] >= 0
    assert main(["cluster", "status", "--config", str(path)]) == 0
    table = capsys.readouterr().out
    assert "cam0" in table and "online" in table
