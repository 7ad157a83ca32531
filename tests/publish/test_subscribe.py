"""``streamer subscribe`` and its SubscriberView: valid state, hostile input rejected."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from streamer.bus import EventBus
from streamer.messages import Episode, Message, Mood, VAStats
from streamer.publish.config import MqttConfig
from streamer.publish.mqtt import MqttPublisher
from streamer.publish.payloads import Topics, dumps, encode_message, validate_record
from streamer.publish.subscriber import SubscriberView
from streamer.testing.mqtt import Broker
from tests.helpers.mqtt import (
    make_description,
    make_event,
    make_status,
    make_va,
    wait_until,
)

P = "test"
TOPICS = Topics(P)


def _payload(msg: Message) -> tuple[str, bytes]:
    out = encode_message(msg, TOPICS, wall_time=1_700_000_000.0)
    return out.topic, out.payload


def _state(view: SubscriberView) -> tuple[object, ...]:
    return (
        view.available,
        copy.deepcopy(view.statuses),
        dict(view.face_counts),
        [(k, copy.copy(r)) for k, r in view.rows.items()],
    )


def test_view_builds_rows_from_valid_messages() -> None:
    now = [100.0]
    view = SubscriberView(P, clock=lambda: now[0])
    view.handle(f"{P}/available", b"online")
    for msg in (
        make_status("cam1"),
        make_event("cam1", 1, "appeared"),
        make_va("cam1", 1, t=0.2, v=0.6, a=0.4),
        make_description("cam1", 1),
        make_event("cam1", 2, "appeared"),
        make_va("cam1", 2, t=0.2, v=-0.6, a=-0.4),
    ):
        assert view.handle(*_payload(msg)) is not None
    now[0] = 102.5
    assert view.available == "online"
    assert view.statuses["cam1"]["state"] == "online"
    row = view.rows[("cam1", 1)]
    assert (row.valence, row.arousal, row.basic) == (0.6, 0.4, "happy")
    assert row.description == "Looks pleased."
    console = Console(record=True, width=160)
    console.print(view.render())
    text = console.export_text()
    assert "excited" in text and "sad" in text and "Looks pleased." in text and "2.5 s" in text
    view.handle(*_payload(make_event("cam1", 1, "lost", t=3.0)))
    assert list(view.rows) == [("cam1", 2)]
    assert view.accepted == 8 and view.rejected == 0


def test_camera_filter_ignores_other_cameras() -> None:
    view = SubscriberView(P, camera="cam1")
    assert view.subscriptions() == [f"{P}/available", f"{P}/cam1/#"]
    assert view.handle(*_payload(make_va("cam2", 1))) is None
    assert view.rows == {} and view.rejected == 0


_VALID_TOPIC, _VALID = _payload(make_va("cam1", 1, t=0.2))
_VA_RECORD = json.loads(_VALID)

HOSTILE = [
    ("non-utf8", _VALID_TOPIC, b"\xff\xfe\x00garbage\xc3\x28"),
    ("huge", _VALID_TOPIC, b"[" + b"1," * 100_000 + b"1]"),
    ("bad-json", _VALID_TOPIC, b'{"schema": "streamer.va/1", '),
    ("json-array", _VALID_TOPIC, b"[1, 2, 3]"),
    ("nan", _VALID_TOPIC, _VALID.replace(b'"valence":0.25', b'"valence":NaN')),
    ("out-of-range", _VALID_TOPIC, dumps({**_VA_RECORD, "valence": 5.0})),
    ("extra-field-image", _VALID_TOPIC, dumps({**_VA_RECORD, "image": "iVBORw0KGgo="})),
    ("wrong-schema", _VALID_TOPIC, _payload(make_status("cam1"))[1]),
    ("camera-mismatch", f"{P}/cam2/faces/1/va", _VALID),
    ("track-mismatch", f"{P}/cam1/faces/9/va", _VALID),
    ("track-not-number", f"{P}/cam1/faces/x/va", _VALID),
    ("unknown-topic", f"{P}/cam1/whatever", _VALID),
    ("availability-word", f"{P}/available", b"maybe"),
    ("availability-huge", f"{P}/available", b"online" * 1000),
    ("deep-json", _VALID_TOPIC, b"[" * 100_000 + b"]" * 100_000),
]


@pytest.mark.parametrize(("name", "topic", "payload"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_input_rejected_with_one_truncated_warning(
    name: str, topic: str, payload: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    view = SubscriberView(P)
    view.handle(f"{P}/available", b"online")
    view.handle(*_payload(make_va("cam1", 1, t=0.0, v=0.1)))
    before = _state(view)
    caplog.set_level(logging.WARNING, logger="streamer.publish.subscriber")
    assert view.handle(topic, payload) is None
    assert _state(view) == before
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "rejected" in warnings[0] and len(warnings[0]) < 500
    assert view.rejected == 1


def test_warnings_do_not_flood(caplog: pytest.LogCaptureFixture) -> None:
    view = SubscriberView(P)
    caplog.set_level(logging.WARNING, logger="streamer.publish.subscriber")
    for _ in range(5000):
        view.handle(_VALID_TOPIC, b"\xff")
    assert view.rejected == 5000
    assert len(caplog.records) < 40


def test_empty_payload_clears_silently(caplog: pytest.LogCaptureFixture) -> None:
    view = SubscriberView(P)
    assert view.handle(f"{P}/cam1/status", b"") is None
    assert view.rejected == 0 and not caplog.records


# ------------------------------------------------------------ the command, end to end


def _streamer(*args: str) -> list[str]:
    return [sys.executable, "-m", "streamer", *args]


@pytest.mark.mqtt
@pytest.mark.timeout(60)
async def test_subscribe_json_against_live_publisher(broker: Broker) -> None:
    cfg = MqttConfig(port=broker.port, prefix=P, reconnect_min_s=0.1, reconnect_max_s=0.5)
    bus = EventBus()
    async with MqttPublisher(cfg, bus, ["cam1"]) as pub:
        bus.publish_nowait(make_status("cam1", "online"))
        await wait_until(lambda: pub.stats.published["status"] == 1, what="retained status")
        proc = await asyncio.create_subprocess_exec(
            *_streamer(
                "subscribe",
                "--host",
                broker.host,
                "--port",
                str(broker.port),
                "--prefix",
                P,
                "--camera",
                "cam1",
                "--json",
                "--max-messages",
                "6",
            ),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "COLUMNS": "200"},
        )
        try:
            await wait_until(
                lambda: "Received SUBSCRIBE from streamer-sub-" in broker.log_text(),
                30,
                "the subscriber's SUBSCRIBE",
            )
            va_topic = f"{P}/cam1/faces/1/va"
            for hostile in (b"\xff\xfe\x00\x01", b"{not json", b"x" * 200_000):
                await asyncio.to_thread(
                    subprocess.run,
                    [
                        "mosquitto_pub",
                        "-h",
                        broker.host,
                        "-p",
                        str(broker.port),
                        "-t",
                        va_topic,
                        "-s",
                    ],
                    input=hostile,
                    check=True,
                    timeout=20,
                )
            bus.publish_nowait(make_va("cam2", 1, t=0.0))  # filtered out by --camera
            bus.publish_nowait(make_event("cam1", 1, "appeared"))
            bus.publish_nowait(make_va("cam1", 1, t=0.0, v=0.5, a=0.5))
            bus.publish_nowait(make_description("cam1", 1))
            stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0, stderr.decode(errors="replace")
    lines = [json.loads(line) for line in stdout.decode().splitlines()]
    topics = [line["topic"] for line in lines]
    assert sorted(topics) == sorted(
        [
            f"{P}/available",
            f"{P}/cam1/status",
            f"{P}/cam1/events",
            f"{P}/cam1/face_count",
            va_topic,
            f"{P}/cam1/faces/1/description",
        ]
    )
    for line in lines:
        if line["topic"] != f"{P}/available":
            validate_record(line["payload"])
    va = next(line["payload"] for line in lines if line["topic"] == va_topic)
    assert va["valence"] == 0.5
    err = stderr.decode(errors="replace")
    assert err.count("rejected message") == 3
    assert len(err) < 4000  # warnings are truncated: the 200 kB payload is not echoed


@pytest.mark.mqtt
@pytest.mark.timeout(60)
async def test_subscribe_wrong_password_exits_with_clear_error(
    make_broker: Callable[..., Broker], tmp_path: Path
) -> None:
    pwfile = tmp_path / "passwd"
    passwd = await asyncio.create_subprocess_exec(
        "mosquitto_passwd", "-c", "-b", str(pwfile), "bob", "right-one"
    )
    assert await passwd.wait() == 0
    broker = make_broker(f"allow_anonymous false\npassword_file {pwfile}\n")
    proc = await asyncio.create_subprocess_exec(
        *_streamer(
            "subscribe",
            "--port",
            str(broker.port),
            "--username",
            "bob",
            "--password-env",
            "SUB_TEST_PW",
            "--json",
        ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "SUB_TEST_PW": "the-wrong-one"},
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=30)
    err = stderr.decode(errors="replace")
    assert proc.returncode == 1
    assert "error:" in err and "refused the login of user 'bob'" in err
    assert "SUB_TEST_PW" in err and "the-wrong-one" not in err
    assert stdout == b""


@pytest.mark.mqtt
@pytest.mark.timeout(60)
async def test_subscribe_table_shows_tracks(broker: Broker) -> None:
    cfg = MqttConfig(port=broker.port, prefix=P, reconnect_min_s=0.1, reconnect_max_s=0.5)
    bus = EventBus()
    async with MqttPublisher(cfg, bus, ["cam1"]) as pub:
        bus.publish_nowait(make_status("cam1", "online"))
        await wait_until(lambda: pub.stats.published["status"] == 1, what="retained status")
        # 4 messages: retained availability and status, then one VA and one description.
        proc = await asyncio.create_subprocess_exec(
            *_streamer(
                "subscribe", "--port", str(broker.port), "--prefix", P, "--max-messages", "4"
            ),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "COLUMNS": "160"},
        )
        try:
            await wait_until(
                lambda: "Received SUBSCRIBE from streamer-sub-" in broker.log_text(),
                30,
                "the subscriber's SUBSCRIBE",
            )
            bus.publish_nowait(make_va("cam1", 7, t=0.0, v=-0.5, a=0.5))
            bus.publish_nowait(make_description("cam1", 7))
            stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0, stderr.decode(errors="replace")
    table = stdout.decode()
    assert f"{P}: online" in table
    camera = next(line for line in table.splitlines() if "cam1" in line and "online" in line)
    assert " 7 " not in camera  # the camera's row, above the tracks
    row = next(line for line in table.splitlines() if " 7 " in line)
    assert "-0.50" in row and "+0.50" in row and "tense" in row and "Looks pleased." in row


def _episode(state: str, track_id: int = 3, rule: str = "low", t: float = 5.0) -> Episode:
    stats = VAStats(-0.4, -0.45, -0.35)
    return Episode(
        id=f"cam1:{track_id}:{rule}:2600",
        camera="cam1",
        track_id=track_id,
        rule=rule,
        state=state,
        t=t,
        frame=int(t * 30),
        t_start=2.6,
        t_end=None if state == "started" else t,
        duration_s=t - 2.6,
        reason=None if state == "started" else "cleared",
        valence=stats,
        arousal=VAStats(0.1, 0.0, 0.2),
    )


def _render(view: SubscriberView) -> str:
    console = Console(record=True, width=120)
    console.print(view.render())
    return console.export_text()


def _line(text: str, *words: str) -> str:
    return next(ln for ln in text.splitlines() if all(w in ln for w in words))


def test_view_shows_cameras_open_episodes_and_mood_above_the_tracks() -> None:
    now = [100.0]
    view = SubscriberView(P, clock=lambda: now[0])
    view.handle(f"{P}/available", b"online")
    mood = Mood("cam1", 5.0, 150, 1, -0.4, 0.1, 0.0, 0.0, "tense")
    for msg in (
        make_status("cam1"),
        make_event("cam1", 3, "appeared"),
        make_va("cam1", 3, t=5.0, v=-0.4, a=0.1),
        mood,
        _episode("started"),
    ):
        assert view.handle(*_payload(msg)) is not None
    assert (
        view.handle(
            f"{P}/cam1/face_count",
            b'{"schema": "streamer.face_count/1", "camera": "cam1", "count": 1, "wall_time": 1.0}',
        )
        is not None
    )
    assert view.handle(f"{P}/cam1/rules/low/active", b"ON") is not None
    now[0] = 101.0
    text = _render(view)
    camera = _line(text, "cam1", "online")
    assert " 1 " in camera and "tense (V -0.40, A +0.10; 1 face(s))" in camera
    episode = _line(text, "low", "cam1", " 3 ")
    assert "3.4 s" in episode and "-0.40" in episode  # open 2.4 s at `started`, 1 s since
    track = _line(text, "cam1", " 3 ", "tense", "s │")
    lines = text.splitlines()
    assert lines.index(camera) < lines.index(episode) < lines.index(track)

    # Ended: gone. A rule that is ON with no `started` seen (it began before this view).
    view.handle(*_payload(_episode("ended", t=6.0)))
    view.handle(f"{P}/cam1/rules/low/active", b"OFF")  # as the analyzer says after it
    assert not view.episodes
    view.handle(f"{P}/cam1/rules/high/active", b"ON")
    text = _render(view)
    assert "3.4 s" not in text and "(before start)" in _line(text, "high", "cam1")
    view.handle(f"{P}/cam1/rules/high/active", b"OFF")
    assert "(before start)" not in _render(view)

    # A lost track takes its open episodes with it (its `ended` may have been missed).
    view.handle(*_payload(_episode("started", track_id=4)))
    assert list(view.episodes) == ["cam1:4:low:2600"]
    view.handle(*_payload(make_event("cam1", 4, "lost", t=7.0)))
    assert not view.episodes
    assert view.rejected == 0


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        (f"{P}/cam1/rules/Bad Rule/active", b"ON"),
        (f"{P}/cam1/rules/low\n/active", b"ON"),
        (f"{P}/cam1/rules/low/active", b"maybe"),
        (f"{P}/cam1/rules/low/active", b"\xff\xfe"),
        (f"{P}/cam1/episodes", b'{"schema": "streamer.episode/1"}'),
        (f"{P}/cam1/mood", b"[]"),
    ],
)
def test_bad_episode_mood_and_rule_messages_are_rejected(topic: str, payload: bytes) -> None:
    view = SubscriberView(P)
    assert view.handle(topic, payload) is None
    assert view.rejected == 1 and not view.episodes and not view.rules_on and not view.moods


@pytest.mark.mqtt
@pytest.mark.timeout(60)
async def test_a_silent_prefix_says_what_it_listens_on_and_what_exists(broker: Broker) -> None:
    import aiomqtt

    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="retainer") as client:
        await client.publish("streamer/available", b"online", qos=1, retain=True)
        await client.publish("lab/available", b"stopped", qos=1, retain=True)
        await client.publish("junk/available", b"\x1b[2Jx", qos=1, retain=True)
    proc = await asyncio.create_subprocess_exec(
        *_streamer("subscribe", "--port", str(broker.port), "--prefix", "nothing", "--json"),
        "--silence-s",
        "1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        err = b""
        async with asyncio.timeout(30):
            while b"(online)" not in err:
                line = await proc.stderr.readline()
                assert line, f"stderr ended: {err!r}"
                err += line
        text = " ".join(err.decode().split())  # one log record, wrapped by the log handler
        assert "no message on 'nothing/#' for 1 s" in text
        assert "junk (?), lab (stopped), streamer (online)" in text
        assert "\x1b" not in text
    finally:
        proc.kill()
        await proc.wait()


def test_the_view_shows_the_silence_hint() -> None:
    view = SubscriberView(P)
    view.hint = "no message on 'test/#' for 10 s; prefixes ...: streamer (online)"
    assert view.hint in _render(view)
