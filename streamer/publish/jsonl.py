"""JSON Lines sink: one record per message.

Replay writes atomically when the target is a regular file or a new path: records go
to a temporary file ``.NAME.<pid>.<random>.tmp`` in the target's folder, renamed to
``NAME`` only when the run ends cleanly, so a failed replay never leaves a half-written
output, and two runs writing the same path never mix: each has its own temporary and
the last to finish wins with its whole file. A temporary whose process is gone (a
killed run) is removed by the next run that writes the same target. Any other target
(a device such as ``/dev/null``, a FIFO, ``/dev/stdout``, a symlink) is written directly:
the node is never replaced. Live runs append to ``PATH`` and flush whenever the queue runs
dry, so a killed process loses at most the records still queued. Keys keep their
insertion order and floats are rounded in ``to_record()``: the same input gives
byte-identical files.

A write error (a full disk, a closed pipe) stops the writer: the subscription is
closed so publishers never wait on it, and :meth:`JsonlWriter.consume` raises
:class:`~streamer.errors.PublishError` naming the target (``BrokenPipeError``, stdout or a
FIFO whose reader left, is re-raised as is, so the CLI ends quietly as ``head`` users
expect).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import secrets
import stat
import sys
from pathlib import Path
from typing import TextIO

from streamer.bus import Subscription
from streamer.errors import PublishError
from streamer.messages import Message

logger = logging.getLogger(__name__)

_TMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]+\.tmp$")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def clean_stale_temporaries(target: Path) -> int:
    """Remove ``.NAME.<pid>.<hex>.tmp`` files of ``target`` whose process is gone."""
    removed = 0
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return 0
    for entry in entries:
        m = _TMP_RE.match(entry.name)
        if m is None or m["name"] != target.name or _pid_alive(int(m["pid"])):
            continue
        with contextlib.suppress(FileNotFoundError):
            entry.unlink()
            removed += 1
            logger.info("removed %s, left behind by a run that ended early", entry)
    return removed


def replaceable(path: Path) -> bool:
    """True when ``path`` is new or a plain regular file (not a link, device or FIFO)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return True
    return stat.S_ISREG(st.st_mode)


def _open_temporary(target: Path) -> tuple[Path, TextIO]:
    umask = os.umask(0)
    os.umask(umask)
    for _ in range(100):
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 & ~umask)
        except FileExistsError:
            continue
        return tmp, os.fdopen(fd, "w", encoding="utf-8", newline="\n")
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(target))


def dumps(record: dict[str, object]) -> str:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class JsonlWriter:
    """Writes bus messages to a file (atomically) or to a text stream such as stdout."""

    def __init__(
        self, path: Path | None, stream: TextIO | None = None, *, atomic: bool = True
    ) -> None:
        self.path = path
        self.records = 0
        self.failed = False
        self._tmp: Path | None = None
        self._fh: TextIO | None = None
        if path is None:
            self._fh = stream or sys.stdout
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if atomic and replaceable(path):
                clean_stale_temporaries(path)
                self._tmp, self._fh = _open_temporary(path)
            else:
                # A device, FIFO or link is written in place, never replaced.
                self._fh = path.open("w" if atomic else "a", encoding="utf-8", newline="\n")
        except OSError as err:
            raise PublishError(f"{path}: cannot write output: {err.strerror or err}") from err

    @property
    def target(self) -> str:
        return str(self.path) if self.path is not None else "stdout"

    def write(self, msg: Message) -> None:
        assert self._fh is not None
        self._fh.write(dumps(msg.to_record()) + "\n")
        self.records += 1

    async def consume(self, sub: Subscription) -> None:
        """Write every message of ``sub`` until the bus closes.

        Raises:
            PublishError: the target refused a write (full disk, I/O error).
            BrokenPipeError: stdout's reader went away.
        """
        try:
            async for msg in sub:
                self.write(msg)
                if self._tmp is None and not len(sub) and self._fh is not None:
                    self._fh.flush()  # streaming mode: on disk whenever the queue is empty
            if self._fh is not None:
                self._fh.flush()
        except OSError as err:
            sub.close()
            self.failed = True
            if isinstance(err, BrokenPipeError):
                raise  # the reader left (`| head`, a FIFO): the CLI ends quietly
            raise PublishError(
                f"{self.target}: cannot write output: {err.strerror or err}"
            ) from err

    def commit(self) -> None:
        """Finish the file: flush, fsync and rename into place (atomic mode)."""
        if self.failed:
            self.abort()
            return
        if self._tmp is None:
            if self.path is not None and self._fh is not None:
                fh, self._fh = self._fh, None
                try:
                    fh.close()
                except OSError as err:
                    raise PublishError(f"{self.target}: cannot write output: {err}") from err
            return
        if self._fh is None or self.path is None:
            return
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None
            os.replace(self._tmp, self.path)
        except OSError as err:
            self.abort()
            raise PublishError(
                f"{self.target}: cannot write output: {err.strerror or err}"
            ) from err

    def abort(self) -> None:
        """Drop the partial file (atomic mode); a live log keeps what it has."""
        fh, self._fh = self._fh, None
        if fh is not None and (self.path is not None or fh is not sys.stdout):
            with contextlib.suppress(OSError):
                fh.close()
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
