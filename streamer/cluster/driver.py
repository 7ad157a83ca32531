"""The cluster driver: ``streamer run --config FILE --cluster ADDRESS``.

It validates the config, connects (bounded), checks that some node can run a camera
actor, starts the lease registry and one named actor per camera (``camera:<name>`` in
the namespace, ``max_restarts=-1``, spread over the nodes), waits (bounded) until every
actor answers, publishes ``<prefix>/available`` = ``online`` (its last will:
``offline``) and then waits for SIGINT/SIGTERM. Stopping asks every actor to stop (each
publishes its camera's retained ``stopped``), kills what is left, and ends with
``available`` = ``stopped``. The actors belong to the driver: when its process dies,
Ray ends them too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from streamer.bus import EventBus
from streamer.cluster import require_ray
from streamer.cluster.actor import STOP_TIMEOUT_S, actor_name, camera_actor_class, client_id
from streamer.cluster.config import ClusterConfig
from streamer.cluster.connect import actor_options, check_resources, connect
from streamer.cluster.lease import start_registry
from streamer.config import AppConfig
from streamer.errors import ClusterError, ConfigError

logger = logging.getLogger(__name__)

WATCH_EVERY_S = 5.0  # how often the driver asks the actors how they are (s)
KILL_WAIT_S = 2.0  # after the stop calls, how long ray.kill may take (s)


def cluster_config(cfg: AppConfig, address: str | None, source: str) -> ClusterConfig:
    """The cluster section to use (``--cluster`` overrides its address); validated."""
    require_ray()
    if cfg.mqtt is None:
        raise ConfigError(
            f"{source}: cluster mode needs an `mqtt:` section: the cameras publish to the broker"
        )
    ccfg = cfg.cluster or ClusterConfig()
    if address is not None:
        ccfg = ClusterConfig.model_validate({**ccfg.model_dump(), "address": address})
    return ccfg


@dataclass
class ClusterRun:
    """Handles of a running cluster deployment (for tests and the CLI)."""

    cfg: AppConfig
    cluster: ClusterConfig
    actors: dict[str, Any] = field(default_factory=dict)
    registry: Any = None
    stopped_cleanly: dict[str, bool] = field(default_factory=dict)


def start_cameras(cfg: AppConfig, ccfg: ClusterConfig) -> ClusterRun:
    """Start the registry and one actor per camera; wait until each answers.

    Raises:
        ClusterError: a camera's actor exists already (another driver), or it did not
            start within ``start_timeout_s`` (no room); names the cameras.
    """
    import ray

    names = [c.name for c in cfg.cameras]
    check_resources(ccfg, names)
    if cfg.affect.runtime.type == "ray-serve":
        from streamer.affect.runtimes.ray_serve import deploy_for
        from streamer.store import default_store

        deploy_for(cfg.affect, default_store())
    for name in names:
        with contextlib.suppress(ValueError):  # ray: no such actor, the usual case
            ray.get_actor(actor_name(name), namespace=ccfg.namespace)
            raise ClusterError(
                f"camera {name}: an actor {actor_name(name)!r} already runs in namespace "
                f"{ccfg.namespace!r} (another driver?); stop it or use another namespace"
            )
    run = ClusterRun(cfg, ccfg)
    run.registry = start_registry(ccfg.namespace, ccfg.lease_s)
    cls = camera_actor_class()
    cfg_json = cfg.model_dump_json()
    try:
        for name in names:
            try:
                run.actors[name] = cls.options(
                    name=actor_name(name),
                    namespace=ccfg.namespace,
                    scheduling_strategy="SPREAD",
                    **actor_options(ccfg),
                ).remote(cfg_json, name, run.registry, ccfg.lease_s)
            except ValueError as err:  # ray: the name is taken
                raise ClusterError(
                    f"camera {name}: an actor {actor_name(name)!r} already runs in namespace "
                    f"{ccfg.namespace!r} (another driver?); stop it or use another namespace"
                ) from err
        _wait_started(run, ccfg.start_timeout_s)
    except BaseException:
        kill_all(run)
        raise
    return run


def _wait_started(run: ClusterRun, timeout_s: float) -> None:
    import ray

    refs = {actor.status.remote(): name for name, actor in run.actors.items()}
    ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
    for ref in ready:
        try:
            ray.get(ref)
        except Exception as err:
            raise ClusterError(f"camera {refs[ref]}: its actor failed to start: {err}") from err
    if pending:
        late = ", ".join(sorted(refs[r] for r in pending))
        raise ClusterError(
            f"camera {late}: actor not running within {timeout_s:.0f} s "
            "(cluster.start_timeout_s): no node has room for cluster.camera_resources now"
        )


def stop_cameras(run: ClusterRun, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Ask every actor to stop (retained ``stopped``), then kill them and the registry."""
    import ray

    refs = {actor.stop.remote(timeout_s): name for name, actor in run.actors.items()}
    ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s + 1.0)
    for ref in ready:
        name = refs[ref]
        try:
            run.stopped_cleanly[name] = bool(ray.get(ref))
        except Exception as err:
            logger.warning("camera %s: actor did not stop cleanly: %s", name, err)
    kill_all(run)


def kill_all(run: ClusterRun) -> None:
    import ray

    for actor in [*run.actors.values(), run.registry]:
        if actor is not None:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)


def cluster_status(run: ClusterRun, timeout_s: float = 5.0) -> dict[str, Any]:
    """Each camera actor's :class:`~streamer.cluster.actor.ActorStatus` (or its error)."""
    import ray

    refs = {actor.status.remote(): name for name, actor in run.actors.items()}
    ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
    out: dict[str, Any] = {name: None for name in run.actors}
    for ref in ready:
        with contextlib.suppress(Exception):
            out[refs[ref]] = ray.get(ref)
    return out


def run_cluster(
    cfg: AppConfig,
    *,
    address: str | None = None,
    source: str = "<config>",
    duration_s: float | None = None,
    stop: threading.Event | None = None,
) -> ClusterRun:
    """Run the cameras on the cluster until SIGINT/SIGTERM, ``stop`` or ``duration_s``."""
    ccfg = cluster_config(cfg, address, source)
    connect(ccfg, address)
    cfg = cfg.model_copy(update={"cluster": ccfg})
    stop = stop or threading.Event()
    return asyncio.run(_drive(cfg, ccfg, stop, duration_s))


async def _drive(
    cfg: AppConfig, ccfg: ClusterConfig, stop: threading.Event, duration_s: float | None
) -> ClusterRun:
    from streamer.publish.mqtt import MqttPublisher

    assert cfg.mqtt is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    driver_mqtt = cfg.mqtt.model_copy(update={"client_id": client_id(cfg, "driver")})
    names = [c.name for c in cfg.cameras]
    publisher = MqttPublisher(driver_mqtt, EventBus(), cameras=[])
    async with publisher:
        run = await asyncio.to_thread(start_cameras, cfg, ccfg)
        logger.info(
            "cluster: %d camera actors running in namespace %s", len(run.actors), ccfg.namespace
        )
        t_end = None if duration_s is None else time.monotonic() + duration_s
        seen: dict[str, int] = {}
        try:
            while not stop.is_set() and (t_end is None or time.monotonic() < t_end):
                await asyncio.to_thread(stop.wait, WATCH_EVERY_S)
                if not stop.is_set():
                    _log_changes(await asyncio.to_thread(cluster_status, run), seen)
        finally:
            t0 = time.monotonic()
            await asyncio.to_thread(stop_cameras, run)
            # Cameras whose actor could not say goodbye get their "stopped" from here.
            publisher.cameras = [n for n in names if not run.stopped_cleanly.get(n)]
            logger.info("cluster: camera actors stopped in %.2f s", time.monotonic() - t0)
    return run


def _log_changes(statuses: dict[str, Any], seen: dict[str, int]) -> None:
    for name, st in statuses.items():
        if st is None:
            logger.warning("camera %s: actor not answering (restarting?)", name)
            continue
        if seen.get(name) not in (None, st.pid):
            logger.warning("camera %s: actor restarted on node %s", name, st.node_id[:12])
        if st.error and seen.get(name) != st.pid:
            logger.error("camera %s: %s", name, st.error)
        seen[name] = st.pid
