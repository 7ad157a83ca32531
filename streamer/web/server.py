"""The web sink: dashboard, live events, JSON state, Prometheus metrics and health checks.

One aiohttp server on the pipeline's event loop, entered by the pipeline when the config
has an enabled ``web:`` section (``streamer run``, ``streamer replay --serve``)::

    /             the dashboard (HTML, canvas, no CDN: the files ship in the package)
    /events       server-sent events: the state, pushed at most every update interval
    /api/state    the same state as JSON (schema: streamer/web/schemas/state.json)
    /metrics      Prometheus text format
    /healthz      200 while the event loop is responsive, else 503
    /readyz       200 when the model is loaded and every camera online or reconnecting
    /login        ?token=...: sets a session cookie (hosts other than loopback)
    /api/preview/CAMERA.jpg   the latest annotated frame (only with ``preview: true``)

The sink reads the bus through a bounded, lossy subscription and hands each browser a
bounded, lossy queue of encoded snapshots: a browser that stops reading loses
snapshots, then its connection, and never slows the video or other browsers. See
docs/web.md for the security model.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import hmac
import importlib.resources
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import cv2
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from streamer.annotate import FaceOverlay, description_label, draw_overlays
from streamer.lifecycle import cancel_and_wait
from streamer.messages import CameraState, Frame, Message, VASample
from streamer.web.config import WebConfig, is_loopback
from streamer.web.metrics import PipelineCollector, make_registry
from streamer.web.state import STATE_SCHEMA, DashboardState

logger = logging.getLogger(__name__)

UPDATE_INTERVAL_S = 0.25  # at most this often a snapshot goes to browsers (s)
IDLE_UPDATE_S = 1.0  # with no new message, a snapshot still goes out this often (fps move)
CLIENT_QUEUE = 4  # snapshots queued per browser; older ones are dropped
MAX_CLIENTS = 32  # event-stream connections at once
WRITE_TIMEOUT_S = 10.0  # a browser that takes longer to accept one snapshot is cut off
SSE_SNDBUF_BYTES = 65536  # socket send buffer of an event stream (bounds memory per browser)
PREVIEW_INTERVAL_S = 1.0  # at most one preview frame per camera per interval (s)
PREVIEW_JPEG_QUALITY = 80
HEARTBEAT_S = 0.5  # event-loop heartbeat period (s)
HEALTH_STALE_S = 5.0  # a heartbeat this late: the loop was blocked (s)
HEALTH_WINDOW_S = 30.0  # a blocked loop keeps /healthz at 503 this long after (s)
BUS_QUEUE = 2048  # the sink's bus subscription (lossy)
COOKIE = "streamer_session"
SESSION_LABEL = b"streamer-web-session/1"
READY_STATES = (CameraState.ONLINE.value, CameraState.RECONNECTING.value)
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
ASSETS = {
    "app.js": "text/javascript",
    "app.css": "text/css",
}


def _asset(name: str) -> bytes:
    return importlib.resources.files("streamer.web").joinpath(name).read_bytes()


class _Client:
    """One event-stream connection: a bounded queue of encoded snapshots, oldest dropped."""

    def __init__(self, maxsize: int) -> None:
        self.items: collections.deque[bytes] = collections.deque()
        self.maxsize = maxsize
        self.ready = asyncio.Event()
        self.dropped = 0
        self.sent = 0

    def offer(self, data: bytes) -> None:
        if len(self.items) >= self.maxsize:
            self.items.popleft()
            self.dropped += 1
        self.items.append(data)
        self.ready.set()

    async def next(self, timeout_s: float) -> bytes | None:
        if not self.items:
            self.ready.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self.ready.wait()
        return self.items.popleft() if self.items else None


class WebSink:
    """Serves the dashboard and metrics of ``pipe`` while entered.

    Args:
        cfg: the ``web`` config section.
        pipe: the :class:`~streamer.pipeline.Pipeline` (bus, stats, sources, sinks).
        update_interval_s: the fastest snapshot rate to browsers.
        preview_interval_s: the fastest preview rate per camera.
        write_timeout_s: a browser that takes longer to accept one snapshot is cut off.
        bind_host: the address to listen on, when it must differ from ``cfg.host`` (the
            access rules still follow ``cfg.host``: tests bind loopback only).
        health_stale_s: a heartbeat this late marks the event loop as blocked.
        health_window_s: how long after a block ``/healthz`` still says 503.
    """

    def __init__(
        self,
        cfg: WebConfig,
        pipe: Any,
        *,
        update_interval_s: float = UPDATE_INTERVAL_S,
        preview_interval_s: float = PREVIEW_INTERVAL_S,
        write_timeout_s: float = WRITE_TIMEOUT_S,
        bind_host: str | None = None,
        health_stale_s: float = HEALTH_STALE_S,
        health_window_s: float = HEALTH_WINDOW_S,
    ) -> None:
        self.cfg = cfg
        self.health_stale_s = health_stale_s
        self.health_window_s = health_window_s
        self._blocked: tuple[float, float] | None = None  # (when, how long) of the last block
        self.write_timeout_s = write_timeout_s
        self.bind_host = bind_host or cfg.host
        self.pipe = pipe
        self.update_interval_s = update_interval_s
        self.preview_interval_s = preview_interval_s
        model = pipe.model
        self.state = DashboardState(
            [c.name for c in pipe.cfg.cameras],
            str(model.name),
            bool(getattr(model, "approximate", False)),
        )
        self.clients: set[_Client] = set()
        self.client_drops = 0  # snapshots dropped for browsers already gone
        self.slow_clients = 0  # connections cut off for not reading
        self.port = cfg.port
        self._token = cfg.token() if not cfg.loopback else None
        self._session = (
            hmac.new(self._token.encode(), SESSION_LABEL, hashlib.sha256).hexdigest()
            if self._token
            else None
        )
        self._beat = time.monotonic()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._main: asyncio.Task[None] | None = None
        self._sub = pipe.bus.subscribe("web", maxsize=BUS_QUEUE)
        self._previews: dict[str, tuple[int, Any, list[FaceOverlay]]] = {}
        self._preview_at: dict[str, float] = {}
        self._jpeg: dict[str, tuple[int, bytes]] = {}
        self._seq = 0
        registry_collector = PipelineCollector(
            pipe, self._camera_up, self._tracks_alive, self._own_metrics
        )
        self.registry = make_registry(registry_collector)

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> WebSink:
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/events", self._events)
        app.router.add_get("/api/state", self._api_state)
        app.router.add_get("/api/schema/state.json", self._schema)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/login", self._login)
        app.router.add_get("/favicon.ico", self._no_content)
        if self.cfg.preview:
            app.router.add_get("/api/preview/{camera}.jpg", self._preview)
            self.pipe.frame_taps.append(self._tap)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.bind_host, self.cfg.port)
        try:
            await site.start()
        except OSError as err:
            await self._runner.cleanup()
            self.pipe.bus.unsubscribe(self._sub)
            from streamer.errors import ConfigError

            raise ConfigError(
                f"web: cannot listen on {self.cfg.host}:{self.cfg.port}: {err.strerror or err}"
            ) from err
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            self.port = int(server.sockets[0].getsockname()[1])
        self._main = asyncio.create_task(self._run(), name="sink-web")
        logger.info("dashboard on %s", self.url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing.set()
        for client in self.clients:
            client.ready.set()
        try:
            if self._main is not None:
                await cancel_and_wait(self._main)  # raises what the server loop failed with
        finally:
            if self._tap in self.pipe.frame_taps:
                self.pipe.frame_taps.remove(self._tap)
            self.pipe.bus.unsubscribe(self._sub)
            if self._runner is not None:
                await self._runner.cleanup()

    @property
    def url(self) -> str:
        host = self.cfg.host if ":" not in self.cfg.host else f"[{self.cfg.host}]"
        return f"http://{host}:{self.port}/"

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._consume_loop(), name="web-consume")
            tg.create_task(self._broadcast_loop(), name="web-broadcast")
            tg.create_task(self._heartbeat_loop(), name="web-heartbeat")

    async def _consume_loop(self) -> None:
        async for msg in self._sub:
            self.state.add(msg)

    async def _heartbeat_loop(self) -> None:
        while True:
            now = time.monotonic()
            late_s = now - self._beat - HEARTBEAT_S
            if late_s > self.health_stale_s:
                self._blocked = (now, late_s)
                logger.warning("event loop was blocked for %.1f s", late_s)
            self._beat = now
            await asyncio.sleep(HEARTBEAT_S)

    async def _broadcast_loop(self) -> None:
        sent_version = -1
        sent_at = 0.0
        while True:
            await asyncio.sleep(self.update_interval_s)
            now = time.monotonic()
            if not self.clients:
                continue
            if self.state.version == sent_version and now - sent_at < IDLE_UPDATE_S:
                continue
            sent_version, sent_at = self.state.version, now
            data = self._event_bytes()
            for client in self.clients:
                client.offer(data)

    def _event_bytes(self) -> bytes:
        body = json.dumps(self.snapshot(), separators=(",", ":"))
        return f"event: state\ndata: {body}\n\n".encode()

    # ------------------------------------------------------------------ state

    def _counters(self, camera: str) -> dict[str, int]:
        st = self.pipe.stats.get(camera)
        analysed = st.frames if st else 0
        src = self.pipe.sources.get(camera)
        if src is not None and hasattr(src, "stats"):
            s = src.stats()
            return {
                "decoded": s.frames,
                "analysed": analysed,
                "skipped": s.skipped,
                "reconnects": s.reconnects,
            }
        return {"decoded": analysed, "analysed": analysed, "skipped": 0, "reconnects": 0}

    def snapshot(self) -> dict[str, Any]:
        """The dashboard state as a JSON-able document (``/api/state``)."""
        now = time.time()
        for name in self.pipe.stats:
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
            "preview": self.cfg.preview,
            "cameras": cameras,
            "tracks": [tr.to_json() for tr in self.state.tracks.values()],
        }

    def _camera_up(self) -> dict[str, bool]:
        out = {}
        for cam in self.state.cameras.values():
            st = self.pipe.stats.get(cam.name)
            online = cam.state == CameraState.ONLINE.value
            out[cam.name] = online or (not cam.has_status and st is not None)
        return out

    def _tracks_alive(self) -> dict[str, int]:
        out: dict[str, int] = collections.Counter(tr.camera for tr in self.state.tracks.values())
        return dict(out)

    def _own_metrics(self) -> list[Metric]:
        clients = GaugeMetricFamily(
            "streamer_web_clients",
            "browsers connected to the event stream",
            value=len(self.clients),
        )
        dropped = CounterMetricFamily(
            "streamer_web_snapshots_dropped",
            "snapshots a browser never got (it read too slowly)",
            value=self.client_drops + sum(c.dropped for c in self.clients),
        )
        slow = CounterMetricFamily(
            "streamer_web_slow_clients",
            "event streams cut off for not reading",
            value=self.slow_clients,
        )
        return [clients, dropped, slow]

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether the run is ready, and why not (the body of ``/readyz``)."""
        reasons: dict[str, str] = {}
        engine = self.pipe.engine.stats
        model = {"name": self.state.model, "loaded": True, "degraded": bool(engine.degraded)}
        ok = not engine.degraded
        if engine.degraded:
            reasons["model"] = "the VA model is degraded (errors or timeouts); retrying"
        cams: dict[str, dict[str, str]] = {}
        for cfg_cam in self.pipe.cfg.cameras:
            view = self.state.camera(cfg_cam.name)
            ready = view.state in READY_STATES
            why = "" if ready else _why_not(view.state, view.detail)
            cams[cfg_cam.name] = {"state": view.state, "detail": view.detail, "why": why}
            if not ready:
                ok = False
                reasons[cfg_cam.name] = why
        return ok, {"ready": ok, "model": model, "cameras": cams, "not_ready": reasons}

    # ------------------------------------------------------------------ previews

    def _tap(self, frame: Frame, msgs: list[Message]) -> None:
        """Keep one frame per camera per preview interval (a reference, no copy, no encode)."""
        now = time.monotonic()
        if now - self._preview_at.get(frame.camera, -1e9) < self.preview_interval_s:
            return
        self._preview_at[frame.camera] = now
        overlays = []
        for m in msgs:
            if isinstance(m, VASample):
                tr = self.state.tracks.get((m.camera, m.track_id))
                label = description_label(tr.description) if tr and tr.description else ""
                overlays.append(FaceOverlay(m.track_id, m.box, m.valence, m.arousal, label))
        self._seq += 1
        self._previews[frame.camera] = (self._seq, frame.image, overlays)

    async def _preview(self, request: web.Request) -> web.StreamResponse:
        camera = request.match_info["camera"]
        item = self._previews.get(camera)
        if item is None:
            raise web.HTTPNotFound(text=f"no preview of camera {camera!r} yet\n")
        seq, image, overlays = item
        cached = self._jpeg.get(camera)
        if cached is None or cached[0] != seq:
            data = await asyncio.to_thread(_encode_jpeg, image, overlays)
            cached = self._jpeg[camera] = (seq, data)
        return web.Response(body=cached[1], content_type="image/jpeg")

    # ------------------------------------------------------------------ security

    @web.middleware
    async def _guard(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        refusal = self._refuse(request)
        if refusal is not None:
            resp: web.StreamResponse = refusal
        else:
            try:
                resp = await handler(request)
            except web.HTTPException as exc:
                resp = web.Response(
                    status=exc.status, reason=exc.reason, body=exc.body, headers=exc.headers
                )
        resp.headers.setdefault("Cache-Control", "no-store")
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "no-referrer")
        resp.headers.setdefault("X-Frame-Options", "DENY")
        resp.headers.setdefault("Content-Security-Policy", CSP)
        logger.debug("%s %s -> %s", request.method, request.path, resp.status)
        return resp

    def _refuse(self, request: web.Request) -> web.Response | None:
        """A 401/403 response for a request that may not go on, else None."""
        if self.cfg.loopback:
            # DNS rebinding: a page of another site resolved to 127.0.0.1 sends its own
            # host name; only loopback names may talk to a loopback server.
            try:
                host = request.url.host or ""
            except ValueError:
                host = "?"
            if not is_loopback(host):
                return web.Response(status=403, text="forbidden host\n")
            return None
        if request.path in ("/healthz", "/login"):
            return None
        if self._authorized(request):
            return None
        return web.Response(
            status=401,
            text="unauthorized: send 'Authorization: Bearer TOKEN' or open /login?token=TOKEN\n",
            headers={"WWW-Authenticate": 'Bearer realm="streamer"'},
        )

    def _authorized(self, request: web.Request) -> bool:
        assert self._token is not None and self._session is not None
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given = auth[len("Bearer ") :].strip().encode()
            return hmac.compare_digest(given, self._token.encode())
        cookie = request.cookies.get(COOKIE)
        if cookie is not None:
            return hmac.compare_digest(cookie.encode(), self._session.encode())
        return False

    async def _login(self, request: web.Request) -> web.StreamResponse:
        if self._token is None:
            return web.Response(status=303, headers={"Location": "/"})
        given = request.query.get("token", "")
        if not hmac.compare_digest(given.encode(), self._token.encode()):
            return web.Response(status=401, text="wrong token\n")
        resp = web.Response(status=303, headers={"Location": "/"})
        assert self._session is not None
        resp.set_cookie(COOKIE, self._session, httponly=True, samesite="Strict", path="/")
        return resp

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

    async def _healthz(self, request: web.Request) -> web.StreamResponse:
        now = time.monotonic()
        late_s = now - self._beat - HEARTBEAT_S
        main_ok = self._main is not None and not self._main.done()
        why = ""
        if not main_ok:
            why = "the web sink's tasks stopped"
        elif late_s > self.health_stale_s:
            why = f"event loop blocked for {late_s:.1f} s"
        elif self._blocked is not None and now - self._blocked[0] < self.health_window_s:
            why = (
                f"event loop was blocked for {self._blocked[1]:.1f} s "
                f"{now - self._blocked[0]:.0f} s ago"
            )
        if why:
            return web.Response(status=503, text=f"unhealthy: {why}\n")
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.StreamResponse:
        ok, body = self.readiness()
        return web.json_response(body, status=200 if ok else 503)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        if len(self.clients) >= MAX_CLIENTS:
            raise web.HTTPServiceUnavailable(text="too many dashboard connections\n")
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
        )
        resp.headers["Cache-Control"] = "no-store"
        resp.headers["Content-Security-Policy"] = CSP
        await resp.prepare(request)
        sock = request.transport.get_extra_info("socket") if request.transport else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SSE_SNDBUF_BYTES)
        client = _Client(CLIENT_QUEUE)
        self.clients.add(client)
        client.offer(b"retry: 1000\n\n" + self._event_bytes())
        try:
            while not self._closing.is_set():
                data = await client.next(IDLE_UPDATE_S * 15)
                if self._closing.is_set():
                    break
                try:
                    async with asyncio.timeout(self.write_timeout_s):
                        await resp.write(data or b": keepalive\n\n")
                except TimeoutError:
                    self.slow_clients += 1
                    logger.info(
                        "dashboard client too slow for %.0f s: disconnected", self.write_timeout_s
                    )
                    if request.transport is not None:
                        request.transport.abort()
                    break
                client.sent += 1
        except ConnectionError:  # the browser went away
            pass
        finally:
            self.clients.discard(client)
            self.client_drops += client.dropped
        return resp


def _why_not(state: str, detail: str) -> str:
    text = {
        CameraState.STARTING.value: "not connected yet",
        CameraState.OFFLINE.value: "offline",
        CameraState.STOPPED.value: "stopped",
    }.get(state, state)
    return f"{text}: {detail}" if detail else text


def _encode_jpeg(image: Any, overlays: list[FaceOverlay]) -> bytes:
    canvas = draw_overlays(image.copy(), overlays)
    ok, buf = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, PREVIEW_JPEG_QUALITY])
    if not ok:
        raise web.HTTPInternalServerError(text="cannot encode the preview\n")
    return bytes(buf)
