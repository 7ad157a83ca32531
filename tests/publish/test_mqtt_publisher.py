"""MqttPublisher against a real mosquitto broker on a free loopback port."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable
from typing import Any

import aiomqtt
import numpy as np
import pytest

from streamer.bus import EventBus
from streamer.messages import Frame, Message
from streamer.publish.config import MqttConfig
from streamer.publish.mqtt import MqttPublisher
from streamer.publish.payloads import encode_message, validate_record
from streamer.testing.mqtt import Broker, TcpProxy
from streamer.testing.net import free_port
from tests.helpers.mqtt import (
    Collector,
    make_description,
    make_event,
    make_status,
    make_va,
    wait_until,
)

pytestmark = [pytest.mark.mqtt, pytest.mark.timeout(60)]

PREFIX = "test"


def cfg_for(port: int, **kw: Any) -> MqttConfig:
    base: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "prefix": PREFIX,
        "keepalive_s": 5,
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 0.5,
        "connect_timeout_s": 3,
    }
    base.update(kw)
    return MqttConfig(**base)


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_every_message_type_round_trips_and_validates(broker: Broker, protocol: str) -> None:
    bus = EventBus()
    async with (
        Collector(broker.host, broker.port, f"{PREFIX}/#") as col,
        MqttPublisher(cfg_for(broker.port, protocol=protocol), bus, ["cam1"]) as pub,
    ):
        await wait_until(lambda: pub.connected, what="publisher connected")
        # A frame on the bus (image data) must never reach the broker.
        bus.publish_nowait(Frame("cam1", 0, 0.0, np.full((480, 640, 3), 7, np.uint8)))  # type: ignore[arg-type]
        sent: list[Message] = [
            make_status("cam1", "online"),
            make_event("cam1", 7, "appeared", t=0.0),
            make_va("cam1", 7, t=0.0, v=0.25, a=-0.5),
            make_description("cam1", 7),
        ]
        for msg in sent:
            bus.publish_nowait(msg)
        # Retained state coalesces (newest wins), so wait for count 1 before the loss.
        await wait_until(
            lambda: (
                [json.loads(p)["count"] for p in col.payloads(f"{PREFIX}/cam1/face_count")] == [1]
            ),
            what="face count 1",
        )
        bus.publish_nowait(make_event("cam1", 7, "lost", t=2.5))
        await wait_until(lambda: len(col.payloads(f"{PREFIX}/cam1/events")) == 2, what="two events")
        await wait_until(lambda: col.payloads(f"{PREFIX}/cam1/faces/7/va"), what="va")
        await wait_until(
            lambda: col.payloads(f"{PREFIX}/cam1/faces/7/description"), what="description"
        )
    by_topic = {
        f"{PREFIX}/cam1/status": "streamer.status/1",
        f"{PREFIX}/cam1/events": "streamer.event/1",
        f"{PREFIX}/cam1/faces/7/va": "streamer.va/1",
        f"{PREFIX}/cam1/faces/7/description": "streamer.description/1",
        f"{PREFIX}/cam1/face_count": "streamer.face_count/1",
    }
    seen_schemas = set()
    for topic, payload, _retain in col.messages:
        if topic == f"{PREFIX}/available":
            assert payload in (b"online", b"stopped")
            continue
        record = json.loads(payload)
        validate_record(record, expected=by_topic[topic])
        assert "wall_time" in record
        seen_schemas.add(record["schema"])
    assert seen_schemas == set(by_topic.values())
    # Privacy: only numbers and text left the process; nothing image-sized.
    assert all(len(p) < 2048 for _, p, _ in col.messages)
    assert not any(b"image" in p for _, p, _ in col.messages)
    # The payload equals the message's record (plus wall_time where it had none).
    va = json.loads(col.payloads(f"{PREFIX}/cam1/faces/7/va")[0])
    expected = make_va("cam1", 7, t=0.0, v=0.25, a=-0.5).to_record()
    assert {k: v for k, v in va.items() if k != "wall_time"} == expected
    events = [json.loads(p)["event"] for p in col.payloads(f"{PREFIX}/cam1/events")]
    assert events == ["appeared", "lost"]
    counts = [json.loads(p)["count"] for p in col.payloads(f"{PREFIX}/cam1/face_count")]
    assert counts == [1, 0]
    # Clean exit: retained "stopped" for availability and the camera.
    assert col.payloads(f"{PREFIX}/available")[-1] == b"stopped"
    last_status = json.loads(col.payloads(f"{PREFIX}/cam1/status")[-1])
    assert last_status["state"] == "stopped" and last_status["frames"] == 42
    assert pub.stats.published["va"] == 1 and pub.stats.published["event"] == 2


async def test_mosquitto_sub_reads_retained_state(broker: Broker) -> None:
    """An independent client (mosquitto_sub) sees retained availability and status."""
    bus = EventBus()
    async with MqttPublisher(cfg_for(broker.port), bus, ["door"]) as pub:
        bus.publish_nowait(make_status("door", "online"))
        await wait_until(lambda: pub.stats.published["status"] >= 1, what="status sent")
        out = await asyncio.to_thread(
            subprocess.run,
            [
                "mosquitto_sub",
                "-h",
                broker.host,
                "-p",
                str(broker.port),
                "-t",
                f"{PREFIX}/#",
                "-v",
                "-W",
                "5",
                "-C",
                "2",
            ],
            capture_output=True,
            text=True,
            timeout=20,
        )
    lines = dict(line.split(" ", 1) for line in out.stdout.strip().splitlines())
    assert lines[f"{PREFIX}/available"] == "online"
    status = json.loads(lines[f"{PREFIX}/door/status"])
    validate_record(status, expected="streamer.status/1")
    assert status["state"] == "online"


async def test_no_broker_at_start_then_connects(make_broker: Callable[..., Broker]) -> None:
    port = free_port()
    bus = EventBus()
    async with MqttPublisher(cfg_for(port), bus, ["cam1"]) as pub:
        # The pipeline keeps publishing to the bus; nothing blocks.
        for i in range(50):
            bus.publish_nowait(make_va("cam1", 1, t=i * 0.2))
        await wait_until(lambda: pub.stats.connect_attempts >= 2, what="retries")
        assert not pub.connected
        broker = make_broker(port=port)
        async with Collector(broker.host, broker.port, f"{PREFIX}/#") as col:
            await wait_until(lambda: pub.connected, what="connected once the broker is up")
            await wait_until(
                lambda: col.payloads(f"{PREFIX}/available") == [b"online"], what="online"
            )
            bus.publish_nowait(make_va("cam1", 1, t=100.0, v=0.75))
            await wait_until(
                lambda: any(
                    json.loads(p)["valence"] == 0.75
                    for p in col.payloads(f"{PREFIX}/cam1/faces/1/va")
                ),
                what="fresh VA after connecting",
            )
    assert pub.stats.connections == 1


async def _feed_va(bus: EventBus, camera: str, track_id: int, state: dict[str, float]) -> None:
    """Synthetic VA at 20 Hz media time (the publisher keeps 5 Hz of it)."""
    frame = 0
    while True:
        state["t"] = frame / 20
        bus.publish_nowait(make_va(camera, track_id, t=frame / 20, frame=frame))
        frame += 1
        await asyncio.sleep(0.01)


async def test_broker_restart_republishes_online_and_va_resumes(broker: Broker) -> None:
    bus = EventBus()
    feed_state: dict[str, float] = {"t": 0.0}
    async with MqttPublisher(cfg_for(broker.port), bus, ["cam1"]) as pub:
        feeder = asyncio.create_task(_feed_va(bus, "cam1", 3, feed_state))
        try:
            bus.publish_nowait(make_status("cam1", "online"))
            await wait_until(lambda: pub.stats.published["va"] >= 3, what="VA before restart")
            broker.stop()
            await wait_until(lambda: not pub.connected, what="disconnect noticed")
            t_down = feed_state["t"]
            broker.start()  # same port; persistence off: retained state is gone
            async with Collector(broker.host, broker.port, f"{PREFIX}/#") as col:
                await wait_until(lambda: pub.stats.connections >= 2, what="reconnected")
                await wait_until(
                    lambda: b"online" in col.payloads(f"{PREFIX}/available"),
                    what="retained online again",
                )
                await wait_until(
                    lambda: any(r["t"] > t_down for r in col.records("/faces/3/va")),
                    what="VA resumed after the restart",
                )
                # Retained camera status was re-published for the new broker.
                await wait_until(
                    lambda: col.records("/cam1/status"), what="camera status re-published"
                )
        finally:
            feeder.cancel()
    assert pub.stats.connections == 2
    for rec in col.records("/faces/3/va"):
        validate_record(rec, expected="streamer.va/1")


async def test_broker_unreachable_buffer_bounded_and_stale_va_dropped(
    make_broker: Callable[..., Broker],
) -> None:
    port = free_port()
    cfg = cfg_for(
        port, max_pending_tracks=4, max_pending_events=10, va_stale_s=0.2, reconnect_max_s=0.3
    )
    bus = EventBus()
    now = [0.0]  # the publisher's clock for the age of held VA: the test moves it on
    async with MqttPublisher(cfg, bus, ["cam1"], clock=lambda: now[0]) as pub:
        for i in range(30):
            bus.publish_nowait(make_description("cam1", track_id=i))
        for track in range(10):
            bus.publish_nowait(make_va("cam1", track, t=1.0))
        bus.publish_nowait(make_status("cam1", "reconnecting"))
        bus.publish_nowait(make_status("cam1", "online"))
        await wait_until(lambda: len(bus.subscriptions[0]) == 0, what="intake drained")
        # Bounded while the broker is away: newest VA of at most 4 tracks, 10 events.
        assert pub.buffer.pending_va == 4
        assert pub.buffer.pending_events == 10
        assert pub.buffer.dropped["va_overflow"] == 6
        assert pub.buffer.dropped["event_overflow"] == 20
        now[0] += 2 * cfg.va_stale_s  # the held VA is now older than va_stale_s
        broker = make_broker(port=port)
        await wait_until(lambda: pub.connected, what="connected")
        await wait_until(lambda: pub.stats.published["description"] == 10, what="events flushed")
        await wait_until(lambda: pub.stats.dropped["va_stale"] == 4, what="stale VA counted")
        assert pub.stats.published["va"] == 0
        # Retained state reflects now: one status (the newest), seen by a late subscriber.
        async with Collector(broker.host, broker.port, f"{PREFIX}/cam1/status") as col:
            await wait_until(lambda: col.messages, what="retained status")
            assert json.loads(col.messages[0][1])["state"] == "online"
            assert col.messages[0][2] is True  # retained
        assert pub.stats.published["status"] == 1
    assert pub.stats.dropped["event_overflow"] == 20


async def test_va_rate_limited_per_track(broker: Broker) -> None:
    bus = EventBus()
    async with (
        Collector(broker.host, broker.port, f"{PREFIX}/#") as col,
        MqttPublisher(cfg_for(broker.port, va_rate_hz=2.0), bus, ["cam1"]) as pub,
    ):
        await wait_until(lambda: pub.connected, what="connected")
        # 3 s of media time at 10 Hz for two tracks; 2 Hz keeps t = 0, 0.5, ... 2.5.
        for frame in range(30):
            for track in (1, 2):
                bus.publish_nowait(make_va("cam1", track, t=frame / 10, frame=frame))
            await wait_until(lambda: len(bus.subscriptions[0]) == 0, what="intake")
            await wait_until(lambda: len(pub.buffer) == 0, what="sent")
        await wait_until(lambda: len(col.records("/faces/2/va")) == 6, what="track 2 VA")
    for track in (1, 2):
        ts = [r["t"] for r in col.records(f"/faces/{track}/va")]
        assert ts == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert pub.stats.throttled == 2 * 24


async def test_nan_is_never_published(broker: Broker) -> None:
    bus = EventBus()
    async with (
        Collector(broker.host, broker.port, f"{PREFIX}/#") as col,
        MqttPublisher(cfg_for(broker.port), bus, ["cam1"]) as pub,
    ):
        await wait_until(lambda: pub.connected, what="connected")
        bus.publish_nowait(make_va("cam1", 1, t=0.0, v=float("nan")))
        bus.publish_nowait(make_va("cam1", 2, t=0.0, v=0.5))
        await wait_until(lambda: col.records("/faces/2/va"), what="valid VA")
    assert pub.stats.dropped["invalid"] == 1
    assert col.payloads(f"{PREFIX}/cam1/faces/1/va") == []
    assert all(b"NaN" not in p for _, p, _ in col.messages)


async def test_clean_exit_marks_every_camera_stopped(broker: Broker) -> None:
    from streamer.messages import CameraState, CameraStatus

    bus = EventBus()
    async with MqttPublisher(cfg_for(broker.port), bus, ["cam1", "cam2"]) as pub:
        await wait_until(lambda: pub.connected, what="connected")
        bus.publish_nowait(CameraStatus("cam1", CameraState.STOPPED, 1.0, "end of file", frames=72))
    assert pub.stats.published["available"] == 2  # online, then stopped
    async with Collector(broker.host, broker.port, f"{PREFIX}/#") as late:
        await wait_until(lambda: len(late.messages) == 3, what="retained state")
        retained = {t: p for t, p, _ in late.messages}
    assert retained[f"{PREFIX}/available"] == b"stopped"
    cam1 = json.loads(retained[f"{PREFIX}/cam1/status"])
    cam2 = json.loads(retained[f"{PREFIX}/cam2/status"])
    assert (cam1["state"], cam1["detail"], cam1["frames"]) == ("stopped", "end of file", 72)
    assert (cam2["state"], cam2["detail"]) == ("stopped", "analyzer stopped")


async def test_network_cut_subscribers_see_offline_then_online(broker: Broker) -> None:
    """The path to the broker breaks (broker stays up): the broker delivers the last
    will to other subscribers; once the path is back, `online` and VA return."""
    proxy = TcpProxy(free_port(), broker.port)
    await proxy.start()
    bus = EventBus()
    feed_state: dict[str, float] = {"t": 0.0}
    async with (
        Collector(broker.host, broker.port, f"{PREFIX}/#") as col,
        MqttPublisher(cfg_for(proxy.port), bus, ["cam1"]) as pub,
    ):
        feeder = asyncio.create_task(_feed_va(bus, "cam1", 5, feed_state))
        try:
            await wait_until(lambda: col.payloads(f"{PREFIX}/available") == [b"online"])
            await proxy.cut()
            await wait_until(
                lambda: col.payloads(f"{PREFIX}/available") == [b"online", b"offline"],
                what="last will seen by another subscriber",
            )
            await wait_until(lambda: not pub.connected, what="publisher noticed")
            t_cut = feed_state["t"]
            await proxy.start()
            await wait_until(
                lambda: col.payloads(f"{PREFIX}/available") == [b"online", b"offline", b"online"],
                what="online again",
            )
            await wait_until(
                lambda: any(r["t"] > t_cut for r in col.records("/faces/5/va")),
                what="VA resumed",
            )
        finally:
            feeder.cancel()
            await proxy.cut()
    assert pub.stats.connections == 2


async def test_relay_dropping_the_connection_is_retried_at_once_not_after_the_timeout(
    make_broker: Callable[..., Broker],
) -> None:
    """A relay (load balancer, container port) accepts the TCP connection and drops it
    while the broker is down: each attempt fails at once and is retried on the backoff,
    so the publisher is back within about a second of the broker's return, not after the
    10 s connect timeout (aiomqtt waited out the timeout on a socket closed before
    CONNACK)."""
    broker = make_broker(start=False)
    proxy = TcpProxy(free_port(), broker.port)
    await proxy.start()
    bus = EventBus()
    cfg = cfg_for(proxy.port, connect_timeout_s=10, reconnect_min_s=0.1, reconnect_max_s=0.5)
    try:
        async with MqttPublisher(cfg, bus, ["cam1"]) as pub:
            # Several attempts while the broker is down (one hanging attempt before).
            await wait_until(lambda: pub.stats.connect_attempts >= 3, timeout_s=4.0)
            assert not pub.connected
            broker.start()
            await wait_until(lambda: pub.connected, timeout_s=5.0, what="connected")
    finally:
        await proxy.cut()


class _BrokenClient:
    """A client whose connection breaks during the publish (a fault that cannot be
    timed for real: the broker vanishing between taking a sample and its write)."""

    async def publish(self, *args: Any, **kwargs: Any) -> None:
        raise aiomqtt.MqttError("Unexpected disconnection")


async def test_va_sample_lost_in_a_broken_send_is_counted() -> None:
    """Every VA sample is published or counted: the one being sent when the connection
    broke is not resent (a newer sample follows) but counted as ``va_send_failed``;
    a reliable event is put back instead."""
    pub = MqttPublisher(cfg_for(free_port()), EventBus(), ["cam1"])
    va = encode_message(make_va(), pub.topics)
    event = encode_message(make_event(), pub.topics)
    client: Any = _BrokenClient()
    for item in (va, event):
        with pytest.raises(aiomqtt.MqttError):
            await pub._send(client, item)
    assert pub.stats.dropped["va_send_failed"] == 1
    assert pub.stats.published["va"] == 0
    assert pub.buffer.pop() == event
