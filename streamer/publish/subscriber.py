"""The consumer side of the topic tree, for ``streamer subscribe``.

:class:`SubscriberView` turns (topic, payload) pairs into what ``streamer subscribe``
shows: per camera its status, face count and room mood; the open episodes (rule, track,
how long); per track VA, quadrant, latest description and age. Every inbound payload is
untrusted: a payload that is too large, not UTF-8, not JSON, not valid against its
schema, or that disagrees with its topic is rejected with one truncated warning and
changes nothing. :func:`mqtt_messages` yields raw messages and reconnects by itself;
:func:`available_prefixes` lists the analyzers a broker has (``+/available``).
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
from typing import Any

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
MAX_EPISODES = 1000  # open episodes shown at most (the oldest are forgotten first)
MAX_RULE_STATES = 1000  # (camera, rule) ON/OFF states kept at most
SHOWN_CAMERAS = 20  # camera rows drawn at most (the rest are counted)
SHOWN_EPISODES = 20  # episode rows drawn at most
PROBE_S = 1.0  # how long available_prefixes collects retained availabilities (s)
MAX_PREFIXES = 50  # prefixes it lists at most
_RULE_NAME = re.compile(RULE_NAME_PATTERN)


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
    ) -> None:
        self.prefix = prefix
        self.camera = camera
        self._clock = clock
        self.available: str | None = None
        self.statuses: dict[str, dict[str, Any]] = {}
        self.face_counts: dict[str, int] = {}
        self.moods: dict[str, dict[str, Any]] = {}
        self.episodes: collections.OrderedDict[str, OpenEpisode] = collections.OrderedDict()
        # (camera topic level, rule) -> ON: the retained rule state (it outlives a restart
        # of this view, when the episode's `started` message is long gone).
        self.rules_on: collections.OrderedDict[tuple[str, str], bool] = collections.OrderedDict()
        self.hint = ""  # said when nothing came for a while (which prefix, which exist)
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
        if len(levels) == 4 and levels[1] == "rules" and levels[3] == "active":
            return _rule_state(topic, camera, levels[2], payload)
        if len(levels) == 2 and levels[1] in _CAMERA_KINDS:
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
                self._drop_episodes(camera=rec["camera"], track_id=rec["track_id"])
            else:
                self._row(rec["camera"], rec["track_id"])
        elif msg.kind == "mood":
            self.moods[rec["camera"]] = rec
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

    def render(self) -> Any:
        """What the terminal shows (rich renderables, top to bottom): the analyzer's
        availability; per camera status, faces and mood; the open episodes; the tracks."""
        from rich.console import Group
        from rich.text import Text

        self.prune()
        parts: list[Any] = [Text(f"{self.prefix}: {self.available or 'unknown'}", style="bold")]
        if self.hint:
            parts.append(Text(self.hint, style="yellow"))
        parts += [self._cameras_table(), self._episodes_table(), self._tracks_table()]
        return Group(*parts)

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

    def _tracks_table(self) -> Any:
        from rich.table import Table
        from rich.text import Text

        table = Table(title="tracks", title_justify="left", expand=True)
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
        async with aiomqtt.Client(**client_kwargs(cfg, password, tls_context, ident)) as client:
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
