"""The consumer side of the topic tree, for ``streamer subscribe``.

:class:`SubscriberView` turns (topic, payload) pairs into per-track rows (VA, quadrant,
latest description, age). Every inbound payload is untrusted: a payload that is too
large, not UTF-8, not JSON, not valid against its schema, or that disagrees with its
topic is rejected with one truncated warning and changes nothing.
:func:`mqtt_messages` yields raw messages and reconnects by itself.

Nothing a peer sends can grow the subscriber without bound: a payload over
``MAX_INBOUND_BYTES`` is dropped before it is queued or parsed (only its size is kept),
the inbound queue holds at most ``INBOUND_QUEUE_BYTES`` of payloads (the oldest go
first, counted), the view keeps at most ``MAX_CAMERAS`` cameras and ``MAX_ROWS`` tracks
(the least recently updated go first, counted), and rejection warnings are rate-limited.
Ids in topics are parsed with an ASCII-digit rule (``faces/²/va`` and ``faces/١/va``
are rejected, never taken as a number).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any, cast

import aiomqtt

from streamer.circumplex import quadrant
from streamer.errors import InboundError, PublishError
from streamer.messages import DESCRIPTION_SCHEMA, EVENT_SCHEMA, STATUS_SCHEMA, VA_SCHEMA
from streamer.publish.config import MqttConfig
from streamer.publish.connect import (
    FailureKind,
    build_tls_context,
    client_kwargs,
    connection,
    default_client_id,
    explain_failure,
    reconnect_backoff,
)
from streamer.publish.payloads import (
    AVAILABLE_OFFLINE,
    AVAILABLE_ONLINE,
    AVAILABLE_STOPPED,
    FACE_COUNT_SCHEMA,
    MAX_INBOUND_BYTES,
    decode_json,
    decode_text,
    preview,
    topic_level,
    validate_record,
)
from streamer.publish.sanitize import safe_text, safe_value
from streamer.throttle import LogThrottle

logger = logging.getLogger(__name__)

MAX_ROWS = 1000  # tracks kept at most; the least recently updated go first (counted)
MAX_CAMERAS = 256  # cameras kept at most (status, face count); least recently updated go
ROW_TTL_S = 300.0  # a row without updates for this long is removed
REJECT_LOG_INTERVAL_S = 60.0  # rejected-input warnings: at most REJECT_LOG_BURST per this (s)
REJECT_LOG_BURST = 20
INBOUND_QUEUE_SIZE = 10_000  # messages held by the client before it discards
INBOUND_QUEUE_BYTES = 16 << 20  # payload bytes held by the client; the oldest go first
TITLE_CAMERAS = 8  # camera states named in the table's title; the rest are counted
DROP_LOG_INTERVAL_S = 10.0  # "inbound queue full" warnings: at most one per this (s)

# A track id in a topic: ASCII digits only (str.isdigit() also takes "²" and "١").
_TRACK_ID = re.compile(r"[0-9]{1,12}", re.ASCII)


@dataclass(frozen=True)
class Oversize:
    """Stands in for a payload over the size cap, dropped unread: only its size is kept."""

    size: int


Payload = bytes | Oversize


@dataclass
class TrackRow:
    """What the view knows about one track."""

    camera: str
    track_id: int
    valence: float | None = None
    arousal: float | None = None
    model: str = ""
    basic: str = ""
    description: str = ""
    updated: float = 0.0  # monotonic time of the last accepted message


@dataclass(frozen=True)
class Inbound:
    """An accepted message: ``record`` is a dict (JSON topics) or a word (availability)."""

    topic: str
    kind: str
    record: Any


_KINDS = {
    "status": STATUS_SCHEMA,
    "face_count": FACE_COUNT_SCHEMA,
    "events": EVENT_SCHEMA,
    "va": VA_SCHEMA,
    "description": DESCRIPTION_SCHEMA,
}


class SubscriberView:
    """Live state of an analyzer as seen through its MQTT topics.

    Args:
        prefix: the analyzer's topic prefix.
        camera: only this camera (None: all).
        clock: monotonic clock (tests pass a fake one).
    """

    def __init__(
        self,
        prefix: str,
        camera: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_payload_bytes: int = MAX_INBOUND_BYTES,
    ) -> None:
        self.prefix = prefix
        self.camera = camera
        self._clock = clock
        self.max_payload_bytes = max_payload_bytes
        self.available: str | None = None
        self.statuses: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self.face_counts: collections.OrderedDict[str, int] = collections.OrderedDict()
        self.rows: collections.OrderedDict[tuple[str, int], TrackRow] = collections.OrderedDict()
        self.accepted = 0
        self.forgotten_cameras = 0  # cameras dropped to stay within MAX_CAMERAS
        self.forgotten_rows = 0  # tracks dropped to stay within MAX_ROWS
        self._rejected = 0
        self._warnings = LogThrottle(REJECT_LOG_INTERVAL_S, burst=REJECT_LOG_BURST)
        self._forget_warnings = LogThrottle(REJECT_LOG_INTERVAL_S)

    @property
    def rejected(self) -> int:
        return self._rejected

    def subscriptions(self) -> list[str]:
        """Topic filters to subscribe to."""
        if self.camera is None:
            return [f"{self.prefix}/#"]
        return [f"{self.prefix}/available", f"{self.prefix}/{topic_level(self.camera)}/#"]

    def handle(self, topic: str, payload: Payload) -> Inbound | None:
        """Validate and apply one message; never raises, whatever the topic and payload.

        Returns:
            The accepted message, or None when it was rejected (one rate-limited
            warning) or ignored (an empty payload clears a retained message; another
            camera).
        """
        size = payload.size if isinstance(payload, Oversize) else len(payload)
        if size > self.max_payload_bytes:  # dropped before any parsing
            self._reject(topic, f"payload too large ({size} > {self.max_payload_bytes} bytes)")
            return None
        assert isinstance(payload, bytes)
        if not payload:
            return None
        try:
            inbound = self._parse(topic, payload)
        except (InboundError, ValueError, TypeError, KeyError, RecursionError) as err:
            # InboundError is the expected rejection; the others would be a gap in the
            # checks, and hostile input must never end the subscriber either way.
            self._reject(topic, str(err) or type(err).__name__, payload)
            return None
        if inbound is not None:
            self._apply(inbound)
            self.accepted += 1
        return inbound

    def _reject(self, topic: str, why: str, payload: bytes = b"") -> None:
        self._rejected += 1
        self._warnings.log(
            logger,
            logging.WARNING,
            "subscribe: rejected message on %s: %s: %s",
            safe_text(topic[:120]),
            safe_text(why[:200]),
            preview(payload),
        )

    def _parse(self, topic: str, payload: bytes) -> Inbound | None:
        head = self.prefix + "/"
        if not topic.startswith(head):
            raise InboundError("topic outside the prefix")
        levels = topic[len(head) :].split("/")
        if levels == ["available"]:
            word = decode_text(payload, 64).strip()
            if word not in (AVAILABLE_ONLINE, AVAILABLE_OFFLINE, AVAILABLE_STOPPED):
                raise InboundError(f"unknown availability {word[:20]!r}")
            return Inbound(safe_text(topic), "available", word)
        camera = levels[0]
        if self.camera is not None and camera != topic_level(self.camera):
            return None
        if (len(levels) == 2 and levels[1] in ("episodes", "mood")) or (
            len(levels) == 4 and levels[1] == "rules"
        ):
            return None  # episodes and room mood: not shown in this view (docs/episodes.md)
        if len(levels) == 2 and levels[1] in ("status", "face_count", "events"):
            kind, track = levels[1], None
        elif len(levels) == 4 and levels[1] == "faces" and levels[3] in ("va", "description"):
            kind = levels[3]
            if _TRACK_ID.fullmatch(levels[2]) is None:
                raise InboundError("track id in the topic is not a number (ASCII digits)")
            track = int(levels[2])
        else:
            raise InboundError("unexpected topic")
        record = decode_json(payload)
        try:
            validate_record(record, expected=_KINDS[kind])
        except ValueError as err:
            raise InboundError(str(err)) from err
        if topic_level(record["camera"]) != camera:
            raise InboundError(f"camera {record['camera'][:40]!r} does not match the topic")
        if track is not None and record["track_id"] != track:
            raise InboundError("track_id does not match the topic")
        # Shown on a terminal (table and --json): no escape sequences, no bidi overrides.
        return Inbound(safe_text(topic), kind, safe_value(record))

    def _row(self, camera: str, track_id: int) -> TrackRow:
        key = (camera, track_id)
        row = self.rows.get(key)
        if row is None:
            row = TrackRow(camera, track_id)
            self.rows[key] = row
            while len(self.rows) > MAX_ROWS:
                self.rows.popitem(last=False)
                self.forgotten_rows += 1
                self._forgot("tracks", MAX_ROWS, self.forgotten_rows)
        self.rows.move_to_end(key)
        row.updated = self._clock()
        return row

    def _camera_state(
        self, table: collections.OrderedDict[str, Any], camera: str, value: Any
    ) -> None:
        """Keep ``value`` for ``camera``, forgetting the least recently updated cameras
        beyond MAX_CAMERAS (a peer can name any number of cameras)."""
        table[camera] = value
        table.move_to_end(camera)
        while len(table) > MAX_CAMERAS:
            table.popitem(last=False)
            self.forgotten_cameras += 1
            self._forgot("cameras", MAX_CAMERAS, self.forgotten_cameras)

    def _forgot(self, what: str, limit: int, count: int) -> None:
        self._forget_warnings.log(
            logger,
            logging.WARNING,
            "subscribe: more than %d %s: the least recently updated are forgotten (%d so far)",
            limit,
            what,
            count,
        )

    def _apply(self, msg: Inbound) -> None:
        rec = msg.record
        if msg.kind == "available":
            self.available = rec
        elif msg.kind == "status":
            self._camera_state(self.statuses, rec["camera"], rec)
        elif msg.kind == "face_count":
            self._camera_state(self.face_counts, rec["camera"], rec["count"])
        elif msg.kind == "events":
            if rec["event"] == "lost":
                self.rows.pop((rec["camera"], rec["track_id"]), None)
            else:
                self._row(rec["camera"], rec["track_id"])
        elif msg.kind == "va":
            row = self._row(rec["camera"], rec["track_id"])
            row.valence, row.arousal, row.model = rec["valence"], rec["arousal"], rec["model"]
        elif msg.kind == "description":
            row = self._row(rec["camera"], rec["track_id"])
            row.basic, row.description = rec["basic"], rec["text"]

    def prune(self) -> None:
        """Forget rows that had no update for ``ROW_TTL_S``."""
        now = self._clock()
        for key in [k for k, r in self.rows.items() if now - r.updated > ROW_TTL_S]:
            del self.rows[key]

    def render(self, max_rows: int = MAX_ROWS) -> Any:
        """A rich Table: one row per track (VA, quadrant, latest description, age).

        Args:
            max_rows: table rows at most (the terminal's height): the most recently
                updated tracks are shown and the caption counts the rest, so a redraw
                costs the same whatever a peer floods in.
        """
        from rich.table import Table
        from rich.text import Text

        self.prune()
        named = list(self.statuses.items())[-TITLE_CAMERAS:]  # the most recently updated
        states = ", ".join(f"{c}: {s['state']}" for c, s in sorted(named))
        if len(self.statuses) > len(named):
            states += f", +{len(self.statuses) - len(named)} more cameras"
        title = f"{self.prefix}: {self.available or 'unknown'}" + (
            f"  ({states})" if states else ""
        )
        shown = list(self.rows.values())[-max(0, max_rows) :] if max_rows > 0 else []
        caption = None
        if len(shown) < len(self.rows) or self.forgotten_rows or self.forgotten_cameras:
            caption = f"{len(shown)} of {len(self.rows)} tracks shown"
            if self.forgotten_rows or self.forgotten_cameras:
                caption += (
                    f"; forgotten (over the limits): {self.forgotten_rows} tracks, "
                    f"{self.forgotten_cameras} cameras"
                )
        table = Table(title=Text(title), caption=caption, expand=True)
        for name, kw in (
            ("camera", {}),
            ("track", {"justify": "right"}),
            ("valence", {"justify": "right"}),
            ("arousal", {"justify": "right"}),
            ("quadrant", {}),
            ("description", {"ratio": 1, "overflow": "fold"}),
            ("age", {"justify": "right"}),
        ):
            table.add_column(name, **kw)
        now = self._clock()
        for row in sorted(shown, key=lambda r: (r.camera, r.track_id)):
            v, a = row.valence, row.arousal
            table.add_row(
                Text(row.camera),
                str(row.track_id),
                f"{row.valence:+.2f}" if row.valence is not None else "-",
                f"{row.arousal:+.2f}" if row.arousal is not None else "-",
                quadrant(v, a).value if v is not None and a is not None else "-",
                Text(f"{row.basic}: {row.description}" if row.basic else row.description or ""),
                f"{now - row.updated:.1f} s",
            )
        return table


class _OversizeMessage(aiomqtt.Message):
    """What the inbound queue keeps of a message over the payload cap: topic and size."""

    def __init__(self, msg: aiomqtt.Message, size: int) -> None:
        super().__init__(msg.topic, b"", msg.qos, msg.retain, msg.mid, None)
        self.size = size


class InboundQueue(asyncio.Queue[aiomqtt.Message]):
    """The MQTT client's inbound queue, bounded in payload bytes as well as in count.

    A message whose payload is over ``max_payload`` bytes is replaced by its topic and
    size before it is queued (the subscriber rejects it without parsing); when the
    queued payloads would exceed ``max_bytes``, the oldest messages are dropped and
    counted in ``dropped``.
    """

    def __init__(
        self,
        maxsize: int = 0,
        *,
        max_bytes: int = INBOUND_QUEUE_BYTES,
        max_payload: int = MAX_INBOUND_BYTES,
    ) -> None:
        super().__init__(maxsize)
        self.max_bytes = max_bytes
        self.max_payload = max_payload
        self.bytes = 0
        self.dropped = 0

    def _init(self, maxsize: int) -> None:
        self._queue: collections.deque[aiomqtt.Message] = collections.deque()

    @staticmethod
    def _size(msg: aiomqtt.Message) -> int:
        payload = msg.payload
        return len(payload) if isinstance(payload, (bytes, bytearray)) else 0

    def _put(self, item: aiomqtt.Message) -> None:
        size = self._size(item)
        if size > self.max_payload:
            item, size = _OversizeMessage(item, size), 0
        while self._queue and self.bytes + size > self.max_bytes:
            self.bytes -= self._size(self._queue.popleft())
            self.dropped += 1
        self._queue.append(item)
        self.bytes += size

    def _get(self) -> aiomqtt.Message:
        item = self._queue.popleft()
        self.bytes -= self._size(item)
        return item


def _queue_type(queue: InboundQueue) -> type[asyncio.Queue[aiomqtt.Message]]:
    """What aiomqtt's ``queue_type`` wants (a class it calls with ``maxsize``), handing
    over ``queue``."""
    return cast("type[asyncio.Queue[aiomqtt.Message]]", lambda maxsize: queue)


async def mqtt_messages(
    cfg: MqttConfig,
    topics: list[str],
    client_id: str | None = None,
    max_payload_bytes: int = MAX_INBOUND_BYTES,
) -> AsyncGenerator[tuple[str, Payload], None]:
    """Yield (topic, payload) from the broker, reconnecting with jittered backoff.

    A payload over ``max_payload_bytes`` is never queued: it is yielded as
    :class:`Oversize` (its size). Messages dropped because the inbound queue was full
    (``INBOUND_QUEUE_BYTES`` of payloads, ``INBOUND_QUEUE_SIZE`` messages) are counted in
    one rate-limited warning.

    Raises:
        PublishError: the broker refused the credentials, or TLS failed (retrying cannot
            help an interactive user; the message says what to fix).
        ConfigError: the password or a certificate file cannot be read.
    """
    password = cfg.resolve_password()
    tls_context = await asyncio.to_thread(build_tls_context, cfg.tls) if cfg.tls else None
    backoff = reconnect_backoff(cfg)
    ident = client_id or default_client_id().replace("streamer-", "streamer-sub-", 1)
    drop_warnings = LogThrottle(DROP_LOG_INTERVAL_S)
    dropped = 0
    while True:
        queue = InboundQueue(INBOUND_QUEUE_SIZE, max_payload=max_payload_bytes)
        client = aiomqtt.Client(
            **client_kwargs(cfg, password, tls_context, ident),
            queue_type=_queue_type(queue),
            max_queued_incoming_messages=INBOUND_QUEUE_SIZE,
        )
        try:
            async with connection(client):
                logger.info("subscribe: connected to %s:%d", cfg.host, cfg.port)
                backoff.reset()
                for topic in topics:
                    await client.subscribe(topic, qos=1)
                async for message in client.messages:
                    payload: Payload
                    if isinstance(message, _OversizeMessage):
                        payload = Oversize(message.size)
                    else:
                        raw = message.payload
                        payload = bytes(raw) if isinstance(raw, (bytes, bytearray)) else b""
                    if queue.dropped:
                        dropped, queue.dropped = dropped + queue.dropped, 0
                        drop_warnings.log(
                            logger,
                            logging.WARNING,
                            "subscribe: inbound queue full (%d MiB of payloads): dropped "
                            "the oldest messages (%d so far)",
                            INBOUND_QUEUE_BYTES >> 20,
                            dropped,
                        )
                    yield str(message.topic), payload
        except aiomqtt.MqttError as err:
            kind, text = explain_failure(err, cfg)
            if kind is not FailureKind.NETWORK:
                raise PublishError(text) from err
        else:
            text = "the connection ended"
        delay = backoff.next_delay()
        logger.warning("subscribe: %s; retrying in %.1f s", text, delay)
        await asyncio.sleep(delay)
