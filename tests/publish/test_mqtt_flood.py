"""A peer flooding Home Assistant's status topic cannot flood the log or the outbox."""

from __future__ import annotations

import asyncio
import logging
import subprocess

import pytest

from streamer.bus import EventBus
from streamer.publish.config import MqttConfig
from streamer.publish.connect import client_kwargs
from streamer.publish.flood import MQTT_CLIENT_LOGGER, Coalescer, ThrottleFilter
from streamer.publish.mqtt import MqttPublisher
from streamer.publish.payloads import WarnLimiter
from streamer.testing.mqtt import Broker
from streamer.throttle import LogThrottle
from tests.helpers.mqtt import make_event, make_va, wait_until

FLOOD = 5000


async def test_library_logger_is_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    import aiomqtt

    client = aiomqtt.Client(**client_kwargs(MqttConfig(), None, None))
    log = client._logger
    assert log.name == MQTT_CLIENT_LOGGER
    assert any(isinstance(f, ThrottleFilter) for f in log.filters)
    caplog.set_level(logging.INFO)
    for _ in range(FLOOD):
        log.warning("Message queue is full. Discarding message.")
        log.warning("There are %d pending publish calls.", 7)
    log.info("not a warning: never held back")
    lines = [r.getMessage() for r in caplog.records if r.name == MQTT_CLIENT_LOGGER]
    assert lines == [
        "Message queue is full. Discarding message.",
        "There are 7 pending publish calls.",
        "not a warning: never held back",
    ]


def test_throttle_filter_says_how_many_were_suppressed() -> None:
    now = [0.0]
    filt = ThrottleFilter(10.0)
    filt._throttles["x %d"] = LogThrottle(10.0, clock=lambda: now[0])

    def record(n: int) -> logging.LogRecord:
        return logging.LogRecord("mqtt", logging.WARNING, __file__, 1, "x %d", (n,), None)

    assert filt.filter(record(1))
    assert not any(filt.filter(record(i)) for i in range(2, 50))
    now[0] = 11.0
    last = record(50)
    assert filt.filter(last)
    assert last.getMessage() == "x 50 (48 similar suppressed)"


async def test_coalescer_runs_once_now_and_once_for_the_rest() -> None:
    runs: list[float] = []
    loop = asyncio.get_running_loop()
    c = Coalescer(0.2, lambda: runs.append(loop.time()))
    assert c.trigger()
    assert not any(c.trigger() for _ in range(1000))
    assert len(runs) == 1 and c.merged == 1000
    await wait_until(lambda: len(runs) == 2, 5.0, "the merged run")
    c.cancel()
    assert len(runs) == 2


@pytest.mark.mqtt
@pytest.mark.timeout(400)
async def test_ha_status_flood_gives_a_handful_of_log_lines(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = MqttConfig(
        port=broker.port,
        prefix="test",
        reconnect_min_s=0.1,
        reconnect_max_s=0.5,
        homeassistant={"enabled": True},
    )
    caplog.set_level(logging.INFO)
    bus = EventBus()
    async with MqttPublisher(cfg, bus, ["cam1"]) as pub:
        await wait_until(lambda: pub.stats.ha_announcements == 1, 30, "first announcement")
        bus.publish_nowait(make_event("cam1", 4, "appeared"))
        bus.publish_nowait(make_va("cam1", 4, t=0.0, v=0.3))
        await wait_until(lambda: pub.stats.published["va"] == 1, 30, "a VA sample")
        # Let the connect-time log lines pass before counting.
        caplog.clear()
        flood = await asyncio.create_subprocess_exec(
            *["mosquitto_pub", "-h", broker.host, "-p", str(broker.port)],
            *["-t", cfg.homeassistant.status_topic, "-l"],
            stdin=subprocess.PIPE,
        )
        await flood.communicate(b"online\n" * FLOOD)
        assert flood.returncode == 0
        await wait_until(
            lambda: broker.count_in_log("Received PUBLISH from") >= FLOOD, 120, "the flood"
        )
        before = pub.stats.ha_announcements
        # The flood merges into a few announcements; the last one follows the flood.
        await wait_until(lambda: pub.stats.ha_announcements > before, 120, "the merged one")
        bus.publish_nowait(make_va("cam1", 4, t=5.0, v=0.4))
        await wait_until(lambda: pub.stats.published["va"] == 2, 120, "publishing goes on")
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    announce = [r for r in caplog.records if "re-announcing" in r.getMessage()]
    assert len(warnings) <= 5, [r.getMessage() for r in warnings]
    assert 1 <= len(announce) <= 20, len(announce)
    assert pub.stats.ha_announcements - 1 == len(announce)
    assert pub.stats.dropped["event_overflow"] == 0


def test_rejection_warnings_are_a_burst_then_one_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("streamer.test.rejections")
    limiter = WarnLimiter(log, burst=3, interval_s=3600.0)
    caplog.set_level(logging.WARNING, logger=log.name)
    for i in range(FLOOD):
        limiter.warn("rejected %d", i)
    lines = [r.getMessage() for r in caplog.records if r.name == log.name]
    assert limiter.count == FLOOD
    assert lines == [
        "rejected 0 [rejected inputs so far: 1]",
        "rejected 1 [rejected inputs so far: 2]",
        "rejected 2 [rejected inputs so far: 3]",
        "rejected 3 [rejected inputs so far: 4]",
    ]
