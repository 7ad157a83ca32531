"""Episodes and room mood on a real mosquitto: payloads, retained mood, Home Assistant."""

from __future__ import annotations

import dataclasses
import json

import pytest

from streamer.bus import EventBus
from streamer.episodes.config import EpisodesConfig, MoodConfig
from streamer.episodes.stage import EpisodeStage
from streamer.messages import EPISODE_SCHEMA, MOOD_SCHEMA, VASample
from streamer.publish.config import MqttConfig
from streamer.publish.mqtt import MqttPublisher
from streamer.publish.payloads import validate_record
from streamer.testing.mqtt import Broker
from tests.helpers.mqtt import Collector, make_event, make_va, wait_until

pytestmark = pytest.mark.timeout(60)

BINARY = "homeassistant/binary_sensor/streamer"
DISTRESS = {"name": "distress", "when": {"valence_below": -0.4}, "for_s": 0.5, "clear_after_s": 0.2}


def measured(t: float, v: float) -> VASample:
    """A settled track's sample with both raw measurements accepted."""
    sample: VASample = make_va("cam1", 1, t=t, v=v, a=0.2)
    return dataclasses.replace(sample, arousal_raw=0.2)


def mqtt_cfg(broker: Broker) -> MqttConfig:
    return MqttConfig(
        port=broker.port,
        prefix="test",
        reconnect_min_s=0.1,
        reconnect_max_s=0.5,
        homeassistant={"enabled": True},
    )


@pytest.mark.mqtt
async def test_episode_and_mood_payloads_and_binary_sensor(broker: Broker) -> None:
    bus = EventBus()
    rules = EpisodesConfig.model_validate({"rules": [DISTRESS]})
    active = "test/cam1/rules/distress/active"
    config_topic = f"{BINARY}/cam1_rule_distress/config"
    async with (
        Collector(broker.host, broker.port, "#") as col,
        MqttPublisher(mqtt_cfg(broker), bus, ["cam1"], rules=["distress"], mood=True),
        EpisodeStage(bus, rules, MoodConfig(interval_s=0.5)) as stage,
    ):
        await wait_until(lambda: bool(col.payloads(config_topic)), what="binary sensor discovery")
        body = json.loads(col.payloads(config_topic)[-1])
        assert body["state_topic"] == active
        assert (body["payload_on"], body["payload_off"]) == ("ON", "OFF")
        await wait_until(lambda: col.payloads(active) == [b"OFF"], what="initial OFF")
        mood_cfg = "homeassistant/sensor/streamer/cam1_mood_valence/config"
        await wait_until(lambda: bool(col.payloads(mood_cfg)), what="mood sensor discovery")
        assert json.loads(col.payloads(mood_cfg)[-1])["state_topic"] == "test/cam1/mood"

        bus.publish_nowait(make_event("cam1", 1, "appeared"))
        for i in range(20):  # distressed for 0.66 s
            await bus.publish(measured(i / 30, -0.7))
        await wait_until(lambda: col.payloads(active)[-1:] == [b"ON"], what="sensor on")
        for i in range(20, 40):  # calm again
            await bus.publish(measured(i / 30, 0.1))
        await wait_until(lambda: col.payloads(active)[-1:] == [b"OFF"], what="sensor off")
        assert col.payloads(active) == [b"OFF", b"ON", b"OFF"]

        await wait_until(lambda: len(col.records("/cam1/episodes")) == 2, what="episodes")
        episodes = col.records("/cam1/episodes")
        assert [e["state"] for e in episodes] == ["started", "ended"]
        for rec in episodes:
            validate_record(rec, EPISODE_SCHEMA)
        assert episodes[1]["reason"] == "cleared"
        await wait_until(lambda: bool(col.records("/cam1/mood")), what="a room mood")
        moods = col.records("/cam1/mood")
        assert moods and moods[0]["count"] == 1
        for rec in moods:
            validate_record(rec, MOOD_SCHEMA)
        bus.publish_nowait(make_event("cam1", 1, "lost", t=1.5))
        await wait_until(lambda: col.records("/cam1/mood")[-1]["count"] == 0, what="empty room")
        validate_record(col.records("/cam1/mood")[-1], MOOD_SCHEMA)
        assert stage.errors == 0
    # The mood is retained: a new subscriber gets the latest at once.
    async with Collector(broker.host, broker.port, "test/cam1/mood") as late:
        await wait_until(lambda: bool(late.messages), what="retained mood")
        assert late.messages[0][2], "retained"
        assert json.loads(late.messages[0][1])["count"] == 0


@pytest.mark.mqtt
async def test_removed_rule_is_removed_from_home_assistant(broker: Broker) -> None:
    gone = f"{BINARY}/cam1_rule_distress/config"
    kept = f"{BINARY}/cam1_rule_agitation/config"
    async with (
        Collector(broker.host, broker.port, "#") as col,
        MqttPublisher(mqtt_cfg(broker), EventBus(), ["cam1"], rules=["distress", "agitation"]),
    ):
        await wait_until(lambda: bool(col.payloads(gone) and col.payloads(kept)), what="announced")
    # Restart with the distress rule deleted from the config.
    async with (
        Collector(broker.host, broker.port, "#") as col,
        MqttPublisher(mqtt_cfg(broker), EventBus(), ["cam1"], rules=["agitation"]) as pub,
    ):
        await wait_until(lambda: col.payloads(gone)[-1:] == [b""], what="empty retained config")
        assert pub.episodes.removed == 1
        assert col.payloads(kept) and all(col.payloads(kept)), "a kept rule stays"
    async with Collector(broker.host, broker.port, f"{BINARY}/#") as late:
        await wait_until(lambda: bool(late.payloads(kept)), what="retained kept config")
        assert late.payloads(gone) == [], "Home Assistant no longer sees the removed rule"


def test_subscriber_view_takes_episode_topics_and_checks_them() -> None:
    """``subscribe`` shows episodes, moods and rule states (tests/publish/test_subscribe.py),
    so it validates them like every other topic."""
    from streamer.publish.subscriber import SubscriberView

    view = SubscriberView("test")
    assert view.handle("test/cam1/rules/distress/active", b"ON") is not None
    assert view.rules_on == {("cam1", "distress"): True}
    for topic, payload in (
        ("test/cam1/episodes", b'{"schema": "streamer.episode/1"}'),
        ("test/cam1/mood", b'{"schema": "streamer.mood/1"}'),
        ("test/cam1/rules/distress/active", b"on and on"),
        ("test/cam1/nonsense", b"{}"),
    ):
        assert view.handle(topic, payload) is None
    assert view.rejected == 4


@pytest.mark.mqtt
async def test_broker_restart_gets_mood_and_rule_state_again(broker: Broker) -> None:
    bus = EventBus()
    cfg = MqttConfig(port=broker.port, prefix="test", reconnect_min_s=0.1, reconnect_max_s=0.5)
    rules = EpisodesConfig.model_validate({"rules": [DISTRESS]})
    async with (
        MqttPublisher(cfg, bus, ["cam1"], rules=["distress"], mood=True) as pub,
        EpisodeStage(bus, rules, MoodConfig(interval_s=0.5)),
    ):
        async with Collector(broker.host, broker.port, "test/cam1/#") as before:
            for i in range(20):
                await bus.publish(measured(i / 30, -0.7))
            await wait_until(
                lambda: before.payloads("test/cam1/rules/distress/active")[-1:] == [b"ON"],
                what="ON before the restart",
            )
            await wait_until(lambda: bool(before.records("/cam1/mood")), what="a mood")
        broker.stop()
        await wait_until(lambda: not pub.connected, what="disconnect noticed")
        broker.start()  # same port; persistence off: retained state is gone
        await wait_until(lambda: pub.stats.connections >= 2, what="reconnected")
        async with Collector(broker.host, broker.port, "test/cam1/#") as col:
            await wait_until(
                lambda: col.payloads("test/cam1/rules/distress/active") == [b"ON"],
                what="rule state retained again",
            )
            await wait_until(lambda: bool(col.records("/cam1/mood")), what="mood retained again")
            assert col.records("/cam1/mood")[-1]["count"] == 1
