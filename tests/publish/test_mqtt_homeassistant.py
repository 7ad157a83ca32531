"""Home Assistant MQTT discovery against a real broker, and its hostile status topic."""

from __future__ import annotations

import json
import logging

import pytest

from streamer.bus import EventBus
from streamer.errors import InboundError
from streamer.publish.config import HomeAssistantConfig, MqttConfig
from streamer.publish.homeassistant import camera_discovery, parse_ha_status, track_discovery
from streamer.publish.mqtt import MqttPublisher
from streamer.publish.payloads import Topics
from streamer.testing.mqtt import Broker
from tests.helpers.mqtt import Collector, make_event, make_va, wait_until

pytestmark = pytest.mark.timeout(60)

DISC = "homeassistant/sensor/streamer"


def test_discovery_configs_point_at_our_topics() -> None:
    cfg = HomeAssistantConfig(enabled=True)
    topics = Topics("test")
    (faces,) = camera_discovery(cfg, topics, "cam 1")
    body = json.loads(faces.payload)
    assert faces.topic == f"{DISC}/cam_1_faces/config" and faces.retain
    assert body["state_topic"] == "test/cam_1/face_count"
    assert body["availability_topic"] == "test/available"
    valence, arousal = track_discovery(cfg, topics, "cam1", 4)
    assert json.loads(valence.payload)["state_topic"] == "test/cam1/faces/4/va"
    assert json.loads(valence.payload)["value_template"] == "{{ value_json.valence }}"
    assert json.loads(arousal.payload)["value_template"] == "{{ value_json.arousal }}"
    assert json.loads(arousal.payload)["expire_after"] == 30


@pytest.mark.parametrize(
    "payload", [b"\xff\xfe", b"online" * 100, b"", b"rebooting", b'{"state": "online"}']
)
def test_parse_ha_status_rejects_anything_but_online_offline(payload: bytes) -> None:
    with pytest.raises(InboundError):
        parse_ha_status(payload)


def test_parse_ha_status_accepts_birth_and_will() -> None:
    assert parse_ha_status(b"online") == "online"
    assert parse_ha_status(b"offline\n") == "offline"


@pytest.mark.mqtt
async def test_discovery_announced_reannounced_and_hostile_status_ignored(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = MqttConfig(
        port=broker.port,
        prefix="test",
        reconnect_min_s=0.1,
        reconnect_max_s=0.5,
        homeassistant={"enabled": True},
    )
    caplog.set_level(logging.WARNING, logger="streamer.publish.mqtt")
    bus = EventBus()
    faces_cfg = f"{DISC}/cam1_faces/config"
    val_cfg = f"{DISC}/cam1_track4_valence/config"
    async with (
        Collector(broker.host, broker.port, "#") as col,
        MqttPublisher(cfg, bus, ["cam1"]) as pub,
    ):
        await wait_until(lambda: col.payloads(faces_cfg), what="camera discovery")
        bus.publish_nowait(make_event("cam1", 4, "appeared"))
        bus.publish_nowait(make_va("cam1", 4, t=0.0, v=0.3))
        await wait_until(lambda: col.payloads(val_cfg), what="track discovery")
        await wait_until(lambda: col.payloads("test/cam1/faces/4/va"), what="va")
        va = json.loads(col.payloads("test/cam1/faces/4/va")[0])
        assert va["valence"] == 0.3  # what value_json.valence reads
        assert pub.stats.ha_announcements == 1
        # Hostile input on Home Assistant's status topic: rejected, no state change.
        for hostile in (b"\xff\xfe\x00", b"x" * 100_000, b"reboot now"):
            await col.client.publish("homeassistant/status", hostile)
        await wait_until(lambda: pub.stats.rejected_inbound == 3, what="3 rejections")
        assert pub.stats.ha_announcements == 1
        warnings = [r.getMessage() for r in caplog.records if "ignoring payload" in r.getMessage()]
        assert len(warnings) == 3 and all(len(w) < 500 for w in warnings)
        # Home Assistant restarted: everything is announced again.
        await col.client.publish("homeassistant/status", b"online")
        await wait_until(lambda: len(col.payloads(faces_cfg)) == 2, what="re-announcement")
        await wait_until(lambda: len(col.payloads(val_cfg)) == 2, what="track re-announced")
        assert pub.stats.ha_announcements == 2
        # A lost track's sensors are removed (empty retained config).
        bus.publish_nowait(make_event("cam1", 4, "lost", t=2.0))
        await wait_until(lambda: col.payloads(val_cfg)[-1:] == [b""], what="removal")
