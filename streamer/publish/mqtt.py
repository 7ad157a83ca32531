"""MQTT publisher: the bus's messages to a broker, surviving the broker coming and going.

    async with MqttPublisher(cfg.mqtt, bus, cameras=["door"]) as pub:
        ...  # the pipeline runs; pub.stats counts what happened

The publisher owns one bus subscription and two background tasks:

- ``intake_loop`` moves bus messages into the bounded :class:`OutboundBuffer` (VA
  rate-limited per track by media time; see ``buffer.py`` for the drop policy). It never
  waits for the network, so frame processing is never slowed by the broker.
- ``connection_loop`` connects (aiomqtt does not reconnect by itself), publishes the
  retained ``<prefix>/available`` = ``online`` and current retained state, then sends the
  buffer until the connection drops; it retries with capped, jittered exponential
  backoff, and waits ``auth_retry_s`` after refused credentials or a TLS failure.

The broker holds a last will (``offline``, retained). A clean exit publishes camera
statuses ``stopped`` and ``available`` = ``stopped`` and disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import ssl
import time
from collections import Counter
from collections.abc import Callable, Sequence
from types import TracebackType

import aiomqtt

from streamer.bus import EventBus, Subscription
from streamer.errors import InboundError
from streamer.lifecycle import SingleUse, cancel_and_wait
from streamer.messages import (
    CameraState,
    CameraStatus,
    Description,
    Episode,
    Message,
    Mood,
    TrackEvent,
    VASample,
)
from streamer.publish import homeassistant as ha
from streamer.publish.buffer import OutboundBuffer
from streamer.publish.config import MqttConfig
from streamer.publish.connect import (
    Client,
    FailureKind,
    build_tls_context,
    client_kwargs,
    connection,
    explain_failure,
    reconnect_backoff,
)
from streamer.publish.flood import Coalescer
from streamer.publish.ha_episodes import EpisodePublishing
from streamer.publish.payloads import (
    AVAILABLE_OFFLINE,
    AVAILABLE_ONLINE,
    AVAILABLE_STOPPED,
    QOS_RELIABLE,
    Outbound,
    Topics,
    encode_available,
    encode_face_count,
    encode_message,
    preview,
)
from streamer.sinks import Metric, SinkContext
from streamer.throttle import LogThrottle

logger = logging.getLogger(__name__)

BUS_QUEUE_SIZE = 4096  # messages; the intake loop drains it at once into the buffer
HEALTHY_CONNECTION_S = 10.0  # a connection that lasted this long resets the backoff
REJECT_LOG_INTERVAL_S = 60.0  # rejected-input warnings: at most REJECT_LOG_BURST per this (s)
REJECT_LOG_BURST = 20
RETRY_LOG_INTERVAL_S = 300.0  # the same connection failure is logged at most this often (s)
INBOUND_QUEUE_SIZE = 100  # messages (only Home Assistant's status topic is subscribed)
STOP_TIMEOUT_S = 4.0  # flush + "stopped" + disconnect on exit, at most
HA_REANNOUNCE_S = 2.0  # Home Assistant "online": re-announce at most this often
_VA_RATE_EPS_S = 1e-6  # float slack when comparing media-time intervals


@dataclasses.dataclass
class PublisherStats:
    """Counters of one publisher (read them; they only grow).

    Attributes:
        connect_attempts: connection attempts started.
        connections: attempts that got a CONNACK.
        auth_failures: attempts refused for credentials / authorization.
        tls_failures: attempts that failed in TLS (never retried in plaintext).
        published: sent publications per kind (va, event, description, status, ...).
        throttled: VA samples skipped by the per-track rate limit (not a loss).
        superseded: VA samples replaced in the buffer by a newer one of the same track.
        dropped: losses by reason (va_stale, va_overflow, event_overflow, bus, invalid,
            va_send_failed: a VA sample taken for sending when the connection broke).
        rejected_inbound: hostile or malformed inbound payloads ignored.
        ha_announcements: times every discovery config was (re)queued.
        connected: whether a connection is up now.
        last_error: the latest connection error (no secrets), or "".
    """

    connect_attempts: int = 0
    connections: int = 0
    auth_failures: int = 0
    tls_failures: int = 0
    published: Counter[str] = dataclasses.field(default_factory=Counter)
    throttled: int = 0
    superseded: int = 0
    dropped: Counter[str] = dataclasses.field(default_factory=Counter)
    rejected_inbound: int = 0
    ha_announcements: int = 0
    connected: bool = False
    last_error: str = ""


def _is_published(msg: Message) -> bool:
    return isinstance(msg, VASample | TrackEvent | CameraStatus | Description | Episode | Mood)


class MqttPublisher(SingleUse):
    """Publishes bus messages to MQTT in the background; see the module docstring.

    Args:
        cfg: the ``mqtt`` config section.
        bus: the pipeline's event bus; the publisher subscribes on enter.
        cameras: names of the cameras this process runs (their status goes ``stopped``
            on a clean exit; Home Assistant gets a face-count sensor for each).
        rules: names of the episode rules (a binary sensor per camera and rule).
        mood: whether the room mood is published (mood sensors per camera).
        will: the last will (default: ``offline`` on ``<prefix>/available``); cluster
            mode sets each camera actor's own.
        availability: publish ``online`` / ``stopped`` on ``<prefix>/available``.
        may_publish: when given and False (a fenced cluster actor), nothing is sent
            (counted as ``dropped["fenced"]``) and no connection is attempted.
        clock: seconds of a monotonic clock, for the age of held VA samples (older
            than ``va_stale_s`` when the connection is back: dropped); tests pass their
            own.
    """

    def __init__(
        self,
        cfg: MqttConfig,
        bus: EventBus,
        cameras: list[str],
        *,
        rules: Sequence[str] = (),
        mood: bool = False,
        will: Outbound | None = None,
        availability: bool = True,
        may_publish: Callable[[], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.bus = bus
        self.cameras = list(cameras)
        self.topics = Topics(cfg.prefix)
        self.stats = PublisherStats()
        self.buffer = OutboundBuffer(
            max_events=cfg.max_pending_events,
            max_tracks=cfg.max_pending_tracks,
            stale_s=cfg.va_stale_s,
            clock=clock,
            dropped=self.stats.dropped,
        )
        self._backoff = reconnect_backoff(cfg)
        self._retry_log = LogThrottle(RETRY_LOG_INTERVAL_S)
        self._last_failure = ""
        self._password: str | None = None
        self._tls_context: ssl.SSLContext | None = None
        self._sub: Subscription | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._group: asyncio.TaskGroup | None = None
        self._closing = asyncio.Event()
        self._connected_event = asyncio.Event()
        self._last_status: dict[str, CameraStatus] = {}
        self._live_tracks: dict[str, set[int]] = {}
        self._va_last_t: dict[tuple[str, int], float] = {}
        self._announced: set[tuple[str, int]] = set()
        self._invalid_warnings = LogThrottle(REJECT_LOG_INTERVAL_S, burst=REJECT_LOG_BURST)
        self._inbound_warnings = LogThrottle(REJECT_LOG_INTERVAL_S, burst=REJECT_LOG_BURST)
        self._will = will
        self._availability = availability
        self._may_publish = may_publish
        self.episodes = EpisodePublishing(cfg, self.topics, rules, mood)
        self._episode_cameras: set[str] = set()
        self._ha_online = Coalescer(HA_REANNOUNCE_S, self._reannounce)

    async def __aenter__(self) -> MqttPublisher:
        self._enter_once()
        # Credentials and certificates are checked now, so a bad config fails fast.
        self._password = self.cfg.resolve_password()
        if self.cfg.tls is not None:
            self._tls_context = await asyncio.to_thread(build_tls_context, self.cfg.tls)
        self._sub = self.bus.subscribe("mqtt", BUS_QUEUE_SIZE, accept=_is_published)
        for camera in self.cameras:
            self._live_tracks.setdefault(camera, set())
            self._announce_episodes(camera)
        group = self._group = asyncio.TaskGroup()
        await group.__aenter__()
        self._tasks = [
            group.create_task(self._intake_loop(self._sub), name="mqtt-intake"),
            group.create_task(self._connection_loop(), name="mqtt-connection"),
        ]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        intake, connection = self._tasks
        self._ha_online.cancel()
        if self._sub is not None:
            self._drain(self._sub)
            self.bus.unsubscribe(self._sub)
        intake.cancel()
        self._mark_stopped()
        self._closing.set()
        if self.stats.connected:
            # The connection loop flushes, publishes "stopped" and disconnects.
            done, _ = await asyncio.wait({connection}, timeout=STOP_TIMEOUT_S)
            if not done:
                logger.warning("MQTT: clean disconnect took over %.0f s; giving up", STOP_TIMEOUT_S)
        else:
            logger.warning(
                "MQTT: not connected at exit; the broker keeps the last will (%s)",
                AVAILABLE_OFFLINE,
            )
        for task in self._tasks:
            task.cancel()
        # Both loops catch and count every expected error; a crash (a bug) is raised here.
        group, self._group = self._group, None
        self._tasks = []
        self._sub = None
        if group is not None:
            await group.__aexit__(None, None, None)

    async def flush(self, *, ok: bool, replay: bool) -> None:
        """Nothing to hand on before the bus closes: ``__aexit__`` drains and flushes."""

    def metrics(self) -> list[Metric]:
        """Publications sent and dropped, the outbound buffer, the connection."""
        st = self.stats
        sent = Metric.by_label(
            "streamer_mqtt_messages_sent", "MQTT publications sent", "counter", "kind", st.published
        )
        dropped = Metric.by_label(
            "streamer_mqtt_messages_dropped",
            "messages never published, by reason",
            "counter",
            "reason",
            st.dropped,
        )
        buffered = Metric.gauge(
            "streamer_mqtt_messages_buffered", "messages waiting to be sent", len(self.buffer)
        )
        connected = Metric.gauge(
            "streamer_mqtt_connected", "1 while connected to the broker", st.connected
        )
        return [sent, dropped, buffered, connected]

    @property
    def connected(self) -> bool:
        return self.stats.connected

    async def wait_connected(self) -> None:
        """Return once a connection is up (for callers that want to know)."""
        await self._connected_event.wait()

    # ---------------------------------------------------------------- intake

    async def _intake_loop(self, sub: Subscription) -> None:
        async for msg in sub:
            try:
                self._ingest(msg)
            except Exception:  # supervisor: one bad message must not stop publishing
                self.stats.dropped["invalid"] += 1
                logger.exception("MQTT: cannot publish a %s", type(msg).__name__)
            self.stats.dropped["bus"] = sub.dropped

    def _drain(self, sub: Subscription) -> None:
        while (msg := sub.get_nowait()) is not None:
            self._ingest(msg)
        self.stats.dropped["bus"] = sub.dropped

    def _ingest(self, msg: Message) -> None:
        """Encode one bus message into the buffer (never blocks)."""
        try:
            if isinstance(msg, VASample):
                self._ingest_va(msg)
            elif isinstance(msg, TrackEvent):
                self._ingest_event(msg)
            elif isinstance(msg, CameraStatus):
                self._last_status[msg.camera] = msg
                self.buffer.put_state(encode_message(msg, self.topics))
            elif isinstance(msg, Description):
                self.buffer.put_event(encode_message(msg, self.topics))
            elif isinstance(msg, Episode | Mood):
                self._announce_episodes(msg.camera)
                events, states = self.episodes.encode(msg)
                for item in events:
                    self.buffer.put_event(item)
                for item in states:
                    self.buffer.put_state(item)
        except (ValueError, TypeError) as err:
            self.stats.dropped["invalid"] += 1
            self._invalid_warnings.log(
                logger,
                logging.WARNING,
                "MQTT: not publishing an invalid %s: %s",
                type(msg).__name__,
                err,
            )

    def _ingest_va(self, msg: VASample) -> None:
        key = (msg.camera, msg.track_id)
        last_t = self._va_last_t.get(key)
        # Media time may restart (a source reconnected): then the gate opens again.
        if last_t is not None and 0 <= msg.t - last_t < 1.0 / self.cfg.va_rate_hz - _VA_RATE_EPS_S:
            self.stats.throttled += 1
            return
        item = encode_message(msg, self.topics)
        self._va_last_t[key] = msg.t
        if self.cfg.homeassistant.enabled and key not in self._announced:
            self._announce_track(msg.camera, msg.track_id)
        self.buffer.put_va(key, item)
        self.stats.superseded = self.buffer.superseded

    def _ingest_event(self, msg: TrackEvent) -> None:
        item = encode_message(msg, self.topics)
        tracks = self._live_tracks.setdefault(msg.camera, set())
        key = (msg.camera, msg.track_id)
        if msg.kind.value == "appeared":
            tracks.add(msg.track_id)
            if self.cfg.homeassistant.enabled and key not in self._announced:
                self._announce_track(msg.camera, msg.track_id)
        else:
            tracks.discard(msg.track_id)
            self._va_last_t.pop(key, None)
            if key in self._announced:
                self._announced.discard(key)
                for out in ha.track_removal(self.cfg.homeassistant, msg.camera, msg.track_id):
                    self.buffer.put_event(out)
        self.buffer.put_event(item)
        self.buffer.put_state(encode_face_count(msg.camera, len(tracks), self.topics, time.time()))

    def _announce_track(self, camera: str, track_id: int) -> None:
        self._announced.add((camera, track_id))
        if camera not in self._live_tracks:
            self._live_tracks[camera] = set()
        for out in ha.track_discovery(self.cfg.homeassistant, self.topics, camera, track_id):
            self.buffer.put_event(out)

    def _reannounce(self) -> None:
        logger.info("MQTT: Home Assistant is online; re-announcing discovery")
        self._announce_all()

    def _announce_episodes(self, camera: str, again: bool = False) -> None:
        """Rule sensors and states (and mood sensors) of a camera, once unless ``again``."""
        if camera in self._episode_cameras and not again:
            return
        self._episode_cameras.add(camera)
        configs, states = self.episodes.announce([camera])
        for item in configs:
            self.buffer.put_event(item)
        for item in states:
            self.buffer.put_state(item)

    def _announce_all(self) -> None:
        """Queue every discovery config (on connect and when Home Assistant restarts)."""
        cfg = self.cfg.homeassistant
        self.stats.ha_announcements += 1
        now = time.time()
        for camera, tracks in self._live_tracks.items():
            for out in ha.camera_discovery(cfg, self.topics, camera):
                self.buffer.put_event(out)
            self.buffer.put_state(encode_face_count(camera, len(tracks), self.topics, now))
        for camera, track_id in sorted(self._announced):
            for out in ha.track_discovery(cfg, self.topics, camera, track_id):
                self.buffer.put_event(out)
        for camera in sorted(self._episode_cameras):
            self._announce_episodes(camera, again=True)

    def _mark_stopped(self) -> None:
        now = time.time()
        for camera in dict.fromkeys([*self.cameras, *self._last_status]):
            last = self._last_status.get(camera)
            if last is not None and last.state is CameraState.STOPPED:
                continue  # the source said why it stopped; keep that
            stopped = CameraStatus(
                camera=camera,
                state=CameraState.STOPPED,
                wall_time=now,
                detail="analyzer stopped",
                frames=last.frames if last else 0,
                skipped=last.skipped if last else 0,
                reconnects=last.reconnects if last else 0,
                errors=last.errors if last else 0,
            )
            self._ingest(stopped)

    # ------------------------------------------------------------ connection

    async def _connection_loop(self) -> None:
        while not self._closing.is_set():
            if self._may_publish is not None and not self._may_publish():
                with contextlib.suppress(TimeoutError):  # fenced: do not even connect
                    async with asyncio.timeout(self.cfg.reconnect_min_s):
                        await self._closing.wait()
                continue
            self.stats.connect_attempts += 1
            connected_at: float | None = None
            try:
                client = self._new_client()
                async with connection(client):
                    connected_at = time.monotonic()
                    self._on_connected()
                    await self._session(client)
                return  # clean exit: the session ended because we are closing
            except aiomqtt.MqttError as err:
                kind, text = explain_failure(err, self.cfg)
            except Exception as err:  # supervisor: log, count, back off, keep going
                logger.exception("MQTT: unexpected error in the connection loop")
                kind, text = FailureKind.NETWORK, f"unexpected {type(err).__name__}"
            finally:
                self.stats.connected = False
                self._connected_event.clear()
            delay = self._after_failure(kind, text, connected_at)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._closing.wait()

    def _after_failure(self, kind: FailureKind, text: str, connected_at: float | None) -> float:
        """Count and log a failed or lost connection; returns the delay before retrying."""
        if connected_at is not None:
            if time.monotonic() - connected_at >= HEALTHY_CONNECTION_S:
                self._backoff.reset()
            text = f"lost the connection: {text}"
            self._last_failure = ""  # a new episode: its first failure is logged
        self.stats.last_error = text
        if kind is FailureKind.AUTH:
            self.stats.auth_failures += 1
            delay = self.cfg.auth_retry_s
        elif kind is FailureKind.TLS:
            self.stats.tls_failures += 1
            delay = self.cfg.auth_retry_s
        else:
            delay = self._backoff.next_delay()
        # The same failure again is logged at debug level, and at most once per
        # RETRY_LOG_INTERVAL_S at its own level: no log flood.
        log = logger.error if kind is not FailureKind.NETWORK else logger.warning
        if text == self._last_failure and not self._retry_log.ready():
            log = logger.debug
        elif text != self._last_failure:
            self._retry_log.ready()  # a new failure starts the interval
        log("MQTT: %s; retrying in %.1f s", text, delay)
        self._last_failure = text
        return delay

    def _new_client(self) -> Client:
        last = self._will or encode_available(AVAILABLE_OFFLINE, self.topics)
        will = aiomqtt.Will(last.topic, last.payload, qos=last.qos, retain=last.retain)
        return Client(
            **client_kwargs(self.cfg, self._password, self._tls_context),
            will=will,
            max_queued_incoming_messages=INBOUND_QUEUE_SIZE,
        )

    def _on_connected(self) -> None:
        self.stats.connections += 1
        self.stats.connected = True
        self.stats.last_error = ""
        self._connected_event.set()
        logger.info(
            "MQTT: connected to %s:%d (prefix %s)", self.cfg.host, self.cfg.port, self.cfg.prefix
        )
        # Retained state again, so it reflects now (a restarted broker may have lost it).
        for status in self._last_status.values():
            self.buffer.put_state(encode_message(status, self.topics))
        for item in self.episodes.retained():
            self.buffer.put_state(item)
        if self.cfg.homeassistant.enabled:
            self._announce_all()

    async def _session(self, client: aiomqtt.Client) -> None:
        """Publish ``online``, then send until closing (returns) or disconnected (raises)."""
        if self._availability:
            await self._send(client, encode_available(AVAILABLE_ONLINE, self.topics))
        if self.cfg.homeassistant.enabled:
            await client.subscribe(self.cfg.homeassistant.status_topic, qos=QOS_RELIABLE)
            await client.subscribe(self.episodes.discovery_filter, qos=QOS_RELIABLE)
        sender = asyncio.create_task(self._sender(client), name="mqtt-sender")
        watcher = asyncio.create_task(self._inbound(client), name="mqtt-inbound")
        try:
            await asyncio.wait({sender, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait(sender, watcher)  # raises MqttError of a lost connection
        # The sender returned: closing; the buffer is flushed, say goodbye.
        if self._availability:
            await self._send(client, encode_available(AVAILABLE_STOPPED, self.topics))

    async def _sender(self, client: aiomqtt.Client) -> None:
        while True:
            item = self.buffer.pop()
            if item is None:
                if self._closing.is_set():
                    return
                closing = asyncio.ensure_future(self._closing.wait())
                ready = asyncio.ensure_future(self.buffer.wait())
                try:
                    await asyncio.wait({closing, ready}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    closing.cancel()
                    ready.cancel()
                continue
            await self._send(client, item)

    async def _send(self, client: aiomqtt.Client, item: Outbound) -> None:
        if self._may_publish is not None and not self._may_publish():
            self.stats.dropped["fenced"] += 1
            return
        try:
            await client.publish(item.topic, item.payload, qos=item.qos, retain=item.retain)
        except (aiomqtt.MqttError, asyncio.CancelledError):
            if item.qos > 0:
                self.buffer.requeue(item)
            else:  # telemetry is not resent (a newer sample follows); the loss is counted
                self.stats.dropped[f"{item.kind}_send_failed"] += 1
            raise
        self.stats.published[item.kind] += 1

    def _inbound_discovery(self, topic: str, payload: bytes) -> None:
        """A retained rule sensor config: remove it when its rule is gone."""
        try:
            removal = self.episodes.stale_config(topic, payload)
        except InboundError as err:
            self.stats.rejected_inbound += 1
            self._inbound_warnings.log(
                logger,
                logging.WARNING,
                "MQTT: ignoring payload on %s: %s: %s",
                topic[:100],
                err,
                preview(payload),
            )
            return
        if removal is not None:
            self.buffer.put_event(removal)

    async def _inbound(self, client: aiomqtt.Client) -> None:
        """Home Assistant's status topic; iterating also notices a lost connection."""
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            if message.topic.matches(self.episodes.discovery_filter):
                self._inbound_discovery(str(message.topic), payload)
                continue
            try:
                status = ha.parse_ha_status(payload)
            except InboundError as err:
                self.stats.rejected_inbound += 1
                self._inbound_warnings.log(
                    logger,
                    logging.WARNING,
                    "MQTT: ignoring payload on %s: %s: %s",
                    str(message.topic)[:100],
                    err,
                    preview(payload),
                )
                continue
            if status == "online" and self.cfg.homeassistant.enabled:
                self._ha_online.trigger()  # at most once per HA_REANNOUNCE_S (a flood merges)


def sink(
    ctx: SinkContext,
    *,
    will: Outbound | None = None,
    availability: bool = True,
    may_publish: Callable[[], bool] | None = None,
) -> MqttPublisher:
    """The MQTT sink of a run whose config has an ``mqtt`` section (:data:`compose.SINKS`).

    The keywords are the session settings of a cluster camera actor (see
    :class:`MqttPublisher`).
    """
    cfg = ctx.cfg
    if cfg.mqtt is None:
        raise ValueError("the MQTT sink needs an mqtt section")
    rules = [r.name for r in cfg.episodes.rules] if cfg.episodes else []
    mood = cfg.mood is not None and cfg.mood.enabled
    return MqttPublisher(
        cfg.mqtt,
        ctx.bus,
        list(ctx.view.cameras),
        rules=rules,
        mood=mood,
        will=will,
        availability=availability,
        may_publish=may_publish,
    )
