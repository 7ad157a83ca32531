"""The web sink: dashboard, live events, JSON state, Prometheus metrics and health checks.

One aiohttp server on the pipeline's event loop, entered by the composition when the
config has an enabled ``web:`` section (``streamer run``, ``streamer replay --serve``)::

    /             the dashboard (HTML, canvas, no CDN: the files ship in the package)
    /events       server-sent events: the state, pushed at most every update interval
    /api/state    the same state as JSON (schema: streamer/web/schemas/state.json)
    /metrics      Prometheus text format
    /healthz      200 while the event loop is responsive, else 503
    /readyz       200 when the model is loaded and every camera online or reconnecting
    /login        ?token=...: sets a session cookie (hosts other than loopback)
    /logout       ends that session
    /api/preview/CAMERA.jpg   the latest annotated frame (only with ``preview: true``)

The sink reads the bus through a bounded, lossy subscription into
:class:`~streamer.web.state.DashboardState`, and the run's counters through its
read-only :class:`~streamer.sinks.RunView`. Each job has its module: who may ask
(:mod:`~streamer.web.auth`), the event stream (:mod:`~streamer.web.events`), previews
(:mod:`~streamer.web.previews`), health (:mod:`~streamer.web.health`) and metrics
(:mod:`~streamer.web.metrics`). See docs/web.md for the security model.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import logging
import math
import time
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streamer.annotate import description_label
from streamer.bus import EventBus
from streamer.errors import ConfigError
from streamer.lifecycle import cancel_and_wait, stop_on_signals
from streamer.messages import CameraState
from streamer.sinks import Metric, RunView
from streamer.web.alerts import EpisodeBoard
from streamer.web.auth import Access
from streamer.web.config import WebConfig
from streamer.web.connections import ConnectionGuard
from streamer.web.events import EventStream
from streamer.web.health import HEALTH_STALE_S, HEALTH_WINDOW_S, Heartbeat, readiness
from streamer.web.metrics import RunCollector, make_registry
from streamer.web.previews import PREVIEW_INTERVAL_S, Previews
from streamer.web.review import Review
from streamer.web.state import STATE_SCHEMA, DashboardState

logger = logging.getLogger(__name__)

UPDATE_INTERVAL_S = 0.25  # at most this often a snapshot goes to browsers (s)
WRITE_TIMEOUT_S = 10.0  # a browser that takes longer to accept one snapshot is cut off
BUS_QUEUE = 2048  # the sink's bus subscription (lossy)
ASSETS = {
    "app.js": "text/javascript",
    "app.css": "text/css",
    "alerts.js": "text/javascript",
    "review.js": "text/javascript",
    "review.css": "text/css",
}


def _asset(name: str) -> bytes:
    return importlib.resources.files("streamer.web").joinpath(name).read_bytes()


class WebSink:
    """Serves the dashboard and metrics of a run while entered.

    Args:
        cfg: the ``web`` config section.
        bus: the run's bus (the sink subscribes on construction).
        view: the run, read-only (counters, engine, every sink's metrics).
        update_interval_s: the fastest snapshot rate to browsers.
        preview_interval_s: the fastest preview rate per camera.
        write_timeout_s: a browser that takes longer to accept one snapshot is cut off.
        bind_host: the address to listen on, when it must differ from ``cfg.host`` (the
            access rules still follow ``cfg.host``: tests bind loopback only).
        health_stale_s: a heartbeat this late marks the event loop as blocked.
        health_window_s: how long after a block ``/healthz`` still says 503.
        linger_s: after a replay, keep serving this long (``inf``: until SIGINT or
            SIGTERM, which end the wait and let the run finish normally).
    """

    def __init__(
        self,
        cfg: WebConfig,
        bus: EventBus,
        view: RunView,
        *,
        update_interval_s: float = UPDATE_INTERVAL_S,
        preview_interval_s: float = PREVIEW_INTERVAL_S,
        write_timeout_s: float = WRITE_TIMEOUT_S,
        bind_host: str | None = None,
        health_stale_s: float = HEALTH_STALE_S,
        health_window_s: float = HEALTH_WINDOW_S,
        linger_s: float = 0.0,
    ) -> None:
        self.cfg = cfg
        self.bus = bus
        self.view = view
        self.bind_host = bind_host or cfg.host
        self.linger_s = linger_s
        self.state = DashboardState(list(view.cameras), view.model_name, view.model_approximate)
        self.board = EpisodeBoard()
        self.port = cfg.port
        self.access = Access(cfg)
        self.events = EventStream(
            self.snapshot, lambda: self.state.version, update_interval_s, write_timeout_s
        )
        self.heartbeat = Heartbeat(health_stale_s, health_window_s, self._running)
        self.previews = (
            Previews(bus.subscribe_previews("web-previews"), self._label, preview_interval_s)
            if cfg.preview
            else None
        )
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self.connections = ConnectionGuard(cfg.max_connections, cfg.header_timeout_s)
        self._main: asyncio.Task[None] | None = None
        self._sub = bus.subscribe("web", maxsize=BUS_QUEUE)
        self.registry = make_registry(RunCollector(view, self._camera_up, self._tracks_alive))

    # ------------------------------------------------------------------ lifecycle

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self.access.guard])
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/events", self.events.handle)
        app.router.add_get("/api/state", self._api_state)
        app.router.add_get("/api/schema/state.json", self._schema)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self.heartbeat.handle)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/login", self.access.login)
        app.router.add_get("/logout", self.access.logout)
        app.router.add_get("/favicon.ico", self._no_content)
        if self.previews is not None:
            app.router.add_get("/api/preview/{camera}.jpg", self.previews.handle)
        Review(self.view, lambda: _asset("static/review.html")).add_routes(app)
        return app

    async def __aenter__(self) -> WebSink:
        self._runner = web.AppRunner(
            self._app(),
            access_log=None,
            shutdown_timeout=1.0,
            keepalive_timeout=self.cfg.keepalive_timeout_s,
        )
        await self._runner.setup()
        server = self._runner.server
        assert server is not None
        # Our own listener instead of a TCPSite: every connection goes through the guard
        # (a cap, a header-read deadline) before aiohttp's handler sees it.
        try:
            self._listener = await asyncio.get_running_loop().create_server(
                self.connections.factory(server), self.bind_host, self.cfg.port
            )
        except OSError as err:
            await self._runner.cleanup()
            self._unsubscribe()
            raise ConfigError(
                f"web: cannot listen on {self.cfg.host}:{self.cfg.port}: {err.strerror or err}"
            ) from err
        if self._listener.sockets:
            self.port = int(self._listener.sockets[0].getsockname()[1])
        self._main = asyncio.create_task(self._run(), name="sink-web")
        logger.info("dashboard on %s", self.url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.events.close()
        try:
            if self._main is not None:
                await cancel_and_wait(self._main)  # raises what the server loop failed with
        finally:
            self._unsubscribe()
            if self._listener is not None:
                self._listener.close()  # no new connection; the runner closes the others
            for conn in list(self.connections.open):
                conn.close()  # those still sending a head (aiohttp knows only the others)
            if self._runner is not None:
                await self._runner.cleanup()

    def _unsubscribe(self) -> None:
        self.bus.unsubscribe(self._sub)
        if self.previews is not None:
            self.bus.unsubscribe(self.previews.sub)

    async def flush(self, *, ok: bool, replay: bool) -> None:
        """After a replay with ``linger_s``: say it ended, and keep serving that long."""
        if not (replay and ok and self.linger_s > 0):
            return
        self.state.finish()
        stop = asyncio.Event()
        how_long = "until Ctrl-C" if math.isinf(self.linger_s) else f"for {self.linger_s:g} s"
        logger.info("replay finished; the dashboard stays on %s %s", self.url, how_long)
        with stop_on_signals(stop), contextlib.suppress(TimeoutError):
            async with asyncio.timeout(None if math.isinf(self.linger_s) else self.linger_s):
                await stop.wait()

    def metrics(self) -> list[Metric]:
        """The browsers connected, snapshots they missed, streams cut off; connections
        open, refused, closed to make room or for a late request head."""
        return self.events.metrics() + self.connections.metrics()

    @property
    def url(self) -> str:
        host = self.cfg.host if ":" not in self.cfg.host else f"[{self.cfg.host}]"
        return f"http://{host}:{self.port}/"

    def _running(self) -> bool:
        return self._main is not None and not self._main.done()

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._consume_loop(), name="web-consume")
            tg.create_task(self.events.broadcast_loop(), name="web-broadcast")
            tg.create_task(self.heartbeat.loop(), name="web-heartbeat")
            if self.previews is not None:
                tg.create_task(self.previews.consume_loop(), name="web-previews")

    async def _consume_loop(self) -> None:
        async for msg in self._sub:
            if self.board.add(msg):
                self.state.version += 1
                continue
            self.state.add(msg)

    # ------------------------------------------------------------------ state

    def _counters(self, camera: str) -> dict[str, int]:
        st = self.view.camera_stats().get(camera)
        analysed = st.frames if st else 0
        faces = st.tracks_live if st else 0  # as the MQTT face_count topic: confirmed tracks
        src = self.view.source_counters(camera)
        if src is None:
            return {
                "decoded": analysed,
                "analysed": analysed,
                "skipped": 0,
                "reconnects": 0,
                "faces": faces,
            }
        return {
            "decoded": src.decoded,
            "analysed": analysed,
            "skipped": src.skipped,
            "reconnects": src.reconnects,
            "faces": faces,
        }

    def snapshot(self) -> dict[str, Any]:
        """The dashboard state as a JSON-able document (``/api/state``)."""
        now = time.time()
        for name in self.view.camera_stats():
            self.state.camera(name)
        cameras = [
            self.state.camera_json(cam, self._counters(cam.name), now)
            for cam in self.state.cameras.values()
        ]
        return {
            "schema": STATE_SCHEMA,
            "wall_time": round(now, 3),
            "model": self.state.model,
            "approximate": self.state.approximate,
            "model_note": self.state.model_note,
            "model_hull": None
            if self.state.model_hull is None
            else [list(p) for p in self.state.model_hull],
            "preview": self.cfg.preview,
            "cameras": cameras,
            "tracks": [tr.to_json() for tr in self.state.tracks.values()],
            "history": self.view.review() is not None,
            **self.board.to_json(now),
        }

    def _camera_up(self) -> dict[str, bool]:
        stats = self.view.camera_stats()
        out = {}
        for cam in self.state.cameras.values():
            online = cam.state == CameraState.ONLINE.value
            out[cam.name] = online or (not cam.has_status and cam.name in stats)
        return out

    def _tracks_alive(self) -> dict[str, int]:
        return {name: st.tracks_live for name, st in self.view.camera_stats().items()}

    def _label(self, camera: str, track_id: int) -> str:
        tr = self.state.tracks.get((camera, track_id))
        return description_label(tr.description) if tr and tr.description else ""

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether the run is ready, and why not (the body of ``/readyz``)."""
        states = {}
        for name in self.view.cameras:
            cam = self.state.camera(name)
            states[name] = (cam.state, cam.detail)
        degraded = bool(self.view.engine_stats().degraded)
        ok, body = readiness(self.state.model, degraded, self.view.cameras, states)
        problems = self.view.sink_problems()
        body["sinks"] = {name: {"ok": False, "why": why} for name, why in problems.items()}
        for name, why in problems.items():
            body["not_ready"][name] = why
        return ok and not problems, body

    # ------------------------------------------------------------------ handlers

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=_asset("static/index.html"), content_type="text/html")

    async def _no_content(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=204)

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in ASSETS:
            raise web.HTTPNotFound()
        return web.Response(body=_asset(f"static/{name}"), content_type=ASSETS[name])

    async def _schema(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=_asset("schemas/state.json"), content_type="application/json")

    async def _api_state(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.snapshot())

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _readyz(self, request: web.Request) -> web.StreamResponse:
        ok, body = self.readiness()
        return web.json_response(body, status=200 if ok else 503)
