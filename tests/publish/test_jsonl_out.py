"""``--out`` safety: special files are written in place, never replaced; concurrent runs
never mix; a killed run's temporary is cleaned; output errors end with one line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from streamer.bus import EventBus
from streamer.errors import PublishError
from streamer.messages import TrackEvent, TrackEventKind
from streamer.publish.jsonl import JsonlWriter, clean_stale_temporaries
from tests.helpers.wait import SLACK_S, wait_until_sync

STREAMER = [sys.executable, "-m", "streamer"]


def _event(i: int) -> TrackEvent:
    return TrackEvent(camera="c", track_id=i, kind=TrackEventKind.APPEARED, frame=i, t=float(i))


async def _write_all(writer: JsonlWriter, n: int) -> None:
    bus = EventBus()
    sub = bus.subscribe("jsonl", maxsize=16, lossless=True)
    task = asyncio.create_task(writer.consume(sub))
    try:
        for i in range(n):
            await bus.publish(_event(i))
        bus.close()
        await task
    finally:
        if not task.done():
            task.cancel()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temporary_is_unique_hidden_and_renamed(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    writer = JsonlWriter(out)
    tmp = writer._tmp
    assert tmp is not None and tmp.parent == tmp_path
    assert tmp.name.startswith(f".out.jsonl.{os.getpid()}.") and tmp.name.endswith(".tmp")
    asyncio.run(_write_all(writer, 3))
    assert not out.exists()
    writer.commit()
    assert len(out.read_text().splitlines()) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]
    assert stat.S_IMODE(out.stat().st_mode) & 0o044 == 0o044 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_stale_temporaries_of_dead_runs_are_removed(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    stale = tmp_path / f".out.jsonl.{_dead_pid()}.0badcafe.tmp"
    alive = tmp_path / f".out.jsonl.{os.getppid()}.0badcafe.tmp"  # a live process's
    other = tmp_path / f".other.jsonl.{_dead_pid()}.0badcafe.tmp"  # another target's
    for p in (stale, alive, other):
        p.write_text("partial")
    writer = JsonlWriter(out)
    assert not stale.exists()
    assert alive.exists() and other.exists()
    writer.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, other.name])
    assert clean_stale_temporaries(tmp_path / "other.jsonl") == 1


def test_killed_replay_leaves_a_temporary_the_next_run_removes(
    tmp_path: Path, store_path: Callable[[str], Path]
) -> None:
    video = store_path("single_face.mp4")
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen(
        [*STREAMER, "replay", str(video), "--out", str(out), "--no-progress", "--realtime"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def temporary_made() -> bool:
        if list(tmp_path.glob(".out.jsonl.*.tmp")):
            return True
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        return False

    wait_until_sync(temporary_made, 2 * SLACK_S, "the replay to create its temporary", poll_s=0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert len(list(tmp_path.glob(".out.jsonl.*.tmp"))) == 1
    assert not out.exists()
    JsonlWriter(out).abort()  # the next run that writes this target
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["fifo", "char_device", "symlink"])
def test_special_target_is_written_in_place_never_replaced(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "target"
    received: list[bytes] = []
    reader: threading.Thread | None = None
    if kind == "fifo":
        os.mkfifo(target)

        def read() -> None:
            with target.open("rb") as fh:
                received.append(fh.read())

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
    elif kind == "char_device":
        if os.geteuid() != 0:
            pytest.skip("creating a device node needs root")
        os.mknod(target, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # a null device
    else:
        real = tmp_path / "real.jsonl"
        real.write_text("old\n")
        target.symlink_to(real)
    before = os.lstat(target)
    writer = JsonlWriter(target)
    assert writer._tmp is None
    asyncio.run(_write_all(writer, 5))
    writer.commit()
    after = os.lstat(target)
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    if reader is not None:
        reader.join(timeout=30)
        assert len(received[0].splitlines()) == 5
    if kind == "symlink":
        assert len((tmp_path / "real.jsonl").read_text().splitlines()) == 5


def test_full_device_is_one_error_and_the_run_stops(tmp_path: Path) -> None:
    full = Path("/dev/full")
    if not full.exists():
        pytest.skip("/dev/full not present")
    writer = JsonlWriter(full)
    with pytest.raises(PublishError, match=r"^/dev/full: cannot write output: No space left"):
        asyncio.run(_write_all(writer, 5000))
    assert writer.failed
    writer.commit()  # nothing to commit; must not raise again or touch the node
    assert stat.S_ISCHR(os.lstat(full).st_mode)


def _replay(video: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*STREAMER, "replay", str(video), "--no-progress", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_replays_to_one_out_give_one_whole_run(
    tmp_path: Path, store_path: Callable[[str], Path]
) -> None:
    video = store_path("single_face.mp4")
    out = tmp_path / "out.jsonl"
    runs = [_replay(video, "--out", str(out), "--camera", cam) for cam in ("a", "b")]
    reference = _replay(video, "--camera", "a")
    ref_out, ref_err = reference.communicate(timeout=300)
    assert reference.returncode == 0, ref_err[-2000:]
    for proc in runs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        assert "Traceback" not in err
    text = out.read_text()
    cameras = {json.loads(line)["camera"] for line in text.splitlines()}
    assert len(cameras) == 1, "records of both runs in one file"
    winner = cameras.pop()
    assert text == ref_out.replace('"camera":"a"', f'"camera":"{winner}"')
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_replay_to_fifo_and_dev_null_keeps_the_node(
    tmp_path: Path, store_path: Callable[[str], Path]
) -> None:
    video = store_path("single_face.mp4")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[str] = []

    def read() -> None:
        with fifo.open() as fh:
            got.append(fh.read())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    proc = _replay(video, "--out", str(fifo))
    _, err = proc.communicate(timeout=300)
    reader.join(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert got and all(json.loads(line) for line in got[0].splitlines())
    assert list(tmp_path.iterdir()) == [fifo]
    devnull = tmp_path / "null"
    if os.geteuid() == 0:
        os.mknod(devnull, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        proc = _replay(video, "--out", str(devnull))
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        assert stat.S_ISCHR(os.lstat(devnull).st_mode)
