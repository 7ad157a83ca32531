"""redact(): no credential ever reaches a log line."""

from __future__ import annotations

import pytest

from streamer.sources.redact import redact


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rtsp://admin:hunter2@10.0.0.7:554/s1", "rtsp://***@10.0.0.7:554/s1"),
        ("rtsp://admin@10.0.0.7/s1", "rtsp://***@10.0.0.7/s1"),
        ("rtsps://u:p%40ss@cam.local/x", "rtsps://***@cam.local/x"),
        ("rtsp://user:p@ss@host:554/x", "rtsp://***@host:554/x"),  # raw '@' in password
        ("http://a:b@h/mjpg?token=abc&fps=5", "http://***@h/mjpg?token=***&fps=5"),
        ("https://h/live.m3u8?password=pw", "https://h/live.m3u8?password=***"),
        ("rtsp://10.0.0.7:554/s1", "rtsp://10.0.0.7:554/s1"),
        ("/dev/video0", "/dev/video0"),
        ("clip.mp4", "clip.mp4"),
        ("", ""),
        (
            "[Errno 111] Connection refused: 'rtsp://u:pw@127.0.0.1:8555/cam'",
            "[Errno 111] Connection refused: 'rtsp://***@127.0.0.1:8555/cam'",
        ),
        (
            "two: rtsp://a:1@x/a and http://b:2@y/b",
            "two: rtsp://***@x/a and http://***@y/b",
        ),
        ("mail me at a@b.c", "mail me at a@b.c"),  # not a URL: left alone
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_redact_accepts_exceptions() -> None:
    err = OSError(5, "Input/output error", "rtsp://u:secret@host/x")
    assert "secret" not in redact(err)
    assert "rtsp://***@host/x" in redact(err)
