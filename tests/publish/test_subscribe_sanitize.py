"""``streamer subscribe`` never passes terminal escapes or bidi overrides to the screen."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.publish.payloads import Topics, encode_message
from streamer.publish.sanitize import safe_text, safe_value
from streamer.publish.subscriber import SubscriberView
from streamer.testing.mqtt import Broker
from tests.helpers.mqtt import make_description

P = "test"
HOSTILE = {
    1: "\x1b]0;pwned\x07retitled",  # OSC: set the terminal title
    2: "\x1b[31mred\x1b[0m",  # colour
    3: "\x1b[5mblink\x1b[25m",  # blink
    4: "\u202etxet desrever",  # right-to-left override
}
ESCAPED = {
    1: "\\x1b]0;pwned\\x07retitled",
    2: "\\x1b[31mred\\x1b[0m",
    3: "\\x1b[5mblink\\x1b[25m",
    4: "\\u202etxet desrever",
}


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain text, ünïcode, 表情", "plain text, ünïcode, 表情"),
        ("a\nb\tc\rd", "a\\x0ab\\x09c\\x0dd"),
        ("\x9b31m", "\\x9b31m"),  # C1 CSI
        ("\u2066isolate\u2069", "\\u2066isolate\\u2069"),
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("\U000e0041tag", "\\U000e0041tag"),
        ("\u2028line", "\\u2028line"),
    ],
)
def test_safe_text_escapes_what_a_terminal_would_act_on(raw: str, shown: str) -> None:
    assert safe_text(raw) == shown


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_safe_text_output_is_always_printable(text: str) -> None:
    out = safe_text(text)
    # Printable, or a space character (U+00A0 and friends are harmless)
    assert all(ch.isprintable() or unicodedata.category(ch) == "Zs" for ch in out)
    if text.isprintable():
        assert out == text


def _publish_retained(broker: Broker, topic: str, payload: bytes) -> None:
    subprocess.run(
        ["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-t", topic, "-r", "-s"],
        input=payload,
        check=True,
        timeout=20,
    )


def _subscribe(broker: Broker, *extra: str) -> subprocess.CompletedProcess[bytes]:
    cmd = [sys.executable, "-m", "streamer", "subscribe", "--host", broker.host]
    cmd += ["--port", str(broker.port), "--prefix", P, "--camera", "cam1"]
    cmd += ["--max-messages", str(len(HOSTILE)), *extra]
    return subprocess.run(
        cmd, capture_output=True, timeout=120, check=False, env={**os.environ, "COLUMNS": "250"}
    )


@pytest.mark.mqtt
@pytest.mark.parametrize("mode", ["json", "table"])
def test_subscribe_escapes_hostile_descriptions(broker: Broker, mode: str) -> None:
    for track, text in HOSTILE.items():
        msg = dataclasses.replace(make_description("cam1", track), text=text)
        out = encode_message(msg, Topics(P), wall_time=1_700_000_000.0)
        _publish_retained(broker, out.topic, out.payload)
    proc = _subscribe(broker, *(["--json"] if mode == "json" else []))
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    for stream in (proc.stdout, proc.stderr):
        assert b"\x1b" not in stream and b"\x07" not in stream
        assert "\u202e".encode() not in stream
    shown = proc.stdout.decode()
    if mode == "json":
        texts = {
            rec["payload"]["track_id"]: rec["payload"]["text"]
            for rec in map(json.loads, shown.splitlines())
        }
        assert texts == ESCAPED
    else:
        for escaped in ESCAPED.values():
            assert escaped in shown, shown


def test_view_sanitises_topic_and_every_string_of_the_record() -> None:
    view = SubscriberView(P)
    msg = dataclasses.replace(make_description("cam1", 1), text="\x1b[2J", complex=("\u202ex",))
    out = encode_message(msg, Topics(P), wall_time=1_700_000_000.0)
    inbound = view.handle(out.topic, out.payload)
    assert inbound is not None
    assert inbound.record["text"] == "\\x1b[2J"
    assert inbound.record["complex"] == ["\\u202ex"]
    assert view.rows[("cam1", 1)].description == "\\x1b[2J"
    assert safe_value({"\x1bk": [1, None, "\x07"]}) == {"\\x1bk": [1, None, "\\x07"]}


@settings(max_examples=400, deadline=None)
@given(topic=st.text(max_size=60), payload=st.binary(max_size=300))
def test_view_handle_never_raises_on_arbitrary_input(topic: str, payload: bytes) -> None:
    view = SubscriberView(P)
    view.handle(topic, payload)
    view.handle(f"{P}/cam1/faces/1/description", payload)
    view.handle(f"{P}/available", payload)
    view.render()


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(
    kind=st.sampled_from(["status", "face_count", "events", "faces/1/va", "faces/1/description"]),
    record=st.dictionaries(
        st.sampled_from(["schema", "camera", "track_id", "text", "valence", "state", "count"])
        | st.text(max_size=8),
        _json_values,
        max_size=8,
    ),
)
def test_view_handle_never_raises_on_json_shaped_input(
    kind: str, record: dict[str, object]
) -> None:
    view = SubscriberView(P)
    view.handle(f"{P}/cam1/{kind}", json.dumps(record).encode())
    view.render()
