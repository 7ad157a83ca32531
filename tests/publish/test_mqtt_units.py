"""Config, payloads, schemas, buffer policy, backoff and error texts (no broker)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import aiomqtt
import jsonschema
import numpy as np
import pytest
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from streamer.config import load_config, parse_config
from streamer.errors import ConfigError
from streamer.messages import Frame, Message
from streamer.publish.buffer import OutboundBuffer
from streamer.publish.config import MqttConfig
from streamer.publish.connect import FailureKind, backoff_delay, explain_failure
from streamer.publish.payloads import (
    SCHEMA_FILES,
    Outbound,
    Topics,
    encode_message,
    load_schema,
    topic_level,
    validate_record,
)
from tests.helpers.mqtt import make_description, make_event, make_status, make_va

REPO = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("yaml_text", "needle"),
    [
        ("mqtt:\n  username: bob\n", "needs password_env"),
        ("mqtt:\n  username: bob\n  password: hunter2\n", "mqtt.password: unknown key"),
        ("mqtt:\n  password_env: X\n", "need a username"),
        ("mqtt:\n  username: b\n  password_env: X\n  password_file: /f\n", "not both"),
        ("mqtt:\n  prefix: 'a/#'\n", "mqtt.prefix"),
        ("mqtt:\n  prefix: /lead\n", "mqtt.prefix"),
        ("mqtt:\n  port: 0\n", "mqtt.port"),
        ("mqtt:\n  va_rate_hz: 0\n", "mqtt.va_rate_hz"),
        ("mqtt:\n  tls:\n    cert_file: c.pem\n", "given together"),
        ("mqtt:\n  reconnect_min_s: 10\n  reconnect_max_s: 1\n", "reconnect_min_s"),
        ("mqtt:\n  password_env: 'not a name'\n  username: b\n", "mqtt.password_env"),
    ],
)
def test_bad_mqtt_config_names_key_and_line(yaml_text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(yaml_text, "x.yaml")
    text = str(exc.value)
    assert needle in text
    assert text.startswith("x.yaml:")
    assert "hunter2" not in text


def test_example_config_is_valid() -> None:
    cfg = load_config(REPO / "configs" / "mqtt.yaml")
    assert cfg.mqtt is not None and cfg.mqtt.username is None
    assert cfg.mqtt.homeassistant.enabled is False


def test_resolve_password_from_env_and_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MQTT_PW_TEST", "from-env")
    assert MqttConfig(username="u", password_env="MQTT_PW_TEST").resolve_password() == "from-env"
    f = tmp_path / "pw"
    f.write_text("from-file\nignored\n")
    assert MqttConfig(username="u", password_file=f).resolve_password() == "from-file"
    assert MqttConfig().resolve_password() is None
    with pytest.raises(ConfigError, match="cannot read") as exc:
        MqttConfig(username="u", password_file=tmp_path / "missing").resolve_password()
    assert "from-file" not in str(exc.value)


# ----------------------------------------------------------------------- payloads


@pytest.mark.parametrize(
    ("name", "safe"),
    [("cam1", "cam1"), ("front door", "front_door"), ("a/b+#", "a_b__"), ("", "_")],
)
def test_topic_level_is_safe(name: str, safe: str) -> None:
    assert topic_level(name) == safe


def test_topics_tree() -> None:
    t = Topics("home/affect")
    assert t.available == "home/affect/available"
    assert t.status("door") == "home/affect/door/status"
    assert t.events("door") == "home/affect/door/events"
    assert t.va("door", 3) == "home/affect/door/faces/3/va"
    assert t.description("door", 3) == "home/affect/door/faces/3/description"
    assert t.face_count("door") == "home/affect/door/face_count"


@pytest.mark.parametrize(
    ("msg", "kind", "qos", "retain"),
    [
        (make_va(), "va", 0, False),
        (make_event(), "event", 1, False),
        (make_event(kind="lost", t=3.0), "event", 1, False),
        (make_status(), "status", 1, True),
        (make_description(), "description", 1, False),
        (make_description(source="llm"), "description", 1, False),
    ],
)
def test_encode_every_type_validates(msg: Message, kind: str, qos: int, retain: bool) -> None:
    out = encode_message(msg, Topics("p"), wall_time=1234.5)
    assert (out.kind, out.qos, out.retain) == (kind, qos, retain)
    record = json.loads(out.payload)
    validate_record(record)
    assert record["wall_time"] == round(msg.wall_time or 1234.5, 3)
    # Privacy: numbers and text only, and small.
    assert len(out.payload) < 2048
    assert set(record) <= set(load_schema(record["schema"])["properties"])


def test_wall_time_kept_when_present() -> None:
    out = encode_message(make_va(wall_time=99.0), Topics("p"), wall_time=1234.5)
    assert json.loads(out.payload)["wall_time"] == 99.0


def test_non_finite_and_frames_are_not_encoded() -> None:
    with pytest.raises(ValueError):
        encode_message(make_va(v=float("inf")), Topics("p"))
    frame = Frame("cam1", 0, 0.0, np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(TypeError):
        encode_message(frame, Topics("p"))  # type: ignore[arg-type]


@pytest.mark.parametrize("schema_id", sorted(SCHEMA_FILES))
def test_schemas_are_valid_and_closed(schema_id: str) -> None:
    schema = load_schema(schema_id)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["additionalProperties"] is False  # no room for image bytes
    assert schema["properties"]["schema"] == {"const": schema_id}


# ------------------------------------------------------------------------- buffer


def _out(kind: str, topic: str, n: int = 0, retain: bool = False) -> Outbound:
    return Outbound(kind, topic, str(n).encode(), 0 if kind == "va" else 1, retain)


def pop(buf: OutboundBuffer) -> Outbound:
    item = buf.pop()
    assert item is not None, "the buffer is empty"
    return item


def test_buffer_policy() -> None:
    now = [0.0]
    buf = OutboundBuffer(max_events=3, max_tracks=2, stale_s=1.0, clock=lambda: now[0])
    for i in range(5):
        buf.put_event(_out("event", "e", i))
    assert buf.dropped["event_overflow"] == 2
    buf.put_state(_out("status", "s/cam1", 1, True))
    buf.put_state(_out("status", "s/cam1", 2, True))  # newest state wins
    buf.put_va(("c", 1), _out("va", "v1", 1))
    buf.put_va(("c", 1), _out("va", "v1", 2))  # newest sample of a track wins
    assert buf.superseded == 1
    buf.put_va(("c", 2), _out("va", "v2", 1))
    buf.put_va(("c", 3), _out("va", "v3", 1))  # third track: oldest track dropped
    assert buf.dropped["va_overflow"] == 1
    assert len(buf) == 1 + 3 + 2
    order = []
    while (item := buf.pop()) is not None:
        order.append((item.topic, item.payload.decode()))
    assert order == [
        ("s/cam1", "2"),
        ("e", "2"),
        ("e", "3"),
        ("e", "4"),
        ("v2", "1"),
        ("v3", "1"),
    ]


def test_buffer_drops_stale_va_and_requeues_events() -> None:
    now = [0.0]
    buf = OutboundBuffer(max_events=3, max_tracks=8, stale_s=1.0, clock=lambda: now[0])
    buf.put_va(("c", 1), _out("va", "v1"))
    now[0] = 0.5
    buf.put_va(("c", 2), _out("va", "v2"))
    now[0] = 1.2
    assert pop(buf).topic == "v2"  # v1 waited 1.2 s > 1 s: dropped
    assert buf.dropped["va_stale"] == 1
    buf.put_event(_out("event", "later"))
    buf.requeue(_out("event", "unconfirmed"))
    assert pop(buf).topic == "unconfirmed"


@pytest.mark.parametrize("kw", [{"max_events": 0}, {"max_tracks": 0}, {"stale_s": 0}])
def test_buffer_rejects_bad_limits(kw: dict[str, Any]) -> None:
    args: dict[str, Any] = {"max_events": 1, "max_tracks": 1, "stale_s": 1.0, **kw}
    with pytest.raises(ValueError, match="expected positive"):
        OutboundBuffer(**args)


# ------------------------------------------------------------- backoff and errors


def test_backoff_is_jittered_capped_exponential() -> None:
    rng = random.Random(7)
    delays = [[backoff_delay(n, 0.5, 30.0, rng) for _ in range(200)] for n in range(12)]
    for n, ds in enumerate(delays):
        cap = min(30.0, 0.5 * 2**n)
        assert all(cap / 2 <= d <= cap for d in ds)
        assert len(set(ds)) > 100  # jittered, so reconnecting clients spread out
    assert max(delays[-1]) <= 30.0


def _wrapped(exc: OSError) -> aiomqtt.MqttError:
    # aiomqtt raises MqttError(str(exc)) "from None"; the original stays the context.
    try:
        try:
            raise exc
        except OSError as e:
            raise aiomqtt.MqttError(str(e)) from None
    except aiomqtt.MqttError as err:
        return err


def test_explain_failure_kinds_and_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PW", "topsecret")
    cfg = MqttConfig(host="broker.lan", port=8883, username="ann", password_env="PW")
    for rc in (ReasonCode(PacketTypes.CONNACK, identifier=134), 5):
        kind, text = explain_failure(MqttConnectError(rc), cfg)
        assert kind is FailureKind.AUTH
        assert "ann" in text and "environment variable PW" in text and "topsecret" not in text
    kind, text = explain_failure(
        MqttConnectError(ReasonCode(PacketTypes.CONNACK, identifier=136)), cfg
    )
    assert kind is FailureKind.NETWORK and "Server unavailable" in text
    kind, text = explain_failure(_wrapped(ConnectionRefusedError(111, "refused")), cfg)
    assert kind is FailureKind.NETWORK and "broker.lan:8883 refused the TCP" in text
    import ssl

    kind, text = explain_failure(_wrapped(ssl.SSLError(1, "[SSL] wrong version")), cfg)
    assert kind is FailureKind.TLS and "not falling back to plaintext" in text
