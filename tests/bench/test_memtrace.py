"""``streamer.bench.memtrace``: allocation growth by site, snapshots in forked children."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from streamer.bench import memtrace
from streamer.bench.memtrace import MemTrace
from streamer.messages import Frame
from streamer.sources.decode import DecodeState, decode_worker, open_stream
from streamer.sources.file import open_video
from streamer.testing.sources import make_clip
from tests.helpers.wait import wait_until_async, wait_until_sync

GROW_SCRIPT = """\
import asyncio, json, sys
from pathlib import Path

from streamer.bench.memtrace import MemTrace

GROWN = []


def grow(n):
    GROWN.extend(bytes(1000) for _ in range(n))  # the growing site


async def main():
    trace = MemTrace(frames=4, workdir=Path(sys.argv[1]))
    trace.start()
    try:
        await trace.baseline()
        grow(2000)
        await trace.sample(1.0)
    finally:
        trace.stop()
    print(json.dumps(trace.report()))


asyncio.run(main())
"""


def test_growth_is_found_at_its_site_and_charged_to_its_owner(tmp_path: Path) -> None:
    """In a fresh interpreter: the snapshot child is forked, and this suite's worker
    threads left behind would make forks that meet a held lock (retried) more likely."""
    script = tmp_path / "grow_script.py"
    script.write_text(GROW_SCRIPT)
    line = GROW_SCRIPT.splitlines().index(
        "    GROWN.extend(bytes(1000) for _ in range(n))  # the growing site"
    )
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["snapshots_failed"] == 0
    top = report["top_growth"][0]
    # The innermost frame is the script (outside the package): the site names it.
    assert top["site"].endswith(f"grow_script.py:{line + 1}"), top
    assert top["kb"] >= 1900 and top["blocks"] >= 2000
    assert report["growth_kb_by_owner"]["analyzer"] >= 1900


async def test_a_snapshot_child_keeps_no_listening_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parent closes a listening socket and listens again on its port while a
    (slow) snapshot child runs: the child must not hold the old socket open."""

    running = tmp_path / "child-running"

    def slow_child(*args: Any) -> None:
        running.touch()  # after the child closed what it inherited
        time.sleep(2.0)

    monkeypatch.setattr(memtrace, "_child", slow_child)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    trace = MemTrace(frames=1, workdir=tmp_path)
    trace.start()
    try:
        child = asyncio.create_task(trace.baseline())

        async def child_running() -> bool:
            return running.exists()

        await wait_until_async(child_running, what="the snapshot child to run")
        listener.close()
        again = socket.create_server(("127.0.0.1", port))
        again.close()
        await child
    finally:
        trace.stop()
    assert not tracemalloc.is_tracing()


async def test_a_child_stuck_on_a_lock_held_at_the_fork_is_forked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread holds a lock at the fork; the child's copy of it stays held, since the
    thread is not in the child (tracemalloc's table lock, taken without the GIL, is one a
    real run can meet). The first child waits on it for real: asleep, no CPU. It is
    killed and the snapshot forked again; the second child does not take the lock."""
    held = threading.Lock()
    holding, release = threading.Event(), threading.Event()

    def holder() -> None:
        with held:
            holding.set()
            release.wait()

    first = tmp_path / "first-child"
    real_child = memtrace._child

    def child(*args: Any) -> None:
        if not first.exists():
            first.touch()
            held.acquire()  # never returns: its holder is not in this process
        real_child(*args)

    monkeypatch.setattr(memtrace, "_child", child)
    monkeypatch.setattr(memtrace, "STUCK_S", 0.5)
    thread = threading.Thread(target=holder)
    thread.start()
    holding.wait()
    trace = MemTrace(frames=1, workdir=tmp_path)
    trace.start()
    try:
        await trace.baseline()
        grown = [bytes(1000) for _ in range(500)]
        await trace.sample(1.0)
    finally:
        trace.stop()
        release.set()
        thread.join()
    report = trace.report()
    assert first.exists()
    assert report["snapshots_retried"] == 1, report
    assert report["snapshots_failed"] == 0, report
    assert len(report["snapshots"]) == 1 and report["growth_kb_by_owner"], report
    assert len(grown) == 500


ORPHAN_SCRIPT = """\
import asyncio, os, sys, time
from pathlib import Path

from streamer.bench import memtrace
from streamer.bench.memtrace import MemTrace
from streamer.messages import Frame
from streamer.sources.decode import DecodeState, decode_worker, open_stream
from streamer.sources.file import open_video
from streamer.testing.sources import make_clip


def slow_child(*args):
    Path(sys.argv[1], "child.pid").write_text(str(os.getpid()))
    time.sleep(600)


memtrace._child = slow_child
trace = MemTrace(frames=1, workdir=Path(sys.argv[1]))
trace.start()
asyncio.run(trace.baseline())
"""


def test_a_snapshot_child_dies_with_the_measured_process(tmp_path: Path) -> None:
    """The measured process killed mid-snapshot (a bench run past its time) leaves no
    snapshot child behind."""
    script = tmp_path / "orphan_script.py"
    script.write_text(ORPHAN_SCRIPT)
    pid_file = tmp_path / "child.pid"
    with subprocess.Popen([sys.executable, str(script), str(tmp_path)]) as proc:
        try:
            wait_until_sync(pid_file.exists, what="the snapshot child to start")
        finally:
            proc.kill()
    child = int(pid_file.read_text())

    def gone() -> bool:
        try:
            state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        return state == "Z"  # killed, waiting for init to reap it

    wait_until_sync(gone, what=f"the snapshot child {child} to die with its parent")


async def test_a_snapshot_while_a_camera_decodes_in_its_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decode thread that has converted pictures is alive at the fork, as a live
    camera's always is. Nothing of it may be freed in the child: PyAV's own conversion
    (``to_ndarray(format=...)``, since 18.1.1) keeps a swscale context per thread, which
    the fork's clean-up frees in the child and then waits for its worker threads
    forever, fork after fork. The decoders convert with a reformatter of their own."""
    clip = make_clip(tmp_path / "clip.mp4", 1.0, fps=10, size=(1280, 720))
    converted, release = threading.Event(), threading.Event()

    def deliver(frame: Frame) -> bool:
        converted.set()
        release.wait()
        return False

    def decode() -> None:
        with open_video(clip) as container:
            stream = open_stream(container)
            state = DecodeState("cam")
            decode_worker(container, stream, state=state, deliver=deliver, stop=release)

    thread = threading.Thread(target=decode)
    thread.start()
    monkeypatch.setattr(memtrace, "STUCK_S", 1.0)
    trace = MemTrace(frames=1, workdir=tmp_path)
    try:
        assert converted.wait(30), "no picture decoded"
        trace.start()
        await trace.baseline()
    finally:
        trace.stop()
        release.set()
        thread.join()
    report = trace.report()
    assert report["snapshots_failed"] == 0 and report["snapshots_retried"] == 0, report
