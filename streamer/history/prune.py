"""Retention: old rows deleted in small batches, so writes never wait long.

One pass deletes, table by table, rows older than their retention (``keep_days`` for
VA, moods, descriptions and camera statuses; ``keep_episode_days`` for episodes). An
episode marked ``keep`` is never deleted, nor are the VA segments, moods and
descriptions that belong to it (its review still shows its trace). Each step is one
short transaction of at most ``batch`` rows; the batch size adapts so a step takes
about :data:`STEP_TARGET_S`, and the writer interleaves steps with its commits, so a
commit waits for at most one step (under 100 ms on the benched machine:
``streamer bench history``, ``prune_step_ms``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import sqlalchemy as sa

from streamer.history.schema import (
    camera_status,
    descriptions,
    episodes,
    mood_segments,
    va_segments,
)
from streamer.history.segments import SEGMENT_S

DAY_S = 86400.0
STEP_TARGET_S = 0.03  # one prune step aims at this long (s)
FIRST_BATCH = 500  # rows of the first step of a table
MAX_BATCH = 20000  # rows of one step at most


def _kept_episode() -> sa.ColumnElement[bool]:
    return episodes.c.keep.is_(sa.true())


def _selects(now: float, keep_days: float, keep_episode_days: float) -> list[sa.Select[tuple[int]]]:
    """Per table, the ids of its rows past retention (oldest first)."""
    cut = now - keep_days * DAY_S
    cut_ep = now - keep_episode_days * DAY_S
    e = episodes
    va_kept = sa.exists().where(
        _kept_episode(),
        e.c.run_id == va_segments.c.run_id,
        e.c.camera == va_segments.c.camera,
        e.c.track_id == va_segments.c.track_id,
        va_segments.c.start + SEGMENT_S >= e.c.wall_start,
        va_segments.c.start <= sa.func.coalesce(e.c.wall_end, e.c.wall_start),
    )
    mood_kept = sa.exists().where(
        _kept_episode(),
        e.c.run_id == mood_segments.c.run_id,
        e.c.camera == mood_segments.c.camera,
        mood_segments.c.start + SEGMENT_S >= e.c.wall_start,
        mood_segments.c.start <= sa.func.coalesce(e.c.wall_end, e.c.wall_start),
    )
    desc_kept = sa.exists().where(
        _kept_episode(),
        e.c.run_id == descriptions.c.run_id,
        e.c.episode_id == descriptions.c.episode_id,
    )
    return [
        sa.select(va_segments.c.id)
        .where(va_segments.c.start < cut - SEGMENT_S, ~va_kept)
        .order_by(va_segments.c.start),
        sa.select(mood_segments.c.id)
        .where(mood_segments.c.start < cut - SEGMENT_S, ~mood_kept)
        .order_by(mood_segments.c.start),
        sa.select(descriptions.c.id)
        .where(descriptions.c.wall < cut, ~desc_kept)
        .order_by(descriptions.c.wall),
        sa.select(camera_status.c.id)
        .where(camera_status.c.wall_time < cut)
        .order_by(camera_status.c.wall_time),
        sa.select(e.c.id)
        .where(e.c.keep.is_(sa.false()), sa.func.coalesce(e.c.wall_end, e.c.wall_start) < cut_ep)
        .order_by(e.c.wall_start),
    ]


@dataclass
class PrunePass:
    """One pass of retention, done step by step (:meth:`step`) until :attr:`done`.

    Args:
        now: wall time the retention is measured from.
        keep_days: retention of VA, moods, descriptions and statuses (days).
        keep_episode_days: retention of episodes not kept (days).

    Attributes:
        deleted: rows deleted so far, by table.
        step_s: the duration of every step (seconds).
    """

    now: float
    keep_days: float
    keep_episode_days: float
    deleted: dict[str, int] = field(default_factory=dict)
    step_s: list[float] = field(default_factory=list)
    _todo: Iterator[sa.Select[tuple[int]]] | None = None
    _current: sa.Select[tuple[int]] | None = None
    _batch: int = FIRST_BATCH
    done: bool = False

    def __post_init__(self) -> None:
        self._todo = iter(_selects(self.now, self.keep_days, self.keep_episode_days))
        self._next_table()

    def _next_table(self) -> None:
        assert self._todo is not None
        self._current = next(self._todo, None)
        self._batch = FIRST_BATCH
        self.done = self._current is None

    def step(self, engine: sa.Engine) -> int:
        """Delete at most one batch of the current table in one transaction.

        Returns:
            Rows deleted by this step.
        """
        if self._current is None:
            self.done = True
            return 0
        select = self._current
        table = select.get_final_froms()[0]
        assert isinstance(table, sa.Table)
        t0 = time.perf_counter()
        ids = select.limit(self._batch).scalar_subquery()
        with engine.begin() as conn:
            n = conn.execute(sa.delete(table).where(table.c.id.in_(ids))).rowcount or 0
        took = time.perf_counter() - t0
        self.step_s.append(took)
        self.deleted[table.name] = self.deleted.get(table.name, 0) + n
        if n < self._batch:
            self._next_table()
        elif took > 0:
            scale = max(0.25, min(2.0, STEP_TARGET_S / took))
            self._batch = int(max(50, min(MAX_BATCH, self._batch * scale)))
        return n


def prune_now(
    engine: sa.Engine, now: float, keep_days: float, keep_episode_days: float
) -> PrunePass:
    """A whole pass at once (``streamer history prune``)."""
    p = PrunePass(now, keep_days, keep_episode_days)
    while not p.done:
        p.step(engine)
    return p
