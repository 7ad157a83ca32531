"""The consumer side of the topic tree, for ``streamer subscribe``.

:class:`SubscriberView` turns (topic, payload) pairs into what ``streamer subscribe``
shows: per camera its status, face count and room mood; the open episodes (rule, track,
how long); per track VA, quadrant, latest description and age. Every inbound payload is
untrusted: a payload that is too large, not UTF-8, not JSON, not valid against its
schema, or that disagrees with its topic is rejected with one truncated warning and
changes nothing. :func:`mqtt_messages` yields raw messages and reconnects by itself;
:func:`available_prefixes` lists the analyzers a broker has (``+/available``).

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
import contextlib
import logging
import re
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any, cast

import aiomqtt

from streamer.circumplex import quadrant
from streamer.episodes.config import RULE_NAME_PATTERN
from streamer.errors import InboundError, PublishError
from streamer.messages import (
    DESCRIPTION_SCHEMA,
    EPISODE_SCHEMA,
    EVENT_SCHEMA,
    MOOD_SCHEMA,
    STATUS_SCHEMA,
    VA_SCHEMA,
)
from streamer.publish.config import MqttConfig
from streamer.publish.connect import (
    Client,
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
MAX_EPISODES = 1000  # open episodes shown at most (the oldest are forgotten first)
MAX_RULE_STATES = 1000  # (camera, rule) ON/OFF states kept at most
SHOWN_CAMERAS = 20  # camera rows drawn at most (the rest are counted)
SHOWN_EPISODES = 20  # episode rows drawn at most
PROBE_S = 1.0  # how long available_prefixes collects retained availabilities (s)
MAX_PREFIXES = 50  # prefixes it lists at most
_RULE_NAME = re.compile(RULE_NAME_PATTERN)
INBOUND_QUEUE_BYTES = 16 << 20  # payload bytes held by the client; the oldest go first
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


@dataclass
class OpenEpisode:
    """An episode whose ``started`` message came and whose ``ended`` has not."""

    id: str
    camera: str
    track_id: int
    rule: str
    open_s: float  # media seconds it had been open when `started` came (t - t_start)
    valence: float  # mean valence so far, at `started`
    arousal: float
    received: float  # monotonic time `started` was accepted


@dataclass(frozen=True)
class Inbound:
    """An accepted message: ``record`` is a dict (JSON topics) or a word (availability,
    rule states); ``about`` is what a word's topic names ((camera level, rule))."""

    topic: str
    kind: str
    record: Any
    about: tuple[str, ...] = ()


_KINDS = {
    "status": STATUS_SCHEMA,
    "face_count": FACE_COUNT_SCHEMA,
    "events": EVENT_SCHEMA,
    "va": VA_SCHEMA,
    "description": DESCRIPTION_SCHEMA,
    "episodes": EPISODE_SCHEMA,
    "mood": MOOD_SCHEMA,
}
_CAMERA_KINDS = ("status", "face_count", "events", "episodes", "mood")  # <camera>/<kind>


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
        self.moods: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self.episodes: collections.OrderedDict[str, OpenEpisode] = collections.OrderedDict()
        # (camera topic level, rule) -> ON: the retained rule state (it outlives a restart
        # of this view, when the episode's `started` message is long gone).
        self.rules_on: collections.OrderedDict[tuple[str, str], bool] = collections.OrderedDict()
        self.hint = ""  # said when nothing came for a while (which prefix, which exist)
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
        if len(levels) == 4 and levels[1] == "rules" and levels[3] == "active":
            return _rule_state(topic, camera, levels[2], payload)
        if len(levels) == 2 and levels[1] in _CAMERA_KINDS:
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
                self._drop_episodes(camera=rec["camera"], track_id=rec["track_id"])
            else:
                self._row(rec["camera"], rec["track_id"])
        elif msg.kind == "mood":
            self._camera_state(self.moods, rec["camera"], rec)
        elif msg.kind == "episodes":
            self._episode(rec)
        elif msg.kind == "rule":
            self._rule(msg.about[0], msg.about[1], rec == "ON")
        elif msg.kind == "va":
            row = self._row(rec["camera"], rec["track_id"])
            row.valence, row.arousal, row.model = rec["valence"], rec["arousal"], rec["model"]
        elif msg.kind == "description":
            row = self._row(rec["camera"], rec["track_id"])
            row.basic, row.description = rec["basic"], rec["text"]

    def _episode(self, rec: dict[str, Any]) -> None:
        if rec["state"] != "started":
            self.episodes.pop(rec["id"], None)
            return
        self.episodes[rec["id"]] = OpenEpisode(
            rec["id"],
            rec["camera"],
            rec["track_id"],
            rec["rule"],
            max(0.0, rec["t"] - rec["t_start"]),
            rec["valence"]["mean"],
            rec["arousal"]["mean"],
            self._clock(),
        )
        while len(self.episodes) > MAX_EPISODES:
            self.episodes.popitem(last=False)

    def _rule(self, level: str, rule: str, on: bool) -> None:
        key = (level, rule)
        self.rules_on[key] = on
        self.rules_on.move_to_end(key)
        while len(self.rules_on) > MAX_RULE_STATES:
            self.rules_on.popitem(last=False)
        if not on:  # no episode of the rule is open on that camera
            self._drop_episodes(level=level, rule=rule)

    def _drop_episodes(
        self,
        camera: str | None = None,
        track_id: int | None = None,
        level: str | None = None,
        rule: str | None = None,
    ) -> None:
        for key, ep in list(self.episodes.items()):
            if (
                (camera is None or ep.camera == camera)
                and (track_id is None or ep.track_id == track_id)
                and (level is None or topic_level(ep.camera) == level)
                and (rule is None or ep.rule == rule)
            ):
                del self.episodes[key]

    def prune(self) -> None:
        """Forget rows that had no update for ``ROW_TTL_S``."""
        now = self._clock()
        for key in [k for k, r in self.rows.items() if now - r.updated > ROW_TTL_S]:
            del self.rows[key]

    def render(self, max_rows: int = MAX_ROWS) -> Any:
        """What the terminal shows (rich renderables, top to bottom): the analyzer's
        availability; per camera status, faces and mood; the open episodes; the tracks.

        Args:
            max_rows: track rows at most (what fits the terminal): the most recently
                updated tracks are shown and the caption counts the rest, so a redraw
                costs the same whatever a peer floods in.
        """
        from rich.console import Group
        from rich.text import Text

        self.prune()
        parts: list[Any] = [Text(f"{self.prefix}: {self.available or 'unknown'}", style="bold")]
        if self.hint:
            parts.append(Text(self.hint, style="yellow"))
        parts += [self._cameras_table(), self._episodes_table(), self._tracks_table(max_rows)]
        return Group(*parts)

    def fixed_lines(self) -> int:
        """About how many terminal lines :meth:`render` draws above the tracks table (the
        availability line, the hint, the cameras and episodes tables): what is left of the
        terminal is for track rows."""
        cameras = len(
            {*self.statuses, *self.face_counts, *self.moods}
            | {r.camera for r in self.rows.values()}
            | {ep.camera for ep in self.episodes.values()}
        )
        episodes = len(self.episodes) + sum(self.rules_on.values())
        # a table: title, top border, header, header rule, bottom border, caption
        return (
            1
            + (1 if self.hint else 0)
            + 6
            + min(cameras, SHOWN_CAMERAS)
            + 6
            + min(episodes, SHOWN_EPISODES)
        )

    def _cameras_table(self) -> Any:
        from rich.table import Table
        from rich.text import Text

        names = sorted(
            {*self.statuses, *self.face_counts, *self.moods}
            | {r.camera for r in self.rows.values()}
            | {ep.camera for ep in self.episodes.values()}
        )
        table = Table(title="cameras", title_justify="left", expand=True)
        for name, kw in (
            ("camera", {}),
            ("status", {"ratio": 1, "overflow": "fold"}),
            ("faces", {"justify": "right"}),
            ("mood", {}),
        ):
            table.add_column(name, **kw)
        for name in names[:SHOWN_CAMERAS]:
            st = self.statuses.get(name)
            status = (
                "-" if st is None else st["state"] + (f": {st['detail']}" if st["detail"] else "")
            )
            faces = self.face_counts.get(name)
            table.add_row(
                Text(name),
                Text(status),
                "-" if faces is None else str(faces),
                _mood_text(self.moods.get(name)),
            )
        if len(names) > SHOWN_CAMERAS:
            table.caption = f"{len(names) - SHOWN_CAMERAS} more camera(s) not shown"
        return table

    def _episodes_table(self) -> Any:
        from rich.table import Table
        from rich.text import Text

        now = self._clock()
        rows: list[tuple[Any, ...]] = []
        for ep in sorted(
            self.episodes.values(), key=lambda e: (e.camera, e.rule, e.track_id, e.id)
        ):
            rows.append(
                (
                    Text(ep.rule),
                    Text(ep.camera),
                    str(ep.track_id),
                    f"{ep.open_s + now - ep.received:.1f} s",
                    f"{ep.valence:+.2f}",
                    f"{ep.arousal:+.2f}",
                )
            )
        known = {(topic_level(ep.camera), ep.rule) for ep in self.episodes.values()}
        for (level, rule), on in sorted(self.rules_on.items()):
            if on and (level, rule) not in known:  # it started before this view did
                rows.append((Text(rule), Text(level), "?", "(before start)", "", ""))
        table = Table(title="open episodes", title_justify="left")
        for name in ("rule", "camera", "track", "open for", "valence", "arousal"):
            table.add_column(name, justify="left" if name in ("rule", "camera") else "right")
        for row in rows[:SHOWN_EPISODES]:
            table.add_row(*row)
        if not rows:
            table.caption = "none"
        elif len(rows) > SHOWN_EPISODES:
            table.caption = f"{len(rows) - SHOWN_EPISODES} more not shown"
        return table

    def _tracks_table(self, max_rows: int) -> Any:
        from rich.table import Table
        from rich.text import Text

        shown = list(self.rows.values())[-max(0, max_rows) :] if max_rows > 0 else []
        caption = None
        if len(shown) < len(self.rows) or self.forgotten_rows or self.forgotten_cameras:
            caption = f"{len(shown)} of {len(self.rows)} tracks shown"
            if self.forgotten_rows or self.forgotten_cameras:
                caption += (
                    f"; forgotten (over the limits): {self.forgotten_rows} tracks, "
                    f"{self.forgotten_cameras} cameras"
                )
        table = Table(title="tracks", title_justify="left", caption=caption, expand=True)
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


def _rule_state(topic: str, camera: str, rule: str, payload: bytes) -> Inbound:
    """``<camera>/rules/<rule>/active``: ``ON`` or ``OFF`` (retained)."""
    if not _RULE_NAME.fullmatch(rule):
        raise InboundError("rule name in the topic is not a rule name")
    word = decode_text(payload, 64).strip()
    if word not in ("ON", "OFF"):
        raise InboundError(f"unknown rule state {word[:20]!r}")
    return Inbound(safe_text(topic), "rule", word, (safe_text(camera), rule))


def _mood_text(rec: dict[str, Any] | None) -> str:
    if rec is None:
        return "-"
    if not rec["count"] or rec["valence"] is None or rec["arousal"] is None:
        return "no face"
    va = f"V {rec['valence']:+.2f}, A {rec['arousal']:+.2f}"
    return f"{rec['quadrant']} ({va}; {rec['count']} face(s))"


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
        client = Client(
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


async def available_prefixes(cfg: MqttConfig, wait_s: float = PROBE_S) -> dict[str, str]:
    """The topic prefixes with an analyzer on the broker, and each one's availability
    (``online``, ``offline``, ``stopped``; ``?`` for another word), read from the retained
    ``+/available`` messages for ``wait_s`` on a connection of its own. Only one-level
    prefixes are seen; at most ``MAX_PREFIXES``.

    Raises:
        PublishError: the broker refused the connection or the subscription.
    """
    password = cfg.resolve_password()
    tls_context = await asyncio.to_thread(build_tls_context, cfg.tls) if cfg.tls else None
    ident = default_client_id().replace("streamer-", "streamer-probe-", 1)
    found: dict[str, str] = {}
    try:
        client = Client(**client_kwargs(cfg, password, tls_context, ident))
        async with connection(client):
            await client.subscribe("+/available", qos=0)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    async for message in client.messages:
                        payload = message.payload if isinstance(message.payload, bytes) else b""
                        word = payload[:16].decode("ascii", "replace").strip()
                        known = word in (AVAILABLE_ONLINE, AVAILABLE_OFFLINE, AVAILABLE_STOPPED)
                        prefix = safe_text(str(message.topic).split("/", 1)[0][:64])
                        if payload:  # an empty retained payload: a prefix that was cleared
                            found[prefix] = word if known else "?"
                        if len(found) >= MAX_PREFIXES:
                            break
    except aiomqtt.MqttError as err:
        raise PublishError(explain_failure(err, cfg)[1]) from err
    return dict(sorted(found.items()))
