"""``streamer.bench.memtrace``: allocation growth by site, snapshots in forked children."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from streamer.bench import memtrace
from streamer.bench.memtrace import MemTrace
from tests.helpers.wait import wait_until_async, wait_until_sync


def _traced(tmp_path: Path, script: str, name: str = "traced_script.py") -> dict[str, Any]:
    """The report of ``script`` run in a fresh interpreter: a fork in this test process
    would copy whatever other tests left running (threads that may hold a lock or
    thread-local objects at that instant), and the retries would not be the test's."""
    path = tmp_path / name
    path.write_text(script)
    proc = subprocess.run(
        [sys.executable, str(path), str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return report


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
    """A real growth between two snapshots, found at its site (in a fresh interpreter,
    as each test that forks a snapshot child here: see :func:`_traced`)."""
    line = GROW_SCRIPT.splitlines().index(
        "    GROWN.extend(bytes(1000) for _ in range(n))  # the growing site"
    )
    report = _traced(tmp_path, GROW_SCRIPT, "grow_script.py")
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


ORPHAN_SCRIPT = """\
import asyncio, os, signal, sys
from pathlib import Path

from streamer.bench import memtrace
from streamer.bench.memtrace import MemTrace


def slow_child(*args):
    tmp = Path(sys.argv[1], "child.pid.tmp")
    tmp.write_text(str(os.getpid()))
    tmp.rename(Path(sys.argv[1], "child.pid"))
    signal.pause()  # until killed


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

    try:
        wait_until_sync(gone, what=f"the snapshot child {child} to die with its parent")
    finally:
        with contextlib.suppress(ProcessLookupError):  # failed: leave no orphan behind
            os.kill(child, signal.SIGKILL)


STUCK_SCRIPT = """\
import asyncio, json, sys, threading
from pathlib import Path

from streamer.bench import memtrace
from streamer.bench.memtrace import MemTrace

workdir = Path(sys.argv[1])
held = threading.Lock()
holding, release = threading.Event(), threading.Event()


def holder():
    with held:
        holding.set()
        release.wait()


first = workdir / "first-child"
real_child = memtrace._child


def child(*args):
    if not first.exists():
        first.touch()
        held.acquire()  # never returns: its holder is not in this process
    real_child(*args)


memtrace._child = child
memtrace.STUCK_S = 0.5


async def main():
    trace = MemTrace(frames=1, workdir=workdir)
    trace.start()
    try:
        await trace.baseline()
        grown = [bytes(1000) for _ in range(500)]
        await trace.sample(1.0)
    finally:
        trace.stop()
    print(json.dumps({**trace.report(), "grown": len(grown)}))


thread = threading.Thread(target=holder)
thread.start()
holding.wait()
try:
    asyncio.run(main())
finally:
    release.set()
    thread.join()
"""


def test_a_child_stuck_on_a_lock_held_at_the_fork_is_forked_again(tmp_path: Path) -> None:
    """A thread holds a lock at the fork; the child's copy of it stays held, since the
    thread is not in the child (tracemalloc's table lock, taken without the GIL, is one a
    real run can meet). The first child waits on it for real: asleep, no CPU. It is
    killed and the snapshot forked again; the second child does not take the lock."""
    report = _traced(tmp_path, STUCK_SCRIPT)
    assert (tmp_path / "first-child").exists()
    assert report["snapshots_retried"] == 1, report
    assert report["snapshots_failed"] == 0, report
    assert len(report["snapshots"]) == 1 and report["growth_kb_by_owner"], report


DECODING_SCRIPT = """\
import asyncio, json, sys, threading
from pathlib import Path

from streamer.bench import memtrace
from streamer.bench.memtrace import MemTrace
from streamer.sources.decode import DecodeState, decode_worker, open_stream
from streamer.sources.file import open_video
from streamer.testing.sources import make_clip

workdir = Path(sys.argv[1])
clip = make_clip(workdir / "clip.mp4", 1.0, fps=10, size=(1280, 720))
converted, release = threading.Event(), threading.Event()


def deliver(frame):
    converted.set()
    release.wait()
    return False


def decode():
    with open_video(clip) as container:
        stream = open_stream(container)
        decode_worker(
            container, stream, state=DecodeState("cam"), deliver=deliver, stop=release
        )


async def main():
    trace = MemTrace(frames=1, workdir=workdir)
    trace.start()
    try:
        await trace.baseline()
    finally:
        trace.stop()
    print(json.dumps(trace.report()))


memtrace.STUCK_S = 1.0
thread = threading.Thread(target=decode)
thread.start()
try:
    if not converted.wait(60):
        sys.exit("no picture decoded")
    asyncio.run(main())
finally:
    release.set()
    thread.join()
"""


def test_a_snapshot_while_a_camera_decodes_in_its_thread(tmp_path: Path) -> None:
    """A decode thread that has converted pictures is alive at the fork, as a live
    camera's always is. Nothing of it may be freed in the child: PyAV's own conversion
    (``to_ndarray(format=...)``, since 18.1.1) keeps a swscale context per thread, which
    the fork's clean-up frees in the child and then waits for its worker threads
    forever, fork after fork. The decoders convert with a reformatter of their own."""
    report = _traced(tmp_path, DECODING_SCRIPT)
    assert report["snapshots_failed"] == 0 and report["snapshots_retried"] == 0, report
