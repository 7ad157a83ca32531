"""Helpers of the MQTT tests: polling with deadlines, a collecting subscriber, messages."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from typing import Any

from streamer.messages import (
    CameraState,
    CameraStatus,
    Description,
    TrackEvent,
    TrackEventKind,
    VASample,
)
from tests.helpers.wait import wait_until, wait_until_async

__all__ = [
    "Collector",
    "make_description",
    "make_event",
    "make_status",
    "make_va",
    "wait_until",
    "wait_until_async",
]


class Collector:
    """An independent MQTT client that records every message on ``topic``.

    Attributes:
        messages: (topic, payload, retain) in arrival order.
    """

    def __init__(self, host: str, port: int, topic: str = "#") -> None:
        from streamer.publish.connect import Client

        self.topic = topic
        self.client = Client(host, port, identifier=f"collector-{os.getpid()}-{id(self)}")
        self.messages: list[tuple[str, bytes, bool]] = []
        self._task: asyncio.Task[None] | None = None
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Collector:
        from streamer.publish.connect import connection

        # connection(): a failed or cancelled connect leaves no socket or task behind
        await self._stack.enter_async_context(connection(self.client))
        try:
            await self.client.subscribe(self.topic, qos=1)
        except BaseException:
            await self._stack.aclose()
            raise
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            # Teardown: the reader ends with MqttError when the broker is gone.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        with contextlib.suppress(Exception):
            await self._stack.aclose()

    async def _read(self) -> None:
        async for m in self.client.messages:
            payload = m.payload if isinstance(m.payload, bytes) else b""
            self.messages.append((str(m.topic), payload, bool(m.retain)))

    def payloads(self, topic: str) -> list[bytes]:
        return [p for t, p, _ in self.messages if t == topic]

    def records(self, suffix: str) -> list[dict[str, Any]]:
        return [json.loads(p) for t, p, _ in self.messages if t.endswith(suffix) and p]


def make_va(
    camera: str = "cam1",
    track_id: int = 1,
    t: float = 0.0,
    v: float = 0.25,
    a: float = -0.5,
    frame: int | None = None,
    wall_time: float | None = None,
) -> VASample:
    return VASample(
        camera=camera,
        frame=round(t * 30) if frame is None else frame,
        t=t,
        track_id=track_id,
        box=(10.0, 20.0, 74.0, 84.0),
        valence=v,
        arousal=a,
        valence_raw=v,
        arousal_raw=None,
        variance=(0.01, 0.02),
        model="fer-minixception-projected (approximate)",
        wall_time=wall_time,
    )


def make_event(
    camera: str = "cam1", track_id: int = 1, kind: str = "appeared", t: float = 0.0
) -> TrackEvent:
    return TrackEvent(
        camera=camera,
        track_id=track_id,
        kind=TrackEventKind(kind),
        frame=int(t * 30),
        t=t,
        duration_s=2.5 if kind == "lost" else None,
    )


def make_status(camera: str = "cam1", state: str = "online") -> CameraStatus:
    return CameraStatus(
        camera=camera,
        state=CameraState(state),
        wall_time=time.time(),
        detail="rtsp://***@host/stream",
        frames=42,
    )


def make_description(
    camera: str = "cam1", track_id: int = 1, source: str = "fallback"
) -> Description:
    return Description(
        id=f"{camera}-{track_id}-1",
        camera=camera,
        track_id=track_id,
        t=1.5,
        valence=0.6,
        arousal=0.3,
        basic="happy",
        complex=("content", "amused"),
        text="Looks pleased.",
        source=source,
        model="fallback",
    )
