"""``streamer.bench.memtrace``: allocation growth by site, snapshots in forked children."""

from __future__ import annotations

import asyncio
import json
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
from tests.helpers.wait import wait_until_async

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
    """In a fresh interpreter: the snapshot child is forked, and a fork while another
    thread holds an allocator lock (this suite leaves worker threads behind) can hang
    the child until the bench kills it (``CHILD_TIMEOUT_S``)."""
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
