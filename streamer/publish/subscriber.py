"""The consumer side of the topic tree, for ``streamer subscribe``.

:class:`SubscriberView` turns (topic, payload) pairs into per-track rows (VA, quadrant,
latest description, age). Every inbound payload is untrusted: a payload that is too
large, not UTF-8, not JSON, not valid against its schema, or that disagrees with its
topic is rejected with one truncated warning and changes nothing.
:func:`mqtt_messages` yields raw messages and reconnects by itself.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

import aiomqtt

from streamer.circumplex import quadrant
from streamer.errors import InboundError, PublishError
from streamer.messages import DESCRIPTION_SCHEMA, EVENT_SCHEMA, STATUS_SCHEMA, VA_SCHEMA
from streamer.publish.config import MqttConfig
from streamer.publish.connect import (
    FailureKind,
    build_tls_context,
    client_kwargs,
    default_client_id,
    explain_failure,
    reconnect_backoff,
)
from streamer.publish.payloads import (
    AVAILABLE_OFFLINE,
    AVAILABLE_ONLINE,
    AVAILABLE_STOPPED,
    FACE_COUNT_SCHEMA,
    decode_json,
    decode_text,
    preview,
    topic_level,
    validate_record,
)
from streamer.publish.sanitize import safe_text, safe_value
from streamer.throttle import LogThrottle

logger = logging.getLogger(__name__)

MAX_ROWS = 1000  # tracks shown at most; the least recently updated go first
ROW_TTL_S = 300.0  # a row without updates for this long is removed
REJECT_LOG_INTERVAL_S = 60.0  # rejected-input warnings: at most REJECT_LOG_BURST per this (s)
REJECT_LOG_BURST = 20
INBOUND_QUEUE_SIZE = 10_000  # messages held by the client before it discards


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
    ) -> None:
        self.prefix = prefix
        self.camera = camera
        self._clock = clock
        self.available: str | None = None
        self.statuses: dict[str, dict[str, Any]] = {}
        self.face_counts: dict[str, int] = {}
        self.rows: collections.OrderedDict[tuple[str, int], TrackRow] = collections.OrderedDict()
        self.accepted = 0
        self._rejected = 0
        self._warnings = LogThrottle(REJECT_LOG_INTERVAL_S, burst=REJECT_LOG_BURST)

    @property
    def rejected(self) -> int:
        return self._rejected

    def subscriptions(self) -> list[str]:
        """Topic filters to subscribe to."""
        if self.camera is None:
            return [f"{self.prefix}/#"]
        return [f"{self.prefix}/available", f"{self.prefix}/{topic_level(self.camera)}/#"]

    def handle(self, topic: str, payload: bytes) -> Inbound | None:
        """Validate and apply one message.

        Returns:
            The accepted message, or None when it was rejected (one warning) or ignored
            (an empty payload clears a retained message; another camera).
        """
        if not payload:
            return None
        try:
            inbound = self._parse(topic, payload)
        except InboundError as err:
            self._rejected += 1
            self._warnings.log(
                logger,
                logging.WARNING,
                "subscribe: rejected message on %s: %s: %s",
                safe_text(topic[:120]),
                safe_text(str(err)),
                preview(payload),
            )
            return None
        if inbound is not None:
            self._apply(inbound)
            self.accepted += 1
        return inbound

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
            if not levels[2].isdigit() or len(levels[2]) > 12:
                raise InboundError("track id in the topic is not a number")
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
        self.rows.move_to_end(key)
        row.updated = self._clock()
        return row

    def _apply(self, msg: Inbound) -> None:
        rec = msg.record
        if msg.kind == "available":
            self.available = rec
        elif msg.kind == "status":
            self.statuses[rec["camera"]] = rec
        elif msg.kind == "face_count":
            self.face_counts[rec["camera"]] = rec["count"]
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

    def render(self) -> Any:
        """A rich Table: one row per track (VA, quadrant, latest description, age)."""
        from rich.table import Table
        from rich.text import Text

        self.prune()
        states = ", ".join(f"{c}: {s['state']}" for c, s in sorted(self.statuses.items()))
        title = f"{self.prefix}: {self.available or 'unknown'}" + (
            f"  ({states})" if states else ""
        )
        table = Table(title=Text(title), expand=True)
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
        for row in sorted(self.rows.values(), key=lambda r: (r.camera, r.track_id)):
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


async def mqtt_messages(
    cfg: MqttConfig,
    topics: list[str],
    client_id: str | None = None,
) -> AsyncGenerator[tuple[str, bytes], None]:
    """Yield (topic, payload) from the broker, reconnecting with jittered backoff.

    Raises:
        PublishError: the broker refused the credentials, or TLS failed (retrying cannot
            help an interactive user; the message says what to fix).
        ConfigError: the password or a certificate file cannot be read.
    """
    password = cfg.resolve_password()
    tls_context = await asyncio.to_thread(build_tls_context, cfg.tls) if cfg.tls else None
    backoff = reconnect_backoff(cfg)
    ident = client_id or default_client_id().replace("streamer-", "streamer-sub-", 1)
    while True:
        client = aiomqtt.Client(
            **client_kwargs(cfg, password, tls_context, ident),
            max_queued_incoming_messages=INBOUND_QUEUE_SIZE,
        )
        try:
            async with client:
                logger.info("subscribe: connected to %s:%d", cfg.host, cfg.port)
                backoff.reset()
                for topic in topics:
                    await client.subscribe(topic, qos=1)
                async for message in client.messages:
                    payload = message.payload if isinstance(message.payload, bytes) else b""
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
