"""Growth of Python allocations over a long run, by allocation site (``tracemalloc``).

Used by ``streamer bench soak``: a baseline snapshot after the warm-up, then one every
few minutes; each is compared with the baseline and the sites that grew most are kept.
A site is the innermost frame of the allocation (``file:line``) and, when that frame is
outside the package, the innermost ``streamer`` frame that led to it (``via``). Each
allocation is charged to an *owner*: ``bench`` when that innermost ``streamer`` frame is
in ``streamer/bench`` or ``streamer/testing`` (the soak's own servers and bookkeeping),
``analyzer`` otherwise, so the bench's bookkeeping is measured apart from the analyzer.

A snapshot materialises one Python object per live allocation (hundreds of MB for a
running analyzer) and the allocator keeps much of that memory afterwards, which would
show up as RSS growth of the process being measured. So each snapshot is taken and
analysed in a forked child: the measured process only pays for the fork (page tables,
copy-on-write) and reads a small JSON file back. Only the tracing itself (about one
hash-table entry per live allocation) stays in the measured process.

Forking a process with threads leaves the child waiting forever on anything of those
threads: a lock one of them held at that instant (tracemalloc's own table lock is taken
without the GIL, by a raw free or a C extension untracking a buffer), or a native
resource the fork's clean-up frees in the child (their thread-local objects; PyAV's
per-thread swscale context joins worker threads that are not there, which is why the
decoders convert with a reformatter of their own). Such a child sleeps and uses no CPU
while a working one is busy; it is killed after ``STUCK_S`` and the snapshot forked
again (``snapshots_retried``), up to ``FORK_TRIES`` times.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import json
import logging
import os
import signal
import time
import tracemalloc
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_PKG = os.sep + "streamer" + os.sep
_BENCH_DIRS = (_PKG + "bench" + os.sep, _PKG + "testing" + os.sep)
_HIDDEN = (tracemalloc.__file__, "<frozen importlib._bootstrap>", "<unknown>")
CHILD_TIMEOUT_S = 300.0  # a snapshot child that takes longer is killed (counted)
STUCK_S = 5.0  # a child asleep without using CPU this long is stuck (see above)
FORK_TRIES = 3  # forks of one snapshot before it is counted failed
POLL_S = 0.2
_PR_SET_PDEATHSIG = 1

logger = logging.getLogger(__name__)

Key = tuple[str, str, str]  # owner, site, via


def _short(filename: str, lineno: int) -> str:
    i = filename.rfind(_PKG)
    if i >= 0:
        name = filename[i + 1 :]
    else:
        j = filename.rfind("site-packages" + os.sep)
        if j >= 0:
            name = filename[j + len("site-packages") + 1 :]
        elif "python3" in filename:
            name = "stdlib:" + os.path.basename(filename)
        else:
            name = filename
    return f"{name}:{lineno}"


def _classify(frames: tuple[tuple[str, int], ...]) -> Key | None:
    """(owner, site, via) of one traceback (raw frames, most recent first)."""
    filename, lineno = frames[0]
    if filename in _HIDDEN:
        return None
    owner = "analyzer"
    via = ""
    for fname, fline in frames:
        if _PKG in fname:
            if _BENCH_DIRS[0] in fname or _BENCH_DIRS[1] in fname:
                owner = "bench"
            via = _short(fname, fline)
            break
    site = _short(filename, lineno)
    return owner, site, "" if via == site else via


def group(snapshot: tracemalloc.Snapshot) -> dict[Key, list[int]]:
    """Bytes and blocks per (owner, site, via)."""
    out: dict[Key, list[int]] = defaultdict(lambda: [0, 0])
    # A snapshot shares one tuple between the traces of one traceback: classify each
    # traceback once. The raw traces are (domain, size, frames, total_nframe), frames
    # most recent first (the public Trace objects cost a Python object per trace).
    keys: dict[int, Key | None] = {}
    raw: Any = snapshot.traces._traces  # type: ignore[attr-defined]
    for trace in raw:
        frames = trace[2]
        ident = id(frames)
        if ident in keys:
            key = keys[ident]
        else:
            key = keys[ident] = _classify(frames)
        if key is None:
            continue
        row = out[key]
        row[0] += trace[1]
        row[1] += 1
    return out


def _child(base: Path | None, out: Path, top: int) -> None:
    """In the forked child: snapshot, group, compare with ``base``, write ``out``."""
    traced = tracemalloc.get_traced_memory()[0]
    overhead = tracemalloc.get_tracemalloc_memory()
    now = group(tracemalloc.take_snapshot())
    tracemalloc.stop()
    rows = [[*key, size, count] for key, (size, count) in now.items()]
    result: dict[str, Any] = {"traced": traced, "overhead": overhead}
    if base is None:
        result["rows"] = rows
    else:
        before = {tuple(r[:3]): r[3:] for r in json.loads(base.read_text())["rows"]}
        growth: list[tuple[int, int, Key]] = []
        by_owner: dict[str, int] = defaultdict(int)
        for key in now.keys() | before.keys():
            size, count = now.get(key, (0, 0))
            bsize, bcount = before.get(key, (0, 0))
            growth.append((size - bsize, count - bcount, key))
            by_owner[key[0]] += size - bsize
        growth.sort(reverse=True)
        result["top"] = [
            {
                "site": key[1],
                **({"via": key[2]} if key[2] else {}),
                "owner": key[0],
                "kb": round(size / 1024.0, 1),
                "blocks": count,
            }
            for size, count, key in growth[:top]
        ]
        result["by_owner"] = {k: round(v / 1024.0, 1) for k, v in sorted(by_owner.items())}
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.rename(out)


def _exit_status(pid: int, block: bool = False) -> int | None:
    """The wait status of a child that ended (reaping it), None while it runs."""
    done, status = os.waitpid(pid, 0 if block else os.WNOHANG)
    return status if done else None


def _die_with_parent(parent: int) -> None:
    """In the child (Linux): killed when the parent dies, so that a measured process
    killed mid-snapshot leaves no child behind."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the line above
            os._exit(1)


def _cpu_state(pid: int) -> tuple[str, int] | None:
    """A running child's scheduler state (``R``, ``S``, ``D``...) and the CPU ticks it
    has used, from ``/proc``; None where that cannot be read (not Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    return fields[0], int(fields[11]) + int(fields[12])  # state, utime + stime


class _Watch:
    """Whether a child is stuck: asleep (``S``) with no CPU used for ``STUCK_S``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.ticks = -1
        self.since = time.monotonic()

    def stuck(self) -> bool:
        got = _cpu_state(self.pid)
        if got is None:
            return False
        state, ticks = got
        now = time.monotonic()
        if ticks != self.ticks or state != "S":
            self.ticks, self.since = ticks, now
            return False
        return now - self.since >= STUCK_S


@dataclass
class MemTrace:
    """Snapshots against a baseline, each taken in a forked child; ``frames`` 0: off."""

    frames: int
    workdir: Path
    top: int = 12
    _base: Path | None = None
    _n: int = 0
    base_traced: int = 0
    failed: int = 0
    retried: int = 0  # children found stuck and forked again
    history: list[dict[str, Any]] = field(default_factory=list)
    last: dict[str, Any] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return self.frames > 0

    def start(self) -> None:
        if self.enabled and not tracemalloc.is_tracing():
            tracemalloc.start(self.frames)

    def stop(self) -> None:
        if self.enabled and tracemalloc.is_tracing():
            tracemalloc.stop()

    async def _fork(self, base: Path | None) -> dict[str, Any] | None:
        self._n += 1
        out = self.workdir / f"memtrace-{self._n}.json"
        began = time.monotonic()
        for attempt in range(1, FORK_TRIES + 1):
            status = await self._run_child(base, out)
            if status != "stuck" or attempt == FORK_TRIES:
                break
            self.retried += 1
            logger.warning(
                "memtrace: snapshot %d: the forked child is stuck, waiting on something of "
                "a thread that is not in it (try %d of %d); forking again",
                self._n,
                attempt,
                FORK_TRIES,
            )
        if status != 0 or not out.exists():
            self.failed += 1
            logger.warning("memtrace: snapshot %d failed (%s)", self._n, status)
            return None
        logger.info("memtrace: snapshot %d in %.1f s", self._n, time.monotonic() - began)
        result: dict[str, Any] = json.loads(out.read_text())
        return result

    async def _run_child(self, base: Path | None, out: Path) -> int | str:
        """Fork one child for a snapshot; its exit status, or ``stuck`` or ``timeout``."""
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child: never returns into the parent's code
            # No collection here: a finalizer could wait on a lock another thread held.
            gc.disable()
            _die_with_parent(parent)
            # Inherited sockets would outlive the parent's closing them: a listening
            # socket kept open here makes the parent's restart on that port fail.
            os.closerange(3, os.sysconf("SC_OPEN_MAX"))
            code = 0
            try:
                _child(base, out, self.top)
            except BaseException:
                code = 1
            os._exit(code)
        deadline = time.monotonic() + CHILD_TIMEOUT_S
        watch = _Watch(pid)
        status: int | str | None = _exit_status(pid)
        try:
            while status is None:
                await asyncio.sleep(POLL_S)
                status = _exit_status(pid)
                if status is None and watch.stuck():
                    status = "stuck"
                elif status is None and time.monotonic() > deadline:
                    status = "timeout"
        finally:
            if not isinstance(status, int):  # stuck, too slow, or the run is cancelled
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                _exit_status(pid, block=True)
        return status

    async def baseline(self) -> None:
        """The reference snapshot."""
        if not self.enabled:
            return
        got = await self._fork(None)
        if got is not None:
            self._base = self.workdir / f"memtrace-{self._n}.json"
            self.base_traced = got["traced"]

    async def sample(self, t_min: float) -> None:
        """A snapshot compared with the baseline."""
        if not self.enabled or self._base is None:
            return
        got = await self._fork(self._base)
        if got is None:
            return
        self.last = got
        self.history.append(
            {
                "t_min": round(t_min, 1),
                "traced_mb": round(got["traced"] / 2**20, 2),
                "overhead_mb": round(got["overhead"] / 2**20, 2),
                "growth_kb": got["by_owner"],
                "top": got["top"][:3],
            }
        )

    def report(self) -> dict[str, Any]:
        if not self.enabled:
            return {"frames": 0}
        return {
            "frames": self.frames,
            "baseline_traced_mb": round(self.base_traced / 2**20, 2),
            "traced_mb": round(self.last.get("traced", 0) / 2**20, 2),
            "overhead_mb": round(self.last.get("overhead", 0) / 2**20, 2),
            "snapshots_failed": self.failed,
            "snapshots_retried": self.retried,
            "growth_kb_by_owner": self.last.get("by_owner", {}),
            "top_growth": self.last.get("top", []),
            "snapshots": self.history,
        }
