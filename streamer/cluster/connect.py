"""Connecting to a Ray cluster with a bounded wait, and checking what it can run."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
from typing import Any

from streamer.cluster import require_ray
from streamer.cluster.config import ClusterConfig
from streamer.errors import ClusterError

logger = logging.getLogger(__name__)

TCP_PROBE_S = 5.0  # a TCP connect to the cluster address fails after this (s)
# Ray's C++ core logs (gcs_client.cc, rpc_client.h: a line per retry) straight to the
# terminal at this level unless ``-v``; set before ``ray.init`` starts the core worker.
RAY_BACKEND_LOG_ENV = "RAY_BACKEND_LOG_LEVEL"


def ray_verbose() -> bool:
    """Whether Ray's own logs reach the terminal: only with ``-v`` (streamer at debug)."""
    return logging.getLogger("streamer").isEnabledFor(logging.DEBUG)


class NativeStderrMuted:
    """While connecting, what native code writes to file descriptor 2 (Ray's C++ core:
    ``gcs_client.cc``, ``rpc_client.h``, a line per retry) goes to /dev/null, and
    Python's ``sys.stderr`` (our log and error lines) to the terminal through a copy of
    the descriptor. :meth:`restore` puts descriptor 2 back once the connecting thread
    is done; one still retrying at the timeout keeps it muted (the command ends with its
    error line)."""

    def __init__(self) -> None:
        self._saved: int | None = None
        self._stderr: Any = None

    def mute(self) -> None:
        try:
            sys.stderr.flush()
            self._saved = os.dup(2)
            self._stderr = sys.stderr
            sys.stderr = os.fdopen(os.dup(self._saved), "w", buffering=1, encoding="utf-8")
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            self.restore()  # no usable descriptor 2 (a test's capture): leave it alone

    def restore(self) -> None:
        saved, self._saved = self._saved, None
        if saved is None:
            return
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        muted_copy, sys.stderr = sys.stderr, self._stderr
        if muted_copy is not self._stderr:
            with contextlib.suppress(OSError, ValueError):
                muted_copy.close()


def quiet_ray_logs() -> int:
    """Keep Ray's own Python warnings off the terminal unless ``-v``; returns the level to
    pass to ``ray.init(logging_level=...)``."""
    if ray_verbose():
        return logging.INFO
    os.environ.setdefault(RAY_BACKEND_LOG_ENV, "error")
    logging.getLogger("ray").setLevel(logging.ERROR)
    return logging.ERROR


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
    level = quiet_ray_logs()

    def init() -> None:
        try:
            ray.init(
                address=None if target == "local" else target,
                namespace=cfg.namespace,
                logging_level=level,
                log_to_driver=True,
            )
        except BaseException as err:  # reported to the caller below
            failure.append(err)

    worker = threading.Thread(target=init, name="ray-connect", daemon=True)
    muted = NativeStderrMuted()
    if not ray_verbose():
        muted.mute()
    worker.start()
    worker.join(cfg.connect_timeout_s)
    if not worker.is_alive():
        muted.restore()  # (a thread still retrying keeps it muted: we end with an error)
    if not worker.is_alive() and not failure:
        return target
    if worker.is_alive():
        raise ClusterError(
            f"cluster address {target}: no answer within {cfg.connect_timeout_s:.0f} s"
        )
    raise ClusterError(f"cluster address {target}: {failure[0]}") from failure[0]


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
