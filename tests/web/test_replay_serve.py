"""``streamer replay VIDEO --serve``: the dashboard's state follows a replay while it runs
(at an analysis rate: the frames off its grid are counted as skipped by rate)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from streamer.testing.net import free_port
from tests.helpers.wait import SLACK_S, wait_until_sync


def test_replay_serve_shows_the_replay(models: None, face_loop: Path, tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "web.yaml"
    cfg.write_text(f"web:\n  port: {port}\n")
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "streamer", "replay", str(face_loop), "--realtime", "--serve"]
    cmd += ["--analysis-fps", "10"]
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
        assert camera["frames_analysed"] > 0 and camera["skipped_by_rate"] > 0
        assert state["tracks"][0]["camera"] == "face_loop"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            metrics = {
                line.split("{")[0]: float(line.rsplit(" ", 1)[1])
                for line in r.read().decode().splitlines()
                if line.startswith("streamer_frames_") and 'camera="face_loop"' in line
            }
        decoded = metrics["streamer_frames_decoded_total"]
        by_rate = metrics["streamer_frames_skipped_by_rate_total"]
        assert by_rate > 0 and decoded >= metrics["streamer_frames_analysed_total"] + by_rate
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            assert r.status == 200
    finally:
        proc.terminate()
        proc.communicate(timeout=SLACK_S)
