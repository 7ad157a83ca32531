"""The counters every frame source reports (dashboard, ``/metrics``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class SourceCounters:
    """What a source did so far.

    Attributes:
        decoded: frames decoded and handed over (a file: to the analysis; a camera: to
            its latest-frame-wins mailbox), plus the frames skipped by rate.
        skipped: frames replaced in the mailbox before the analysis took them.
        skipped_by_rate: good frames off the camera's analysis grid (``analysis_fps``):
            never handed over, by design (not a loss).
        reconnects: reopen attempts after the first open.
        stalls: read timeouts and stalled streams.
        corrupt: undecodable packets and corrupt frames.
    """

    decoded: int = 0
    skipped: int = 0
    reconnects: int = 0
    stalls: int = 0
    corrupt: int = 0
    skipped_by_rate: int = 0


class CountedSource(Protocol):
    """A source that reports :class:`SourceCounters` (files and live cameras)."""

    def counters(self) -> SourceCounters: ...
