"""``/healthz`` and ``/readyz``: is the event loop responsive, is the run ready.

A heartbeat task beats every ``HEARTBEAT_S``; a beat later than ``stale_s`` means the
event loop was blocked (a stage that wrongly ran blocking work on it). ``/healthz`` says
503 while the loop is blocked and for ``window_s`` after, so a probe that came late
still sees it. ``/readyz`` is 200 when the model is not degraded and every configured
camera is online or reconnecting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiohttp import web

from streamer.messages import CameraState

logger = logging.getLogger(__name__)

HEARTBEAT_S = 0.5  # event-loop heartbeat period (s)
HEALTH_STALE_S = 5.0  # a heartbeat this late: the loop was blocked (s)
HEALTH_WINDOW_S = 30.0  # a blocked loop keeps /healthz at 503 this long after (s)
READY_STATES = (CameraState.ONLINE.value, CameraState.RECONNECTING.value)


class Heartbeat:
    """The event loop's heartbeat and ``/healthz``.

    Args:
        stale_s: a beat this late marks the event loop as blocked.
        window_s: how long after a block ``/healthz`` still says 503.
        running: whether the server's own tasks still run (else 503).
    """

    def __init__(self, stale_s: float, window_s: float, running: Callable[[], bool]) -> None:
        self.stale_s = stale_s
        self.window_s = window_s
        self._running = running
        self._beat = time.monotonic()
        self._blocked: tuple[float, float] | None = None  # (when, how long) of the last block

    async def loop(self) -> None:
        while True:
            now = time.monotonic()
            late_s = now - self._beat - HEARTBEAT_S
            if late_s > self.stale_s:
                self._blocked = (now, late_s)
                logger.warning("event loop was blocked for %.1f s", late_s)
            self._beat = now
            await asyncio.sleep(HEARTBEAT_S)

    def problem(self) -> str:
        """Why the server is unhealthy now, or ""."""
        now = time.monotonic()
        late_s = now - self._beat - HEARTBEAT_S
        if not self._running():
            return "the web sink's tasks stopped"
        if late_s > self.stale_s:
            return f"event loop blocked for {late_s:.1f} s"
        if self._blocked is not None and now - self._blocked[0] < self.window_s:
            return (
                f"event loop was blocked for {self._blocked[1]:.1f} s "
                f"{now - self._blocked[0]:.0f} s ago"
            )
        return ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """``GET /healthz``."""
        why = self.problem()
        if why:
            return web.Response(status=503, text=f"unhealthy: {why}\n")
        return web.Response(text="ok\n")


def readiness(
    model: str,
    degraded: bool,
    cameras: Sequence[str],
    states: Mapping[str, tuple[str, str]],
) -> tuple[bool, dict[str, Any]]:
    """Whether the run is ready, and why not (the body of ``/readyz``).

    Args:
        model: the VA model's name.
        degraded: whether the VA engine is degraded.
        cameras: the configured cameras.
        states: per camera, its (state, detail) now.
    """
    reasons: dict[str, str] = {}
    ok = not degraded
    if degraded:
        reasons["model"] = "the VA model is degraded (errors or timeouts); retrying"
    cams: dict[str, dict[str, str]] = {}
    for name in cameras:
        state, detail = states.get(name, (CameraState.STARTING.value, ""))
        ready = state in READY_STATES
        why = "" if ready else _why_not(state, detail)
        cams[name] = {"state": state, "detail": detail, "why": why}
        if not ready:
            ok = False
            reasons[name] = why
    body = {
        "ready": ok,
        "model": {"name": model, "loaded": True, "degraded": degraded},
        "cameras": cams,
        "not_ready": reasons,
    }
    return ok, body


def _why_not(state: str, detail: str) -> str:
    text = {
        CameraState.STARTING.value: "not connected yet",
        CameraState.OFFLINE.value: "offline",
        CameraState.STOPPED.value: "stopped",
    }.get(state, state)
    return f"{text}: {detail}" if detail else text
