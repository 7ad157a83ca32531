"""JSON Lines sink: one record per message, written atomically.

Records go to ``PATH.tmp`` and the file is renamed to ``PATH`` only when the run ends
cleanly, so a failed replay never leaves a half-written output. Keys keep their
insertion order and floats are rounded in ``to_record()``: the same input gives
byte-identical files.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import TextIO

from streamer.errors import PublishError
from streamer.messages import Message
from streamer.publish.bus import Subscription

logger = logging.getLogger(__name__)


def dumps(record: dict[str, object]) -> str:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class JsonlWriter:
    """Writes bus messages to a file (atomically) or to a text stream such as stdout."""

    def __init__(self, path: Path | None, stream: TextIO | None = None) -> None:
        self.path = path
        self.records = 0
        self._tmp: Path | None = None
        self._fh: TextIO | None = None
        if path is None:
            self._fh = stream or sys.stdout
            return
        self._tmp = path.with_name(path.name + ".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self._tmp.open("w", encoding="utf-8", newline="\n")
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
        if self.path is None and self._fh is not None:
            self._fh.flush()

    def commit(self) -> None:
        """Finish the file: flush, fsync and rename into place."""
        if self._tmp is None or self._fh is None or self.path is None:
            return
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        self._fh = None
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Drop the partial file."""
        if self._tmp is None:
            return
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self._tmp.unlink(missing_ok=True)
