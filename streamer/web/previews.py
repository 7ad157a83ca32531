"""``/api/preview/CAMERA.jpg``: the latest analysed frame of a camera, annotated (opt-in).

Only with ``web.preview: true``: the sink then reads the bus's preview subscription (a
lossy queue of :class:`~streamer.messages.PreviewFrame`, the newest two frames), keeps
one frame per camera per ``interval_s`` (a reference: no copy, no encode) and encodes a
JPEG only when a browser asks for a newer one. Without it no pixel ever reaches the web
sink.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import cv2
import numpy as np
from aiohttp import web

from streamer.annotate import FaceOverlay, draw_overlays
from streamer.bus import PreviewSubscription
from streamer.messages import PreviewFrame

PREVIEW_INTERVAL_S = 1.0  # at most one preview frame per camera per interval (s)
PREVIEW_JPEG_QUALITY = 80


class Previews:
    """The latest preview frame of each camera and its encoded JPEG.

    Args:
        sub: the bus's preview subscription.
        label: the text drawn under a track (its latest description), by (camera, track).
        interval_s: the fastest preview rate per camera.
    """

    def __init__(
        self,
        sub: PreviewSubscription,
        label: Callable[[str, int], str],
        interval_s: float = PREVIEW_INTERVAL_S,
    ) -> None:
        self.sub = sub
        self._label = label
        self.interval_s = interval_s
        self._latest: dict[str, tuple[int, np.ndarray, list[FaceOverlay]]] = {}
        self._at: dict[str, float] = {}
        self._jpeg: dict[str, tuple[int, bytes]] = {}
        self._seq = 0

    async def consume_loop(self) -> None:
        async for frame in self.sub:
            self.keep(frame)

    def keep(self, frame: PreviewFrame) -> None:
        """Keep ``frame`` unless its camera had one within the interval."""
        now = time.monotonic()
        if now - self._at.get(frame.camera, -1e9) < self.interval_s:
            return
        self._at[frame.camera] = now
        overlays = [
            FaceOverlay(s.track_id, s.box, s.valence, s.arousal, self._label(s.camera, s.track_id))
            for s in frame.faces
        ]
        self._seq += 1
        self._latest[frame.camera] = (self._seq, frame.image, overlays)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """``GET /api/preview/{camera}.jpg``."""
        camera = request.match_info["camera"]
        item = self._latest.get(camera)
        if item is None:
            raise web.HTTPNotFound(text=f"no preview of camera {camera!r} yet\n")
        seq, image, overlays = item
        cached = self._jpeg.get(camera)
        if cached is None or cached[0] != seq:
            data = await asyncio.to_thread(_encode_jpeg, image, overlays)
            cached = self._jpeg[camera] = (seq, data)
        return web.Response(body=cached[1], content_type="image/jpeg")


def _encode_jpeg(image: np.ndarray, overlays: list[FaceOverlay]) -> bytes:
    canvas = draw_overlays(image.copy(), overlays)
    ok, buf = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, PREVIEW_JPEG_QUALITY])
    if not ok:
        raise web.HTTPInternalServerError(text="cannot encode the preview\n")
    return bytes(buf)
