"""The camera actor: one camera's live pipeline inside a Ray actor.

The actor runs exactly what ``streamer run`` runs for one camera
(:func:`streamer.runtime.live.run_live` on a :class:`~streamer.pipeline.Pipeline`), in
its own thread and event loop (:func:`~streamer.runtime.loop.run_in_fresh_loop`), with
its own MQTT sink (an override of the composition's), which has three cluster settings:

* its own client id, ``<mqtt.client_id or "streamer">-<namespace>-<camera>``: a replacement takes
  over the broker session of a lost one at once;
* its own last will, the camera's retained status ``offline`` ("analyzer lost"), so a
  dead node's cameras go offline on the broker; ``<prefix>/available`` belongs to the
  driver;
* a fence: nothing is sent (and no connection is made) unless the actor holds the
  camera's lease (:mod:`streamer.cluster.lease`).

Ray restarts the actor (``max_restarts=-1``) by running ``__init__`` again on a node
with room: the pipeline starts again from scratch, so track ids restart at 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streamer.bus import EventBus, Subscription
from streamer.cluster.lease import Lease
from streamer.config import AppConfig
from streamer.messages import CameraState, CameraStatus
from streamer.runtime.loop import run_in_fresh_loop

if TYPE_CHECKING:
    from streamer.pipeline import Pipeline
    from streamer.publish.mqtt import MqttPublisher
    from streamer.publish.payloads import Outbound
    from streamer.sinks import SinkContext

logger = logging.getLogger(__name__)

ACTOR_PREFIX = "camera:"
STOP_TIMEOUT_S = 6.0  # pipeline stop + MQTT "stopped" + disconnect, at most (s)
FPS_WINDOW_S = 5.0  # analysed frames per second are measured over this window (s)
LATENCY_FRAMES = 1000  # latest frames whose latency status() summarises


def actor_name(camera: str) -> str:
    return f"{ACTOR_PREFIX}{camera}"


@dataclass(frozen=True)
class ActorStatus:
    """What ``status()`` of a camera actor answers (plain data, crosses Ray)."""

    camera: str
    node_id: str
    node_ip: str
    pid: int
    state: str  # the camera's latest status, or "waiting-lease" / "loading"
    leased: bool
    epoch: int
    fps: float
    frames: int
    published: int
    fenced: int  # MQTT sends refused because the lease was not held
    lease_lost: int
    reconstructed: bool
    decode_to_va_p95_ms: float | None = None  # recent frames, decode to VA on the bus
    runtime: str = ""  # the VA runtime, e.g. onnxruntime-cpu or ray-serve:<app>
    error: str = ""

    def to_record(self) -> dict[str, Any]:
        return dict(self.__dict__)


class CameraRunner:
    """Runs the live pipeline of one camera in a thread; the actor's body.

    Args:
        cfg: the app config restricted to one camera (``cfg.cameras[0]``).
        lease: the camera's lease; publishing is fenced by it.
        store: the model store (default: :func:`streamer.store.default_store`).
    """

    def __init__(self, cfg: AppConfig, lease: Lease, store: Any = None) -> None:
        if len(cfg.cameras) != 1 or cfg.mqtt is None:
            raise ValueError("a camera runner needs exactly one camera and an mqtt section")
        self.cfg = cfg
        self.camera = cfg.cameras[0].name
        self.lease = lease
        self.store = store
        self.error = ""
        self.state = "waiting-lease"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stopping = threading.Event()
        self._pipe: Pipeline | None = None
        self._publisher: MqttPublisher | None = None
        self._fps = 0.0
        self._thread = threading.Thread(target=self._main, name=f"camera-{self.camera}")

    def start(self) -> None:
        self.lease.start()
        self._thread.start()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> bool:
        """Stop the pipeline (publishes the retained ``stopped``), then the lease.

        Returns:
            True when the pipeline ended within ``timeout_s``.
        """
        self._stopping.set()
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(stop.set)
        self._thread.join(timeout_s)
        self.lease.stop()
        return not self._thread.is_alive()

    def publisher_stats(self) -> tuple[int, int]:
        """(sent, fenced) MQTT publications so far."""
        pub = self._publisher
        if pub is None:
            return 0, 0
        return sum(pub.stats.published.values()), pub.stats.dropped.get("fenced", 0)

    def frames(self) -> int:
        pipe = self._pipe
        st = pipe.stats.get(self.camera) if pipe is not None else None
        return int(st.frames) if st is not None else 0

    def fps(self) -> float:
        return self._fps

    def runtime_name(self) -> str:
        from streamer.affect.models import runtime_name

        return runtime_name(self._pipe.model) if self._pipe is not None else ""

    def latency_p95_ms(self) -> float | None:
        """p95 of the latest frames' decode-to-VA latency (ms), None before any."""
        import numpy as np

        pipe = self._pipe
        st = pipe.stats.get(self.camera) if pipe is not None else None
        recent = list(st.latencies_s)[-LATENCY_FRAMES:] if st is not None else []
        return round(float(np.percentile(recent, 95)) * 1000.0, 2) if recent else None

    def _main(self) -> None:
        try:
            run_in_fresh_loop(self._run())
        except Exception as err:  # the actor reports it in status(); Ray keeps the actor
            self.error = f"{type(err).__name__}: {err}"
            self.state = "failed"
            logger.exception("camera %s: cluster runner failed", self.camera)

    def _mqtt_sink(self, ctx: SinkContext) -> MqttPublisher:
        """The actor's MQTT session: its own will, no availability, fenced by the lease."""
        from streamer.publish.mqtt import sink

        will = camera_will(self.cfg, self.camera)
        self._publisher = sink(ctx, will=will, availability=False, may_publish=self.lease.valid)
        return self._publisher

    async def _run(self) -> None:
        from streamer.compose import build_pipeline
        from streamer.runtime.live import run_live

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self._stopping.is_set():
            return
        # The camera is opened only once this actor owns it.
        while not await asyncio.to_thread(self.lease.acquired.wait, 0.2):
            if self._stopping.is_set():
                return
        self.state = "loading"
        if self.store is None:
            from streamer.store import default_store

            self.store = default_store()
        pipe = build_pipeline(
            self.cfg,
            self.store,
            bus=EventBus(lossless_wait_s=self.cfg.output.live_lossless_wait_s),
        )
        statuses = pipe.bus.subscribe(
            "cluster-status", maxsize=64, accept=lambda m: isinstance(m, CameraStatus)
        )
        self._pipe = pipe
        watcher = asyncio.create_task(self._watch(statuses), name=f"status-{self.camera}")
        try:
            await run_live(
                self.cfg,
                stop=self._stop,
                pipeline=pipe,
                handle_signals=False,
                overrides={"mqtt": self._mqtt_sink},
            )
        finally:
            watcher.cancel()
            self.state = CameraState.STOPPED.value

    async def _watch(self, statuses: Subscription) -> None:
        window: list[tuple[float, int]] = []
        while True:
            while (msg := statuses.get_nowait()) is not None:
                if isinstance(msg, CameraStatus):
                    self.state = msg.state.value
            now = time.monotonic()
            window.append((now, self.frames()))
            while len(window) > 2 and now - window[0][0] > FPS_WINDOW_S:
                window.pop(0)
            span = window[-1][0] - window[0][0]
            self._fps = (window[-1][1] - window[0][1]) / span if span > 0 else 0.0
            await asyncio.sleep(0.5)


def camera_will(cfg: AppConfig, camera: str) -> Outbound:
    """The last will of a camera actor's MQTT session: the camera's retained ``offline``."""
    from streamer.publish.payloads import Topics, encode_message

    assert cfg.mqtt is not None
    return encode_message(
        CameraStatus(
            camera=camera,
            state=CameraState.OFFLINE,
            wall_time=time.time(),
            detail="analyzer lost (last will)",
        ),
        Topics(cfg.mqtt.prefix),
    )


def client_id(cfg: AppConfig, member: str) -> str:
    """The MQTT client id of a camera actor (or ``driver``): the same for every
    incarnation, so a replacement takes over a lost one's broker session at once."""
    assert cfg.mqtt is not None
    namespace = cfg.cluster.namespace if cfg.cluster is not None else "streamer"
    return f"{cfg.mqtt.client_id or 'streamer'}-{namespace}-{member}"


def actor_config(cfg: AppConfig, camera: str) -> AppConfig:
    """``cfg`` for the actor of ``camera``: that camera only, its own MQTT client id."""
    assert cfg.mqtt is not None
    cams = [c for c in cfg.cameras if c.name == camera]
    mqtt = cfg.mqtt.model_copy(update={"client_id": client_id(cfg, camera)})
    return cfg.model_copy(update={"cameras": cams, "mqtt": mqtt})


def camera_actor_class() -> Any:
    """The Ray actor class (built lazily: Ray is an optional extra)."""
    import ray

    @ray.remote(max_restarts=-1, max_task_retries=0)
    class CameraActor:
        """One camera; see the module docstring."""

        def __init__(self, cfg_json: str, camera: str, registry: Any, lease_s: float) -> None:
            logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
            cfg = actor_config(AppConfig.model_validate_json(cfg_json), camera)
            ctx = ray.get_runtime_context()
            self.node_id = ctx.get_node_id()
            self.reconstructed = bool(ctx.was_current_actor_reconstructed)
            holder = f"{ctx.get_actor_id()}/{os.getpid()}"
            self.runner = CameraRunner(cfg, Lease(registry, camera, holder, lease_s))
            self.runner.start()

        def status(self) -> ActorStatus:
            r = self.runner
            sent, fenced = r.publisher_stats()
            state = r.state if r.lease.valid() or r.state == "failed" else "waiting-lease"
            return ActorStatus(
                camera=r.camera,
                node_id=self.node_id,
                node_ip=ray.util.get_node_ip_address(),  # type: ignore[no-untyped-call]
                pid=os.getpid(),
                state=state,
                leased=r.lease.valid(),
                epoch=r.lease.epoch,
                fps=round(r.fps(), 2),
                frames=r.frames(),
                published=sent,
                fenced=fenced,
                lease_lost=r.lease.lost,
                reconstructed=self.reconstructed,
                decode_to_va_p95_ms=r.latency_p95_ms(),
                runtime=r.runtime_name(),
                error=r.error,
            )

        def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> bool:
            return self.runner.stop(timeout_s)

    return CameraActor
