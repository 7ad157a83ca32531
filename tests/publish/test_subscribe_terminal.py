"""``streamer subscribe`` in a real terminal (tmux, 120x30) over a real live run.

The run (``streamer run``: a looped real clip, an episode rule, the room mood) publishes
to a real mosquitto; the subscriber is started first, so its first frame is drawn before
any message. Read with ``tmux capture-pane``, the screen must show per camera its status,
face count and mood, the open episode (rule, track, how long) above the tracks, and one
frame only: redrawn in place, nothing stale above it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamer.testing.mqtt import Broker
from tests.helpers.wait import SLACK_S, wait_until_sync

TMUX = shutil.which("tmux")
PREFIX = "tm"
pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed (Debian: tmux)")


class Terminal:
    """A detached tmux session of its own server (its own socket), 120x30."""

    def __init__(self, command: list[str], width: int = 120, height: int = 30) -> None:
        assert TMUX is not None
        self.socket = f"streamer-test-{os.getpid()}-{id(self)}"
        env = {k: os.environ[k] for k in ("PATH", "PYTHONPATH", "HOME") if k in os.environ}
        line = " ".join(
            ["env", "-u", "COLUMNS", "-u", "LINES", "TERM=xterm-256color"]
            + [f"{k}={shlex.quote(v)}" for k, v in env.items()]
            + [shlex.quote(c) for c in command]
            + ["; sleep 600"]  # keep the pane (and what it shows) after the command ends
        )
        self._tmux("new-session", "-d", "-s", "t", "-x", str(width), "-y", str(height), line)

    def _tmux(self, *args: str) -> str:
        assert TMUX is not None
        proc = subprocess.run(
            [TMUX, "-L", self.socket, *args], capture_output=True, text=True, timeout=30
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "t")

    def close(self) -> None:
        subprocess.run([TMUX or "tmux", "-L", self.socket, "kill-server"], timeout=30, check=False)


@pytest.fixture
def terminal_of() -> Iterator[list[Terminal]]:
    made: list[Terminal] = []
    yield made
    for term in made:
        term.close()


def _config(path: Path, broker: Broker, clip: Path) -> Path:
    path.write_text(
        "cameras:\n"
        f"  - {{name: lounge, url: {clip}, realtime: true, loop: true}}\n"
        f"mqtt: {{host: 127.0.0.1, port: {broker.port}, prefix: {PREFIX}}}\n"
        "episodes:\n"
        "  rules:\n"
        "    - {name: low, when: {valence_above: -1}, for_s: 1}\n"
        "mood: {enabled: true, interval_s: 1}\n"
    )
    return path


def _open_for(screen: str) -> float | None:
    """How long the episode of rule `low` on track 1 has been open, as shown."""
    for line in screen.splitlines():
        m = re.search(r"\blow\b.*\blounge\b.*\b1\b.*?(\d+\.\d) s", line)
        if m:
            return float(m.group(1))
    return None


@pytest.mark.mqtt
def test_subscribe_redraws_in_place_with_cameras_and_episodes(
    models: None, face_loop: Path, broker: Broker, tmp_path: Path, terminal_of: list[Terminal]
) -> None:
    command = [sys.executable, "-m", "streamer", "subscribe", "--port", str(broker.port)]
    sub = Terminal([*command, "--prefix", PREFIX])
    terminal_of.append(sub)
    wait_until_sync(lambda: f"{PREFIX}: unknown" in sub.screen(), what="the first frame")
    cfg = _config(tmp_path / "live.yaml", broker, face_loop)
    run = subprocess.Popen(
        [sys.executable, "-m", "streamer", "run", "--config", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def episode_shown() -> str | None:
            assert run.poll() is None, run.communicate()[1]
            screen = sub.screen()
            return screen if _open_for(screen) is not None else None

        screen = wait_until_sync(episode_shown, SLACK_S, "the open episode", poll_s=0.2)
        lines = screen.splitlines()
        camera = next(ln for ln in lines if "lounge" in ln and "online" in ln)
        assert re.search(r"│\s+1\s+│", camera), camera  # one face
        assert re.search(r"\((V [+-]\d\.\d\d, A [+-]\d\.\d\d); 1 face\(s\)\)", camera), camera
        episode = next(i for i, ln in enumerate(lines) if _open_for(ln) is not None)
        track_row = re.compile(r"^│ lounge\s+│\s+1\s+│\s+[+-]\d\.\d\d\s+│")
        track = next(i for i, ln in enumerate(lines) if track_row.search(ln))
        assert lines.index(camera) < episode < track, screen
        # One frame: no stale first frame ("tm: unknown") or second title above it.
        assert sum(ln.strip().startswith(f"{PREFIX}: ") for ln in lines) == 1, screen
        assert f"{PREFIX}: online" in screen and "unknown" not in screen, screen
        # Redrawn in place: the episode's age moves on the same screen.
        first = _open_for(screen)
        assert first is not None
        later = wait_until_sync(
            lambda: (x := _open_for(sub.screen())) is not None and x >= first + 1.0 and x,
            SLACK_S,
            "the episode to age",
        )
        assert later > first
        final = sub.screen()
        assert sum(ln.strip().startswith(f"{PREFIX}: ") for ln in final.splitlines()) == 1
    finally:
        run.send_signal(signal.SIGTERM)
        try:
            run.communicate(timeout=SLACK_S)
        finally:
            if run.poll() is None:
                run.kill()
                run.communicate()
