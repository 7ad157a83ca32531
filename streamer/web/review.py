"""The review page and its API: what happened while nobody was watching.

Served by the web sink when the run has a history (config ``history:``), with the
same access rules as the rest of the dashboard (:mod:`streamer.web.auth`)::

    GET  /review                          the review page
    GET  /api/episodes?camera=&rule=&reviewed=&after=&before=&limit=
                                          review items, newest first; the next page is
                                          before=<the last item's wall_start>
    GET  /api/mood?camera=&after=&before=&points=    the room mood in buckets
    GET  /api/va?camera=&track=&run=&after=&before=  one track's VA bins
    GET  /api/timeline?camera=&after=&before=        recorded spans and outages
    GET  /api/cameras                     the cameras the history knows
    POST /api/episodes/reviewed           {"ids": [..], "reviewed": true}
    POST /api/episodes/{id}/keep          {"keep": true}

Times are UNIX seconds. Writes take JSON only (``Content-Type: application/json``), and
a request whose ``Origin`` is another site is refused: a page elsewhere cannot mark
anything through the user's browser. A bad argument is a 400 with one line; without a
history every route says 404.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from streamer.errors import HistoryError, HistoryQueryError
from streamer.sinks import ReviewStore, RunView

logger = logging.getLogger(__name__)

DEFAULT_LIMIT = 50  # episodes per page
MAX_LIMIT = 1000
MAX_IDS = 1000  # episodes marked in one request
DEFAULT_POINTS = 600  # mood buckets of a timeline
DAY_S = 86400.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, text: str) -> web.Response:
    return web.json_response({"error": text}, status=status)


def _float(q: Any, name: str, default: float | None = None) -> float | None:
    raw = q.get(name)
    if raw is None or raw == "":
        return default
    try:
        x = float(raw)
    except ValueError:
        raise HistoryQueryError(f"{name}: expected UNIX seconds, got {raw[:40]!r}") from None
    if not math.isfinite(x):
        raise HistoryQueryError(f"{name}: expected a finite number")
    return x


def _int(q: Any, name: str, default: int | None = None) -> int | None:
    raw = q.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise HistoryQueryError(f"{name}: expected an integer, got {raw[:40]!r}") from None


def _bool(q: Any, name: str) -> bool | None:
    raw = q.get(name)
    if raw is None or raw == "":
        return None
    if raw.lower() in ("1", "true", "yes"):
        return True
    if raw.lower() in ("0", "false", "no"):
        return False
    raise HistoryQueryError(f"{name}: expected true or false, got {raw[:40]!r}")


class Review:
    """The review routes of one web server (see the module docstring).

    Args:
        view: the run (its history, when it has one).
        page: the review page's HTML.
    """

    def __init__(self, view: RunView, page: Callable[[], bytes]) -> None:
        self.view = view
        self._page_html = page

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/review", self.page)
        app.router.add_get("/api/episodes", self._guarded(self.episodes))
        app.router.add_get("/api/mood", self._guarded(self.mood))
        app.router.add_get("/api/va", self._guarded(self.va))
        app.router.add_get("/api/timeline", self._guarded(self.timeline))
        app.router.add_get("/api/cameras", self._guarded(self.cameras))
        app.router.add_post("/api/episodes/reviewed", self._guarded(self.reviewed, write=True))
        app.router.add_post("/api/episodes/{id}/keep", self._guarded(self.keep, write=True))

    def _guarded(
        self,
        fn: Callable[[web.Request, ReviewStore], Awaitable[web.StreamResponse]],
        write: bool = False,
    ) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            store = self.view.review()
            if store is None:
                return _error(404, "no history is kept by this run (config `history:`)")
            if write:
                refusal = _write_refusal(request)
                if refusal is not None:
                    return refusal
            try:
                return await fn(request, store)
            except HistoryQueryError as err:
                return _error(400, str(err))
            except HistoryError as err:
                return _error(503, str(err))
            except Exception:  # supervisor: a failed query is a 503, the server goes on
                logger.exception("review: %s %s failed", request.method, request.path)
                return _error(503, "the history cannot be read now (see the log)")

        return handle

    async def page(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=self._page_html(), content_type="text/html")

    async def episodes(self, request: web.Request, store: ReviewStore) -> web.StreamResponse:
        q = request.query
        limit = _int(q, "limit", DEFAULT_LIMIT)
        assert limit is not None
        if not 1 <= limit <= MAX_LIMIT:
            raise HistoryQueryError(f"limit: expected 1 to {MAX_LIMIT}, got {limit}")
        items = await store.review_episodes(
            camera=q.get("camera") or None,
            rule=q.get("rule") or None,
            reviewed=_bool(q, "reviewed"),
            after=_float(q, "after"),
            before=_float(q, "before"),
            limit=limit,
        )
        more = len(items) == limit
        return web.json_response(
            {"episodes": items, "next_before": items[-1]["wall_start"] if more else None}
        )

    def _range(self, request: web.Request) -> tuple[str, float, float]:
        q = request.query
        camera = q.get("camera")
        if not camera:
            raise HistoryQueryError("camera: required")
        before = _float(q, "before", time.time())
        assert before is not None
        after = _float(q, "after", before - DAY_S)
        assert after is not None
        return camera, after, before

    async def mood(self, request: web.Request, store: ReviewStore) -> web.StreamResponse:
        camera, after, before = self._range(request)
        points = _int(request.query, "points", DEFAULT_POINTS)
        if points is None or not 1 <= points <= 5000:
            raise HistoryQueryError("points: expected 1 to 5000")
        buckets = await store.review_mood(camera=camera, after=after, before=before, points=points)
        return web.json_response({"camera": camera, "mood": buckets})

    async def va(self, request: web.Request, store: ReviewStore) -> web.StreamResponse:
        camera, after, before = self._range(request)
        track = _int(request.query, "track")
        if track is None:
            raise HistoryQueryError("track: required")
        bins = await store.review_va(
            camera=camera,
            track_id=track,
            run=_int(request.query, "run"),
            after=after,
            before=before,
        )
        return web.json_response({"camera": camera, "track_id": track, "bins": bins})

    async def timeline(self, request: web.Request, store: ReviewStore) -> web.StreamResponse:
        camera, after, before = self._range(request)
        return web.json_response(
            await store.review_timeline(camera=camera, after=after, before=before)
        )

    async def cameras(self, request: web.Request, store: ReviewStore) -> web.StreamResponse:
        return web.json_response({"cameras": await store.review_cameras()})

    async def reviewed(self, request: web.Request, store: ReviewStore) -> web.StreamResponse:
        body = await _json_body(request)
        ids = body.get("ids")
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
            raise HistoryQueryError('expected {"ids": [integers], "reviewed": true|false}')
        if len(ids) > MAX_IDS:
            raise HistoryQueryError(f"at most {MAX_IDS} ids at once, got {len(ids)}")
        flag = body.get("reviewed", True)
        if not isinstance(flag, bool):
            raise HistoryQueryError("reviewed: expected true or false")
        n = await store.mark_reviewed(ids, flag)
        return web.json_response({"changed": n})

    async def keep(self, request: web.Request, store: ReviewStore) -> web.StreamResponse:
        try:
            episode = int(request.match_info["id"])
        except ValueError:
            raise HistoryQueryError("the episode id must be an integer") from None
        body = await _json_body(request)
        flag = body.get("keep", True)
        if not isinstance(flag, bool):
            raise HistoryQueryError("keep: expected true or false")
        if not await store.set_keep(episode, flag):
            return _error(404, f"no episode {episode}")
        return web.json_response({"id": episode, "keep": flag})


def _write_refusal(request: web.Request) -> web.Response | None:
    """Writes take JSON only, and never from a page of another site."""
    if request.content_type != "application/json":
        return _error(415, "send JSON (Content-Type: application/json)")
    origin = request.headers.get("Origin")
    if origin is not None and origin != "null":
        parts = urlsplit(origin)
        if parts.netloc.lower() != (request.host or "").lower():
            return _error(403, "cross-site request refused")
    return None


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise HistoryQueryError("the body is not JSON") from None
    if not isinstance(body, dict):
        raise HistoryQueryError("expected a JSON object")
    return body


__all__ = ["Review"]
