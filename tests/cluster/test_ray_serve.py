"""``affect.runtime.type: ray-serve`` on a real local Ray cluster.

Outputs equal the in-process onnxruntime's; two callers ("cameras") share one
deployment; a replica killed or hung mid-run costs counted NaN rows, never published
values, and the service resumes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamer.affect.config import AffectConfig, OnnxRuntimeConfig, RayServeRuntimeConfig
from streamer.affect.engine import AffectEngine
from streamer.testing.mqtt import Broker
from streamer.testing.sources import RtspServer
from tests.helpers.mqtt import Collector, wait_until, wait_until_async

pytestmark = pytest.mark.cluster

DEADLINE_S = 90.0


def _crops(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 64, 64), dtype=np.uint8)


@pytest.fixture(scope="module")
def serve_cfg(ray_cluster: Any) -> Iterator[RayServeRuntimeConfig]:
    from ray import serve

    cfg = RayServeRuntimeConfig(app_name="test-va", timeout_s=3.0, replica_cpus=0.5)
    yield cfg
    serve.shutdown()  # type: ignore[no-untyped-call]


def _load(runtime: Any, models: None) -> Any:
    from streamer.affect import load_va_model
    from streamer.store import default_store

    return load_va_model(AffectConfig(model="fer-va", runtime=runtime), default_store())


def _replicas() -> list[Any]:
    from ray.util.state import list_actors

    return [
        a
        for a in list_actors(filters=[("state", "=", "ALIVE")])
        if "ServeReplica" in (a.class_name or "") and "test-va" in (a.name or "")
    ]


def _replica() -> Any:
    alive = _replicas()
    assert len(alive) == 1, alive
    return alive[0]


@pytest.mark.rtsp
@pytest.mark.mqtt
async def test_two_camera_actors_share_one_deployment(
    serve_cfg: RayServeRuntimeConfig,
    models: None,
    cameras: list[RtspServer],
    mqtt_broker: Broker,
    tmp_path: Path,
) -> None:
    import ray
    from ray import serve

    from streamer.cluster.driver import run_cluster
    from streamer.config import load_config

    path = tmp_path / "serve.yaml"
    path.write_text(
        "cameras:\n"
        + "".join(f"  - {{name: s{i}, url: '{cameras[i].url}'}}\n" for i in range(2))
        + f"mqtt: {{host: {mqtt_broker.host}, port: {mqtt_broker.port}, prefix: serve}}\n"
        + "cluster: {namespace: serve-e2e, lease_s: 3}\n"
        + "affect:\n  model: fer-va\n  runtime: "
        + serve_cfg.model_dump_json()
        + "\n"
    )
    cfg = load_config(path)
    stop = threading.Event()
    errors: list[BaseException] = []

    def drive() -> None:
        try:
            run_cluster(cfg, stop=stop)
        except BaseException as err:
            errors.append(err)

    def va(i: int) -> list[dict[str, Any]]:  # any track id: the face may have been re-found
        return [
            json.loads(p)
            for t, p, _ in col.messages
            if t.startswith(f"serve/s{i}/faces/") and t.endswith("/va")
        ]

    driver = threading.Thread(target=drive, name="test-serve-driver")
    async with Collector(mqtt_broker.host, mqtt_broker.port, "serve/#") as col:
        driver.start()
        try:
            await wait_until(
                lambda: bool(errors) or all(va(i) for i in range(2)),
                DEADLINE_S * 2,
                "VA from both cameras",
            )
            statuses: list[Any] = [
                ray.get(
                    ray.get_actor(f"camera:s{i}", namespace="serve-e2e").status.remote(),
                    timeout=10,
                )
                for i in range(2)
            ]
        finally:
            stop.set()
            await asyncio.to_thread(driver.join, 60)
    assert not errors, errors
    apps = [a for a in serve.status().applications if a.startswith("test-va-")]
    assert len(apps) == 1
    assert {st.runtime for st in statuses} == {f"ray-serve:{apps[0]}"}
    for i in range(2):
        assert all(-1.0 <= r["valence"] <= 1.0 and -1.0 <= r["arousal"] <= 1.0 for r in va(i))


def test_two_callers_share_one_deployment_with_in_process_outputs(
    serve_cfg: RayServeRuntimeConfig, models: None
) -> None:
    from ray import serve

    local = _load(OnnxRuntimeConfig(), models)
    cams = [_load(serve_cfg, models), _load(serve_cfg, models)]
    assert cams[0].runtime.app == cams[1].runtime.app
    apps = [a for a in serve.status().applications if a.startswith("test-va-")]
    assert apps == [cams[0].runtime.app]
    results: dict[int, np.ndarray] = {}

    def camera(i: int) -> None:
        results[i] = cams[i].predict(_crops(7 + i, seed=i))

    threads = [threading.Thread(target=camera, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE_S)
    for i in range(2):
        expected = local.predict(_crops(7 + i, seed=i))
        assert results[i].shape == (7 + i, 2)
        np.testing.assert_allclose(results[i], expected, atol=1e-5, rtol=0)


async def _infer_until(engine: AffectEngine, pred: Any, what: str) -> None:
    async def inferred() -> bool:
        return bool(pred(await engine.infer(_crops(4, seed=9))))

    await wait_until_async(inferred, DEADLINE_S, what)


async def test_killed_replica_costs_counted_failures_then_resumes(
    serve_cfg: RayServeRuntimeConfig, models: None
) -> None:
    import ray

    model = _load(serve_cfg, models)
    async with AffectEngine(model, timeout_s=8.0) as engine:
        ok = await engine.infer(_crops(4, seed=9))
        assert np.isfinite(ok).all()
        replica = _replica()
        ray.kill(ray.get_actor(replica.name, namespace="serve"), no_restart=False)
        # Calls made while the replica is dead either fail whole (NaN rows, counted) or,
        # when Serve's router already holds the restarted replica, succeed unchanged.
        # Which one happens is Ray's timing; the contract holds either way.
        nan_calls = 0
        deadline = time.monotonic() + DEADLINE_S
        while True:
            assert time.monotonic() < deadline, "the service did not resume"
            va = await engine.infer(_crops(4, seed=9))
            if np.isfinite(va).all():
                np.testing.assert_allclose(va, ok, atol=1e-5)
                names = [a.name for a in _replicas()]
                if names and replica.name not in names:
                    break  # served by the restarted replica: the service resumed
            else:
                assert np.isnan(va).all(), "a failed call is NaN for every face"
                nan_calls += 1
            assert engine.stats.failed_faces == 4 * nan_calls  # every failure counted
            if nan_calls:
                assert engine.stats.model_errors + engine.stats.timeouts > 0


async def test_hung_replica_times_out_then_resumes(
    serve_cfg: RayServeRuntimeConfig, models: None
) -> None:
    model = _load(serve_cfg, models)
    async with AffectEngine(model, timeout_s=8.0) as engine:
        await _infer_until(engine, lambda va: np.isfinite(va).all(), "a live replica")
        pid = _replica().pid
        os.kill(pid, signal.SIGSTOP)  # a real hang: the process stops answering
        try:
            va = await engine.infer(_crops(4, seed=9))
            assert np.isnan(va).all()
            assert engine.stats.failed_faces == 4
        finally:
            os.kill(pid, signal.SIGCONT)
        await _infer_until(engine, lambda va: np.isfinite(va).all(), "the service to resume")
