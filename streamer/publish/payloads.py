"""MQTT topic tree, JSON payloads and their JSON Schemas.

Topic tree under the configured prefix::

    <prefix>/available                         online | offline (last will) | stopped; retained
    <prefix>/<camera>/status                   streamer.status/1; QoS 1; retained
    <prefix>/<camera>/face_count               streamer.face_count/1; QoS 1; retained
    <prefix>/<camera>/events                   streamer.event/1; QoS 1
    <prefix>/<camera>/faces/<track_id>/va      streamer.va/1; QoS 0; rate-limited per track
    <prefix>/<camera>/faces/<track_id>/description   streamer.description/1; QoS 1
    <prefix>/<camera>/episodes                 streamer.episode/1; QoS 1
    <prefix>/<camera>/mood                     streamer.mood/1; QoS 1; retained
    <prefix>/<camera>/rules/<rule>/active      ON | OFF (an episode of the rule is open); retained

Every JSON payload carries a ``schema`` field (``streamer.<kind>/<version>``); the JSON
Schema of each ships in ``streamer/publish/schemas/``. Payloads are built from the
messages' ``to_record()`` (numbers and text only) and are never NaN: encoding uses
``allow_nan=False`` and a non-finite value makes the message invalid instead.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

import jsonschema

from streamer.errors import InboundError
from streamer.messages import (
    DESCRIPTION_SCHEMA,
    EPISODE_SCHEMA,
    EVENT_SCHEMA,
    MOOD_SCHEMA,
    STATUS_SCHEMA,
    VA_SCHEMA,
    CameraStatus,
    Description,
    Episode,
    Message,
    Mood,
    TrackEvent,
    VASample,
)
from streamer.throttle import LogThrottle

logger = logging.getLogger(__name__)

FACE_COUNT_SCHEMA = "streamer.face_count/1"

AVAILABLE_ONLINE = "online"
AVAILABLE_OFFLINE = "offline"
AVAILABLE_STOPPED = "stopped"

# Schema id -> file in streamer/publish/schemas/.
SCHEMA_FILES = {
    VA_SCHEMA: "va.json",
    EVENT_SCHEMA: "event.json",
    STATUS_SCHEMA: "status.json",
    DESCRIPTION_SCHEMA: "description.json",
    FACE_COUNT_SCHEMA: "face_count.json",
    EPISODE_SCHEMA: "episode.json",
    MOOD_SCHEMA: "mood.json",
}

QOS_VA = 0
QOS_RELIABLE = 1

_UNSAFE_LEVEL = re.compile(r"[^A-Za-z0-9_.-]")


def topic_level(name: str) -> str:
    """Make ``name`` safe as one topic level (no ``/``, ``+``, ``#``, spaces).

    Camera names from the config are already safe; replay uses a file stem, which may
    not be.
    """
    safe = _UNSAFE_LEVEL.sub("_", name)
    return safe or "_"


@dataclass(frozen=True)
class Topics:
    """Topic names under one prefix."""

    prefix: str

    @property
    def available(self) -> str:
        return f"{self.prefix}/available"

    def status(self, camera: str) -> str:
        return f"{self.prefix}/{topic_level(camera)}/status"

    def face_count(self, camera: str) -> str:
        return f"{self.prefix}/{topic_level(camera)}/face_count"

    def events(self, camera: str) -> str:
        return f"{self.prefix}/{topic_level(camera)}/events"

    def va(self, camera: str, track_id: int) -> str:
        return f"{self.prefix}/{topic_level(camera)}/faces/{int(track_id)}/va"

    def description(self, camera: str, track_id: int) -> str:
        return f"{self.prefix}/{topic_level(camera)}/faces/{int(track_id)}/description"

    def episodes(self, camera: str) -> str:
        return f"{self.prefix}/{topic_level(camera)}/episodes"

    def mood(self, camera: str) -> str:
        return f"{self.prefix}/{topic_level(camera)}/mood"

    def rule_active(self, camera: str, rule: str) -> str:
        return f"{self.prefix}/{topic_level(camera)}/rules/{topic_level(rule)}/active"


@dataclass(frozen=True)
class Outbound:
    """One MQTT publication, ready to send.

    Attributes:
        kind: ``va``, ``event``, ``description``, ``status``, ``face_count``,
            ``available`` or ``discovery`` (for counting and buffer policy).
        topic: full topic name.
        payload: UTF-8 bytes (JSON, or a bare word for ``available``; empty removes a
            retained discovery config).
        qos: 0 or 1.
        retain: broker keeps it for new subscribers.
    """

    kind: str
    topic: str
    payload: bytes
    qos: int
    retain: bool


def dumps(record: dict[str, Any]) -> bytes:
    """Compact JSON; raises ValueError for NaN or infinity (never published)."""
    return json.dumps(record, allow_nan=False, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def message_record(msg: Message, wall_time: float | None = None) -> dict[str, Any]:
    """The payload record of a bus message, with ``wall_time`` added where missing."""
    rec = msg.to_record()
    if rec.get("wall_time") is None:
        rec["wall_time"] = round(time.time() if wall_time is None else wall_time, 3)
    return rec


def encode_message(msg: Message, topics: Topics, wall_time: float | None = None) -> Outbound:
    """Build the publication of one bus message.

    Raises:
        ValueError: the record holds a non-finite number.
        TypeError: ``msg`` is not one of the published message types.
    """
    if isinstance(msg, VASample):
        kind, topic, qos, retain = "va", topics.va(msg.camera, msg.track_id), QOS_VA, False
    elif isinstance(msg, TrackEvent):
        kind, topic, qos, retain = "event", topics.events(msg.camera), QOS_RELIABLE, False
    elif isinstance(msg, Description):
        kind = "description"
        topic, qos, retain = topics.description(msg.camera, msg.track_id), QOS_RELIABLE, False
    elif isinstance(msg, CameraStatus):
        kind, topic, qos, retain = "status", topics.status(msg.camera), QOS_RELIABLE, True
    elif isinstance(msg, Episode):
        kind, topic, qos, retain = "episode", topics.episodes(msg.camera), QOS_RELIABLE, False
    elif isinstance(msg, Mood):
        kind, topic, qos, retain = "mood", topics.mood(msg.camera), QOS_RELIABLE, True
    else:
        raise TypeError(f"cannot publish {type(msg).__name__} to MQTT")
    return Outbound(kind, topic, dumps(message_record(msg, wall_time)), qos, retain)


def encode_face_count(camera: str, count: int, topics: Topics, wall_time: float) -> Outbound:
    """The retained face-count state of a camera."""
    rec = {
        "schema": FACE_COUNT_SCHEMA,
        "camera": camera,
        "count": int(count),
        "wall_time": round(wall_time, 3),
    }
    return Outbound("face_count", topics.face_count(camera), dumps(rec), QOS_RELIABLE, True)


def encode_available(state: str, topics: Topics) -> Outbound:
    """The retained availability word (``online``, ``offline``, ``stopped``)."""
    return Outbound("available", topics.available, state.encode("ascii"), QOS_RELIABLE, True)


@functools.cache
def load_schema(schema_id: str) -> dict[str, Any]:
    """The JSON Schema (a dict) of a payload schema id such as ``streamer.va/1``.

    Raises:
        KeyError: unknown schema id.
    """
    name = SCHEMA_FILES[schema_id]
    text = resources.files("streamer.publish").joinpath("schemas", name).read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@functools.cache
def _validator(schema_id: str) -> jsonschema.protocols.Validator:
    schema = load_schema(schema_id)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def validate_record(record: Any, expected: str | None = None) -> None:
    """Check a decoded payload against the JSON Schema named by its ``schema`` field.

    Args:
        record: the decoded JSON value.
        expected: when given, the schema id the record must carry.

    Raises:
        ValueError: not an object, unknown or unexpected schema id, or invalid; the
            message names the first failing field.
    """
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    schema_id = record.get("schema")
    if not isinstance(schema_id, str) or schema_id not in SCHEMA_FILES:
        raise ValueError(f"unknown schema {str(schema_id)[:40]!r}")
    if expected is not None and schema_id != expected:
        raise ValueError(f"expected schema {expected}, got {schema_id}")
    error = jsonschema.exceptions.best_match(_validator(schema_id).iter_errors(record))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise ValueError(f"{schema_id}: {where}: {error.message[:200]}")


MAX_INBOUND_BYTES = 64 * 1024  # larger inbound payloads are rejected unread


def preview(payload: bytes, limit: int = 60) -> str:
    """A short, printable excerpt of an untrusted payload for one log line."""
    head = payload[:limit]
    more = f"... ({len(payload)} bytes)" if len(payload) > limit else ""
    return f"{head!r}{more}"


def decode_text(payload: bytes, max_bytes: int = MAX_INBOUND_BYTES) -> str:
    """Decode an untrusted payload as UTF-8 text.

    Raises:
        InboundError: too large or not UTF-8.
    """
    if len(payload) > max_bytes:
        raise InboundError(f"payload too large ({len(payload)} > {max_bytes} bytes)")
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InboundError(f"not UTF-8 (byte {err.start})") from err


def decode_json(payload: bytes, max_bytes: int = MAX_INBOUND_BYTES) -> Any:
    """Decode an untrusted payload as JSON (NaN and infinity are rejected).

    Raises:
        InboundError: too large, not UTF-8 or not JSON.
    """
    text = decode_text(payload, max_bytes)

    def _no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not allowed")

    try:
        return json.loads(text, parse_constant=_no_constants)
    except (ValueError, RecursionError) as err:
        raise InboundError(f"not JSON: {str(err)[:80]}") from err


class WarnLimiter:
    """One warning per rejected input, but no flood: after ``burst`` warnings at most one
    per ``interval_s`` (:class:`~streamer.throttle.LogThrottle`), with the running count."""

    def __init__(self, log: logging.Logger, burst: int = 20, interval_s: float = 10.0) -> None:
        self._log = log
        self._burst = burst
        self._throttle = LogThrottle(interval_s)
        self.count = 0

    def warn(self, fmt: str, *args: Any) -> None:
        self.count += 1
        if self.count <= self._burst or self._throttle.ready():
            self._log.warning(fmt + " [rejected inputs so far: %d]", *args, self.count)
