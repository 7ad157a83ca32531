"""Connecting to a Ray cluster with a bounded wait, and checking what it can run."""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from streamer.cluster import require_ray
from streamer.cluster.config import ClusterConfig
from streamer.errors import ClusterError

logger = logging.getLogger(__name__)

TCP_PROBE_S = 5.0  # a TCP connect to the cluster address fails after this (s)


def resolve_address(address: str) -> str:
    """``auto`` becomes ``RAY_ADDRESS`` when set; other forms are kept."""
    if address == "auto" and os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    return address


def _probe(address: str, timeout_s: float) -> None:
    """Fail fast and clearly when nothing listens at ``host:port``."""
    hostport = address.removeprefix("ray://")
    if hostport in ("auto", "local") or ":" not in hostport:
        return
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=min(TCP_PROBE_S, timeout_s)):
            return
    except OSError as err:
        raise ClusterError(
            f"cluster address {address}: cannot connect ({err.strerror or err}); is "
            "`ray start --head` running there?"
        ) from err


def connect(cfg: ClusterConfig, address: str | None = None) -> str:
    """``ray.init`` the cluster at ``address`` (or ``cfg.address``) within the timeout.

    Returns:
        The address connected to.

    Raises:
        ClusterError: nothing listens there, or the connection did not complete in time.
    """
    require_ray()
    import ray

    target = resolve_address(address or cfg.address)
    if ray.is_initialized():
        return target
    _probe(target, cfg.connect_timeout_s)
    failure: list[BaseException] = []

    def init() -> None:
        try:
            ray.init(
                address=None if target == "local" else target,
                namespace=cfg.namespace,
                logging_level=logging.WARNING,
                log_to_driver=True,
            )
        except BaseException as err:  # reported to the caller below
            failure.append(err)

    worker = threading.Thread(target=init, name="ray-connect", daemon=True)
    worker.start()
    worker.join(cfg.connect_timeout_s)
    if worker.is_alive():
        raise ClusterError(
            f"cluster address {target}: no answer within {cfg.connect_timeout_s:.0f} s"
        )
    if failure:
        raise ClusterError(f"cluster address {target}: {failure[0]}") from failure[0]
    return target


def camera_request(cfg: ClusterConfig) -> dict[str, float]:
    """The Ray resources one camera actor asks for, as node resource names."""
    res = cfg.camera_resources
    req: dict[str, float] = {"CPU": res.num_cpus, "GPU": res.num_gpus, **res.custom}
    if res.memory_mb is not None:
        req["memory"] = res.memory_mb * 1024 * 1024
    return {k: v for k, v in req.items() if v > 0}


def actor_options(cfg: ClusterConfig) -> dict[str, Any]:
    """``.options()`` keywords of a camera actor for its resources."""
    res = cfg.camera_resources
    opts: dict[str, Any] = {"num_cpus": res.num_cpus, "num_gpus": res.num_gpus}
    if res.memory_mb is not None:
        opts["memory"] = int(res.memory_mb * 1024 * 1024)
    if res.custom:
        opts["resources"] = dict(res.custom)
    return opts


def check_resources(cfg: ClusterConfig, cameras: list[str]) -> None:
    """Raise when no alive node could ever run a camera actor (names the cameras).

    A node that could but is full now is not an error here: the start waits (bounded).
    """
    import ray

    need = camera_request(cfg)
    nodes = [n for n in ray.nodes() if n.get("Alive")]  # type: ignore[no-untyped-call]
    for node in nodes:
        have = node.get("Resources", {})
        if all(have.get(k, 0.0) >= v for k, v in need.items()):
            return
    biggest = ", ".join(
        "{"
        + ", ".join(
            f"{k}: {v:g}"
            for k, v in sorted(n.get("Resources", {}).items())
            if not k.startswith("node:") and k not in ("object_store_memory",)
        )
        + "}"
        for n in nodes
    )
    asks = ", ".join(f"{k}: {v:g}" for k, v in sorted(need.items()))
    raise ClusterError(
        f"camera {', '.join(cameras)}: asks for {{{asks}}} "
        f"(cluster.camera_resources) but no node of the cluster has that; nodes: {biggest}"
    )
