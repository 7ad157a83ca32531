"""Property tests: arbitrary bytes on the inbound MQTT parsers never raise anything but
the one documented rejection (:class:`InboundError`)."""

from __future__ import annotations

import contextlib
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.errors import InboundError
from streamer.publish.homeassistant import parse_ha_status
from streamer.publish.payloads import decode_json, validate_record
from streamer.publish.subscriber import SubscriberView


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400) | st.text(max_size=100).map(str.encode))
def test_ha_status_is_online_offline_or_rejected(payload: bytes) -> None:
    try:
        status = parse_ha_status(payload)
    except InboundError:
        return
    assert status in ("online", "offline")
    assert payload.decode().strip() == status


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([b"online", b"offline"]), st.sampled_from([b"", b" ", b"\n", b"\t"]))
def test_ha_status_accepts_surrounding_whitespace(word: bytes, pad: bytes) -> None:
    assert parse_ha_status(pad + word + pad) == word.decode()


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_decode_json_returns_json_or_rejects(payload: bytes) -> None:
    try:
        value = decode_json(payload)
    except InboundError:
        return
    json.dumps(value, allow_nan=False)  # what was accepted is plain, finite JSON


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=1, max_value=100_000))
def test_deeply_nested_json_is_rejected_not_a_crash(depth: int) -> None:
    payload = b"[" * depth + b"]" * depth
    with contextlib.suppress(InboundError):
        decode_json(payload)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.text(max_size=12),
        st.none() | st.booleans() | st.integers() | st.text(max_size=12) | st.floats(),
        max_size=12,
    )
)
def test_validate_record_raises_only_value_error(record: dict[str, object]) -> None:
    with contextlib.suppress(ValueError):
        validate_record(record)


@settings(max_examples=300, deadline=None)
@given(
    levels=st.lists(
        st.sampled_from(["cam1", "faces", "1", "va", "description", "status", "", "+", "#"])
        | st.text(max_size=6),
        max_size=5,
    ),
    payload=st.binary(max_size=200),
)
def test_subscriber_parse_never_raises_unexpectedly(levels: list[str], payload: bytes) -> None:
    view = SubscriberView("p", camera="cam1")
    with contextlib.suppress(InboundError):
        view._parse("/".join(["p", *levels]), payload)
