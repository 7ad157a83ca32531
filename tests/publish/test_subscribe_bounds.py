"""``streamer subscribe`` survives any topic and payload, in bounded memory and time.

Issue 21, points 1 and 7: a topic whose track id is a non-ASCII digit crashed the
command (and, retained, every later start); camera statuses, tracks and queued payload
bytes grew without bound; every message redrew every row.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable

import aiomqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from streamer.publish.payloads import MAX_INBOUND_BYTES, Topics, dumps, encode_message
from streamer.publish.subscriber import (
    MAX_CAMERAS,
    MAX_ROWS,
    SHOWN_CAMERAS,
    InboundQueue,
    Oversize,
    SubscriberView,
)
from streamer.testing.mqtt import Broker
from tests.helpers.mqtt import make_status, make_va

P = "test"
TOPICS = Topics(P)


def _va(camera: str, track: int) -> tuple[str, bytes]:
    out = encode_message(make_va(camera, track, t=0.0), TOPICS, wall_time=1_700_000_000.0)
    return out.topic, out.payload


# ------------------------------------------------------------------ topic ids (point 1)

NOT_ASCII_IDS = ["²", "١", "٣٤", "1²", "𝟏", "①", "+1", " 1", "0x1", "1" * 13, ""]


@pytest.mark.parametrize("track", NOT_ASCII_IDS)
def test_track_ids_in_topics_are_ascii_digits_only(
    track: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``faces/²/va`` raised ValueError out of handle(); ``faces/١/va`` was track 1."""
    view = SubscriberView(P)
    caplog.set_level(logging.WARNING, logger="streamer.publish.subscriber")
    _, payload = _va("cam1", 1)
    for body in (b"x", payload):
        assert view.handle(f"{P}/cam1/faces/{track}/va", body) is None
    assert view.rows == {} and view.rejected == 2
    assert all("rejected message" in r.getMessage() for r in caplog.records)


@settings(max_examples=300, deadline=None)
@given(level=st.text(min_size=1, max_size=14), payload=st.binary(max_size=80))
def test_any_track_level_is_parsed_or_rejected_never_raised(level: str, payload: bytes) -> None:
    view = SubscriberView(P)
    view.handle(f"{P}/cam1/faces/{level}/va", payload)
    view.handle(f"{P}/cam1/faces/{level}/description", _va("cam1", 1)[1])
    assert all(row.track_id >= 0 for row in view.rows.values())


def _publish_retained(broker: Broker, topic: str, payload: bytes) -> None:
    subprocess.run(
        ["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-t", topic, "-r", "-s"],
        input=payload,
        check=True,
        timeout=20,
    )


@pytest.mark.mqtt
@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["json", "table"])
def test_retained_hostile_topic_does_not_stop_a_later_start(broker: Broker, mode: str) -> None:
    """The issue's reproduction: ``mosquitto_pub -r -t 'P/cam/faces/²/va' -m x``."""
    _publish_retained(broker, f"{P}/cam/faces/²/va", b"x")
    _publish_retained(broker, f"{P}/cam/faces/١/va", _va("cam", 1)[1])
    _publish_retained(broker, f"{P}/available", b"online")
    cmd = [sys.executable, "-m", "streamer", "subscribe", "--host", broker.host]
    cmd += ["--port", str(broker.port), "--prefix", P, "--max-messages", "1"]
    cmd += ["--json"] if mode == "json" else []
    proc = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err
    assert err.count("rejected message") == 2, err
    assert "ASCII digits" in err
    if mode == "json":
        assert [json.loads(line)["topic"] for line in proc.stdout.decode().splitlines()] == [
            f"{P}/available"
        ]
    else:
        assert f"{P}: online" in proc.stdout.decode()


# ------------------------------------------------------- payload and queue bytes (7)


def test_oversize_payload_is_rejected_by_its_size_alone(caplog: pytest.LogCaptureFixture) -> None:
    view = SubscriberView(P)
    caplog.set_level(logging.WARNING, logger="streamer.publish.subscriber")
    topic, _ = _va("cam1", 1)
    assert view.handle(topic, Oversize(5_000_000)) is None
    assert view.rejected == 1 and view.rows == {}
    assert "payload too large (5000000 > 65536 bytes)" in caplog.records[0].getMessage()


def _message(topic: str, payload: bytes) -> aiomqtt.Message:
    return aiomqtt.Message(topic, payload, 1, False, 0, None)


def test_inbound_queue_keeps_only_the_size_of_oversize_payloads() -> None:
    """300 x 5 MB payloads held 1.57 GB in aiomqtt's count-bounded queue."""
    queue = InboundQueue(10_000)
    big = b"x" * (5 << 20)
    for _ in range(300):
        queue.put_nowait(_message(f"{P}/cam1/faces/1/va", big))
    assert queue.qsize() == 300 and queue.bytes == 0
    msg = queue.get_nowait()
    assert msg.payload == b"" and getattr(msg, "size", None) == 5 << 20


def test_inbound_queue_is_bounded_in_bytes_oldest_out() -> None:
    queue = InboundQueue(10_000, max_bytes=1 << 20, max_payload=MAX_INBOUND_BYTES)
    payload = b"y" * 60_000
    for i in range(100):
        queue.put_nowait(_message(f"{P}/cam1/faces/{i}/va", payload))
    assert queue.bytes <= 1 << 20
    assert queue.dropped == 100 - queue.qsize() > 0
    kept = [str(queue.get_nowait().topic) for _ in range(queue.qsize())]
    assert kept[-1] == f"{P}/cam1/faces/99/va"  # the newest survive
    assert queue.bytes == 0


async def test_inbound_queue_wakes_a_waiting_reader() -> None:
    queue = InboundQueue(10)
    reader = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait(_message(f"{P}/available", b"online"))
    assert (await asyncio.wait_for(reader, 5)).payload == b"online"


# ----------------------------------------------------------- cameras and tracks (7)


def test_camera_flood_is_bounded_and_the_table_still_shows_tracks() -> None:
    """20,000 distinct camera statuses doubled RSS and filled the title (2,000 here)."""
    view = SubscriberView(P)
    view.handle(*_va("real", 1))
    for i in range(2_000):
        out = encode_message(make_status(f"c{i}"), TOPICS, wall_time=1_700_000_000.0)
        view.handle(out.topic, out.payload)
    assert len(view.statuses) == MAX_CAMERAS
    assert view.forgotten_cameras == 2_000 - MAX_CAMERAS
    assert "c1999" in view.statuses and "c0" not in view.statuses
    console = Console(record=True, width=120, height=40)
    console.print(view.render(max_rows=30))
    text = console.export_text()
    # the cameras table shows SHOWN_CAMERAS rows and counts the rest (256 + "real")
    assert f"{MAX_CAMERAS + 1 - SHOWN_CAMERAS} more camera(s) not shown" in text
    assert len(text.splitlines()) < 80  # a screenful, not one line per camera
    assert "real" in text  # the track table is still there
    assert f"{2_000 - MAX_CAMERAS} cameras" in text  # the caption counts what was forgotten


def test_track_flood_is_bounded_and_a_redraw_builds_a_screenful() -> None:
    view = SubscriberView(P)
    for i in range(2_000):
        view.handle(*_va("cam1", i))
    assert len(view.rows) == MAX_ROWS and view.forgotten_rows == 2_000 - MAX_ROWS
    table = view.render(max_rows=20).renderables[-1]  # the tracks table, last
    assert table.row_count == 20
    shown = {int(str(c)) for c in table.columns[1].cells}
    assert shown == set(range(1980, 2_000))  # the most recently updated
    assert "20 of 1000 tracks shown" in str(table.caption)


TRACKS = 3000


@pytest.mark.mqtt
@pytest.mark.timeout(180)
def test_table_mode_digests_a_burst_of_tracks(make_broker: Callable[..., Broker]) -> None:
    """A 10,000-track burst pinned table mode at 100 % of a core for >= 110 s: every
    message redrew every row. 3,000 retained tracks took 149 s before, 9 s now."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    broker = make_broker("max_queued_messages 20000")  # the default 1000 would drop some
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="burst")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        infos = [client.publish(*_va("cam1", i), qos=1, retain=True) for i in range(TRACKS)]
        for info in infos:
            info.wait_for_publish(30)
    finally:
        client.loop_stop()
        client.disconnect()
    cmd = [sys.executable, "-m", "streamer", "subscribe", "--host", broker.host]
    cmd += ["--port", str(broker.port), "--prefix", P, "--max-messages", str(TRACKS)]
    proc = subprocess.run(
        cmd, capture_output=True, timeout=90, check=False, env={**os.environ, "LINES": "40"}
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    out = proc.stdout.decode()
    assert "of 1000 tracks shown" in out and f"{TRACKS - MAX_ROWS} tracks" in out
    assert len(out.splitlines()) < 60  # a screenful, not 1000 rows


def test_hostile_json_record_values_are_rejected_not_raised() -> None:
    view = SubscriberView(P)
    topic, payload = _va("cam1", 1)
    record = json.loads(payload)
    for bad in ({**record, "camera": ["x"]}, {**record, "track_id": "1"}, {"schema": 5}):
        assert view.handle(topic, dumps(bad)) is None
    assert view.rejected == 3
