"""``streamer run`` ends quietly and in time against dead peers.

Issue 21, point 10: with the broker port speaking garbage or staying silent, ``run``
printed exit-time tracebacks ("Exception ignored ... Event loop is closed", "Task was
destroyed but it is pending!"); with 50 cameras on a silent server SIGTERM took 5.3 s and
left "threads still running at exit". The servers here are real loopback sockets.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from streamer.testing.sources import SilentServer
from tests.helpers.wait import SLACK_S

EXIT_NOISE = re.compile(
    r"Traceback|Exception ignored|Task was destroyed|Event loop is closed|never retrieved"
)

# Connects to a silent and a garbage "broker" three ways: a connect that times out, one
# cancelled mid-way (a stop), one answered with garbage; then the loop closes. The
# clients live on past it, as a publisher's do until the process ends.
ABANDONED_CONNECTS = """
import asyncio, sys
import aiomqtt
from streamer.publish.connect import Client, connection
from streamer.runtime.loop import run_in_fresh_loop

KEPT = []  # alive past the loop, as a publisher's clients are until the process ends

async def attempt(port, timeout, cancel_after=None):
    client = Client("127.0.0.1", port, timeout=timeout)
    KEPT.append(client)
    async def enter():
        async with connection(client):
            await asyncio.sleep(10)
    task = asyncio.ensure_future(enter())
    if cancel_after is not None:
        await asyncio.sleep(cancel_after)
        task.cancel()
    try:
        await task
    except (aiomqtt.MqttError, asyncio.CancelledError) as err:
        print(type(err).__name__)

async def main(silent, garbage):
    await attempt(silent, 0.3)
    await attempt(silent, 5.0, cancel_after=0.3)
    await attempt(garbage, 2.0)

run_in_fresh_loop(main(int(sys.argv[1]), int(sys.argv[2])))  # the loop `run` has
print("loop closed", flush=True)
KEPT.clear()  # collected now, after the loop closed
"""


def test_abandoned_mqtt_connects_leave_nothing_for_the_exit() -> None:
    with SilentServer() as silent, SilentServer(garbage=True) as garbage:
        proc = subprocess.run(
            [sys.executable, "-c", ABANDONED_CONNECTS, str(silent.port), str(garbage.port)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["MqttError", "CancelledError", "MqttError", "loop", "closed"]
    assert not EXIT_NOISE.search(proc.stderr), proc.stderr


LEFTOVER_TASK = """
import asyncio
from streamer.runtime.loop import run_in_fresh_loop

async def main():
    asyncio.get_running_loop().create_task(asyncio.sleep(3600), name="housekeeping")
    return "done"

print(run_in_fresh_loop(main()))
"""


def test_the_run_loop_ends_tasks_left_pending() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", LEFTOVER_TASK], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stdout == "done\n"
    assert not EXIT_NOISE.search(proc.stderr), proc.stderr


@pytest.mark.parametrize("garbage", [False, True], ids=["silent", "garbage"])
def test_run_against_a_dead_broker_prints_only_the_summary(
    models: None, store_path: Callable[[str], Path], tmp_path: Path, garbage: bool
) -> None:
    clip = store_path("single_face.mp4")
    with SilentServer(garbage=garbage) as broker:
        cfg = tmp_path / "run.yaml"
        cfg.write_text(
            f"cameras:\n  - {{name: filecam, url: '{clip}', loop: true}}\n"
            f"mqtt: {{host: 127.0.0.1, port: {broker.port}, connect_timeout_s: 0.5,"
            " reconnect_min_s: 0.1, reconnect_max_s: 0.2}\n"
        )
        proc = subprocess.run(
            [sys.executable, "-m", "streamer", "run", "--config", str(cfg), "--duration-s", "3"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**os.environ, "COLUMNS": "300"},
        )
        attempts = broker.accepted
    assert proc.returncode == 0, proc.stderr
    assert attempts >= 2  # connects failed and were retried during the run
    assert not EXIT_NOISE.search(proc.stderr), proc.stderr
    tail = proc.stderr[proc.stderr.index("stopped: stopped") :]
    assert "ERROR" not in tail and "threads" not in tail, tail


def test_sigterm_with_fifty_cameras_on_a_silent_server(models: None, tmp_path: Path) -> None:
    """Every camera is blocked in FFmpeg's open when SIGTERM comes."""
    with SilentServer() as silent:
        cfg = tmp_path / "fifty.yaml"
        cams = [
            f"  - {{name: c{i}, url: 'rtsp://127.0.0.1:{silent.port}/cam{i}', open_timeout_s: 10}}"
            for i in range(50)
        ]
        cfg.write_text("cameras:\n" + "\n".join(cams) + "\n")
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamer", "run", "--config", str(cfg)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "COLUMNS": "300"},
        )
        try:
            deadline = time.monotonic() + 60
            while silent.accepted < 50:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, f"{silent.accepted} cameras connected"
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=SLACK_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, stderr
    stop_s = float(stderr.split("stopped in ")[1].split(" s")[0])
    assert stop_s < 5.0
    after = stderr[stderr.index("SIGTERM") :]
    assert "WARNING" not in after and "ERROR" not in after, after
    assert "threads still running" not in stderr and not EXIT_NOISE.search(stderr)
    assert "50 camera(s) were still in an FFmpeg call at the stop (open: 50)" in stderr
