"""JSON Lines sink: one record per message.

Replay writes atomically: records go to ``PATH.tmp`` and the file is renamed to
``PATH`` only when the run ends cleanly, so a failed replay never leaves a half-written
output. Live runs append to ``PATH`` and flush whenever the queue runs dry, so a killed
process loses at most the records still queued. Keys keep their insertion order and
floats are rounded in ``to_record()``: the same input gives byte-identical files.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import TextIO

from streamer.bus import Subscription
from streamer.errors import PublishError
from streamer.messages import Message

logger = logging.getLogger(__name__)


def dumps(record: dict[str, object]) -> str:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class JsonlWriter:
    """Writes bus messages to a file (atomically) or to a text stream such as stdout."""

    def __init__(
        self, path: Path | None, stream: TextIO | None = None, *, atomic: bool = True
    ) -> None:
        self.path = path
        self.records = 0
        self._tmp: Path | None = None
        self._fh: TextIO | None = None
        if path is None:
            self._fh = stream or sys.stdout
            return
        target = path
        if atomic:
            self._tmp = target = path.with_name(path.name + ".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = target.open("w" if atomic else "a", encoding="utf-8", newline="\n")
        except OSError as err:
            raise PublishError(f"{path}: cannot write output: {err}") from err

    def write(self, msg: Message) -> None:
        assert self._fh is not None
        self._fh.write(dumps(msg.to_record()) + "\n")
        self.records += 1

    async def consume(self, sub: Subscription) -> None:
        """Write every message of ``sub`` until the bus closes."""
        async for msg in sub:
            self.write(msg)
            if self._tmp is None and not len(sub) and self._fh is not None:
                self._fh.flush()  # streaming mode: on disk whenever the queue is empty
        if self._fh is not None:
            self._fh.flush()

    def commit(self) -> None:
        """Finish the file: flush, fsync and rename into place (atomic mode)."""
        if self._tmp is None:
            if self.path is not None and self._fh is not None:
                self._fh.close()
                self._fh = None
            return
        if self._fh is None or self.path is None:
            return
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        self._fh = None
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Drop the partial file (atomic mode); a live log keeps what it has."""
        if self._tmp is None:
            self.commit()
            return
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self._tmp.unlink(missing_ok=True)
