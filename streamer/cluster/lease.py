"""One publishing actor per camera: leases with fencing, held in a registry actor.

Ray already keeps a name unique (one live ``camera:<name>`` actor per namespace) and
restarts an actor only after it declared the old process dead. A process that Ray
believes dead may still run, though (a node cut off from the head), and a copy of a
camera actor could be started by hand. So a camera actor publishes only while it holds
the camera's **lease**:

* :class:`LeaseRegistry` (one actor per namespace, on the head node) grants a camera's
  lease to one holder at a time for ``lease_s`` seconds, with a fencing epoch that only
  grows, and counts the grants (a camera's restarts).
* :class:`Lease` (in the camera actor) acquires and renews it every ``lease_s / 4``. It
  counts the lease as valid until ``sent + lease_s`` on its own clock, where ``sent`` is
  when the request that got the grant left: never later than the registry's expiry. A
  holder that cannot renew (registry unreachable, or superseded) stops publishing by
  itself before anyone else can be granted the camera.
* A restarted registry grants nothing for ``lease_s`` (leases it forgot run out first).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

REGISTRY_NAME = "streamer:leases"
RENEW_FRACTION = 0.25  # renew every lease_s / 4: a lease survives ~3 failed renewals


@dataclass(frozen=True)
class Grant:
    """The registry's answer to an acquire or renew.

    Attributes:
        granted: the caller holds the lease now.
        epoch: the fencing epoch of the caller's lease (0 when not granted).
        holder: who holds the lease now ("" when nobody).
        retry_s: when not granted, how long until the current lease runs out.
    """

    granted: bool
    epoch: int = 0
    holder: str = ""
    retry_s: float = 0.0


@dataclass
class _Held:
    holder: str
    epoch: int
    expires: float  # registry monotonic clock


class LeaseTable:
    """The registry's state and rules (plain Python; the actor wraps it).

    Args:
        lease_s: how long a grant or renewal is valid.
        quiet_s: grant nothing for this long after start (a restarted registry).
        clock: monotonic clock in seconds.
    """

    def __init__(
        self, lease_s: float, quiet_s: float = 0.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.lease_s = lease_s
        self._clock = clock
        self._quiet_until = clock() + quiet_s
        self._epoch = time.time_ns()  # grows across registry restarts too
        self._held: dict[str, _Held] = {}
        self.grants: dict[str, int] = {}

    def acquire(self, camera: str, holder: str) -> Grant:
        """Grant ``camera`` to ``holder`` unless someone else holds a valid lease."""
        now = self._clock()
        if now < self._quiet_until:
            return Grant(False, retry_s=self._quiet_until - now)
        cur = self._held.get(camera)
        if cur is not None and cur.holder == holder and cur.expires > now:
            cur.expires = now + self.lease_s
            return Grant(True, cur.epoch, holder)
        if cur is not None and cur.expires > now:
            return Grant(False, holder=cur.holder, retry_s=cur.expires - now)
        self._epoch = max(self._epoch + 1, time.time_ns())
        self._held[camera] = _Held(holder, self._epoch, now + self.lease_s)
        self.grants[camera] = self.grants.get(camera, 0) + 1
        return Grant(True, self._epoch, holder)

    def renew(self, camera: str, holder: str, epoch: int) -> Grant:
        """Extend the lease of ``holder`` if it still holds ``epoch`` and it has not run out."""
        now = self._clock()
        cur = self._held.get(camera)
        if cur is None or cur.holder != holder or cur.epoch != epoch or cur.expires <= now:
            return Grant(False, holder=cur.holder if cur else "")
        cur.expires = now + self.lease_s
        return Grant(True, epoch, holder)

    def release(self, camera: str, holder: str, epoch: int) -> bool:
        cur = self._held.get(camera)
        if cur is not None and cur.holder == holder and cur.epoch == epoch:
            del self._held[camera]
            return True
        return False

    def snapshot(self) -> dict[str, dict[str, Any]]:
        now = self._clock()
        return {
            cam: {
                "holder": h.holder,
                "epoch": h.epoch,
                "valid_s": round(h.expires - now, 3),
                "grants": self.grants.get(cam, 0),
            }
            for cam, h in self._held.items()
        }


def registry_actor_class() -> Any:
    """The Ray actor class of the registry (built lazily: Ray is an optional extra)."""
    import ray

    @ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
    class LeaseRegistry:
        def __init__(self, lease_s: float) -> None:
            restarted = ray.get_runtime_context().was_current_actor_reconstructed
            self.table = LeaseTable(lease_s, quiet_s=lease_s if restarted else 0.0)

        def acquire(self, camera: str, holder: str) -> Grant:
            return self.table.acquire(camera, holder)

        def renew(self, camera: str, holder: str, epoch: int) -> Grant:
            return self.table.renew(camera, holder, epoch)

        def release(self, camera: str, holder: str, epoch: int) -> bool:
            return self.table.release(camera, holder, epoch)

        def snapshot(self) -> dict[str, dict[str, Any]]:
            return self.table.snapshot()

    return LeaseRegistry


def start_registry(namespace: str, lease_s: float) -> Any:
    """The namespace's registry actor (created on the head node when absent)."""
    cls = registry_actor_class()
    return cls.options(
        name=REGISTRY_NAME,
        namespace=namespace,
        get_if_exists=True,
        resources={"node:__internal_head__": 0.001},
    ).remote(lease_s)


class Lease:
    """The camera actor's side: acquire, renew in a thread, and say whether it is valid.

    Args:
        registry: the registry actor handle.
        camera: camera name.
        holder: this holder's unique id (actor id and process id).
        lease_s: the registry's lease length.
    """

    def __init__(self, registry: Any, camera: str, holder: str, lease_s: float) -> None:
        self.registry = registry
        self.camera = camera
        self.holder = holder
        self.lease_s = lease_s
        self.epoch = 0
        self.lost = 0  # times a held lease was lost (superseded or not renewed in time)
        self._valid_until = 0.0  # local monotonic clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.acquired = threading.Event()

    def valid(self) -> bool:
        """True while this holder may publish (checked before every MQTT send)."""
        return time.monotonic() < self._valid_until

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"lease-{self.camera}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing and release the lease (publishing stops at once)."""
        self._stop.set()
        epoch, self._valid_until = self.epoch, 0.0
        if self._thread is not None:
            self._thread.join(self.lease_s)
        if epoch:
            self._call("release", self.camera, self.holder, epoch)

    def _call(self, method: str, *args: Any) -> Any:
        import ray

        try:
            ref = getattr(self.registry, method).remote(*args)
            return ray.get(ref, timeout=self.lease_s * RENEW_FRACTION)
        except Exception as err:  # registry away or slow: the lease just runs out
            logger.warning("camera %s: lease registry call %s failed: %r", self.camera, method, err)
            return None

    def _loop(self) -> None:
        period = self.lease_s * RENEW_FRACTION
        while not self._stop.is_set():
            sent = time.monotonic()
            if self.epoch and self.valid():
                grant = self._call("renew", self.camera, self.holder, self.epoch)
            else:
                grant = self._call("acquire", self.camera, self.holder)
            if self._stop.is_set():
                return
            if isinstance(grant, Grant) and grant.granted:
                if grant.epoch != self.epoch:
                    logger.info("camera %s: lease acquired (epoch %d)", self.camera, grant.epoch)
                self.epoch = grant.epoch
                self._valid_until = sent + self.lease_s
                self.acquired.set()
                wait = period
            else:
                if self.epoch and isinstance(grant, Grant):
                    self.lost += 1
                    self._valid_until = 0.0
                    self.epoch = 0
                    logger.error(
                        "camera %s: lease lost to %s; not publishing", self.camera, grant.holder
                    )
                retry = grant.retry_s if isinstance(grant, Grant) else period
                wait = min(period, max(0.05, retry))
            self._stop.wait(wait)
