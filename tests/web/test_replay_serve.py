"""``streamer replay VIDEO --serve``: the dashboard's state follows a replay while it runs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from streamer.testing.net import free_port
from tests.helpers.cli import read_jsonl, run_streamer
from tests.helpers.wait import SLACK_S, wait_until_sync


def test_replay_serve_shows_the_replay(models: None, face_loop: Path, tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "web.yaml"
    cfg.write_text(f"web:\n  port: {port}\n")
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "streamer", "replay", str(face_loop), "--realtime", "--serve"]
    proc = subprocess.Popen(
        [*cmd, "--config", str(cfg), "--out", str(out), "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        def state_with_a_track() -> dict[str, Any] | None:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=5) as r:
                    state: dict[str, Any] = json.load(r)
            except (urllib.error.URLError, OSError):
                return None
            return state if state.get("tracks") else None

        state = wait_until_sync(state_with_a_track, what="a track on the dashboard", poll_s=0.2)
        camera = state["cameras"][0]
        assert camera["name"] == "face_loop" and camera["state"] == "online"
        assert camera["frames_analysed"] > 0
        assert state["tracks"][0]["camera"] == "face_loop"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            assert r.status == 200
    finally:
        proc.terminate()
        proc.communicate(timeout=SLACK_S)


def test_serve_linger_keeps_serving_until_ctrl_c(
    models: None, face_video: Path, tmp_path: Path
) -> None:
    """A short clip: the dashboard stays after the replay (its camera `stopped`, every
    frame counted), and Ctrl-C then ends the run normally, its output written."""
    port = free_port()
    cfg = tmp_path / "web.yaml"
    cfg.write_text(f"web:\n  port: {port}\n")
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "streamer", "replay", str(face_video), "--serve-linger", "inf"]
    proc = subprocess.Popen(
        [*cmd, "--config", str(cfg), "--out", str(out), "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def finished_state() -> dict[str, Any] | None:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=5) as r:
                    state: dict[str, Any] = json.load(r)
            except (urllib.error.URLError, OSError):
                return None
            cams = state["cameras"]
            return state if cams and cams[0]["state"] == "stopped" else None

        state = wait_until_sync(finished_state, what="the replay to finish", poll_s=0.2)
        (camera,) = state["cameras"]
        assert camera["detail"] == "replay finished" and camera["faces"] == 0
        assert camera["frames_analysed"] == 72  # every frame of single_face.mp4
        time.sleep(1.0)
        assert proc.poll() is None  # still serving
        assert not out.exists()  # the outputs are written when it stops
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=SLACK_S)
        assert proc.returncode == 0, err
        records = read_jsonl(out)
        assert sum(r["schema"] == "streamer.va/1" for r in records) > 60
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_serve_linger_takes_seconds_or_inf() -> None:
    import argparse

    from streamer.cli.replay import _seconds

    assert _seconds("2.5") == 2.5 and _seconds("0") == 0.0 and _seconds("inf") == float("inf")
    for bad in ("-1", "nan", "soon", "-inf"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected seconds"):
            _seconds(bad)
    proc = run_streamer("replay", "x.mp4", "--serve-linger", "soon")
    assert proc.returncode == 2
    assert "--serve-linger: expected seconds or 'inf', got 'soon'" in proc.stderr
