"""JSON Lines sink: one record per message.

The file follows the one output rule of :mod:`streamer.output`: replay writes a regular
file (or a new path) atomically through a hidden temporary renamed only when the run
ends cleanly, so a failed replay never leaves a half-written output and two runs writing
one path never mix; a device such as ``/dev/null``, a FIFO, ``/dev/stdout`` or a symlink
is written in place, never replaced. Live runs append to ``PATH`` and flush whenever the
queue runs dry, so a killed process loses at most the records still queued. Keys keep
their insertion order and floats are rounded in ``to_record()``: the same input gives
byte-identical files.

A write error (a full disk, a closed pipe) stops the writer: the subscription is
closed so publishers never wait on it, and :meth:`JsonlWriter.consume` raises
:class:`~streamer.errors.OutputError` naming the target (``BrokenPipeError``, stdout or a
FIFO whose reader left, is re-raised as is, so the CLI ends quietly as ``head`` users
expect).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import IO, TextIO

from streamer.bus import Subscription
from streamer.errors import OutputError
from streamer.messages import Message
from streamer.output import OutputFile, clean_stale_temporaries, replaceable

logger = logging.getLogger(__name__)

__all__ = ["JsonlWriter", "clean_stale_temporaries", "dumps", "replaceable"]


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
        self._out: OutputFile | None = None
        self._fh: IO[str] | None = None
        if path is None:
            self._fh = stream or sys.stdout
            return
        self._out = OutputFile(path, append=not atomic)
        self._fh = self._out.open("w")

    @property
    def _tmp(self) -> Path | None:
        """The temporary being written (None: stdout, or a target written in place)."""
        return self._out.tmp if self._out is not None else None

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
            OutputError: the target refused a write (full disk, I/O error).
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
            raise OutputError(f"{self.target}: cannot write output: {err.strerror or err}") from err

    def commit(self) -> None:
        """Finish the file: flush, fsync and rename into place (atomic mode)."""
        if self.failed:
            self.abort()
            return
        if self._out is None:
            return
        self._fh = None
        self._out.commit()

    def abort(self) -> None:
        """Drop the partial file (atomic mode); a live log keeps what it has."""
        self._fh = None
        if self._out is not None:
            self._out.abort()
