"""The history sink: every run's episodes, descriptions, moods, statuses and VA, kept.

    history:
      path: history.db

One more bus subscriber (:data:`streamer.compose.SINKS`). On the event loop it only
turns messages into rows (:class:`~streamer.history.recorder.Recorder`: microseconds a
message, VA folded into bins); one writer thread
(:class:`~streamer.history.writer.Writer`) commits them once per
``commit_interval_s``. The database is never waited for on the frame path: a slow,
locked, full or unreachable database costs rows of the history (counted: log,
``/metrics``, the run's summary), never a frame, a VA sample or an output line.

The subscription is lossless in a replay (the recorder never blocks, so nothing waits
for the database through it) and lossy in a live run (a stalled event loop drops, and
counts, the oldest messages rather than holding frames).

The database is opened at the start: a history whose schema is newer than this
streamer's, or that is not a history, stops the run with one line; one that is locked
or unreachable is retried in the background; one that is full or read-only leaves the
run going without history (one error line, ``/readyz`` says why).

The sink is also the dashboard's :class:`~streamer.sinks.ReviewStore`: the review API
reads the same database on a separate connection (SQLite in WAL mode lets readers and
the writer go on together).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy import exc

from streamer.bus import EventBus, Subscription
from streamer.history import queries
from streamer.history.config import HistoryConfig
from streamer.history.database import describe_error, is_full, is_transient, open_database
from streamer.history.recorder import Recorder
from streamer.history.writer import RunInfo, Writer
from streamer.lifecycle import SingleUse, cancel_and_wait
from streamer.messages import Message
from streamer.sinks import Metric, SinkContext

logger = logging.getLogger(__name__)

QUEUE_SIZE = 8192  # messages queued for the recorder (it never waits on the database)
END_DRAIN_S = 5.0  # at the end, how long the recorder may take for what is queued (s)
CHANGE_RETRY_S = 3.0  # a review change retries a locked database this long (s)


class HistorySink(SingleUse):
    """The history store of one run (see the module docstring).

    Args:
        cfg: the ``history`` section.
        bus: the run's bus.
        cameras: the run's cameras.
        replay: a replay (lossless subscription; rows placed at its start + media time).
        source: what is replayed (recorded with the run).
    """

    def __init__(
        self,
        cfg: HistoryConfig,
        bus: EventBus,
        cameras: Sequence[str],
        *,
        replay: bool = False,
        source: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.bus = bus
        self.replay = replay
        now = time.time()
        self.recorder = Recorder(cfg.va_hz, anchor=now if replay else None)
        run = RunInfo("replay" if replay else "live", tuple(cameras), source, now)
        self.writer = Writer(cfg, run, lambda: open_database(cfg))
        self._sub: Subscription | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._reader: sa.Engine | None = None
        self._reader_lock = threading.Lock()
        self.busy_s = 0.0  # event-loop seconds spent recording (bench)
        self.messages = 0
        self.clean = True  # everything was written (set at exit)

    async def __aenter__(self) -> Self:
        self._enter_once()
        self._sub = self.bus.subscribe("history", QUEUE_SIZE, lossless=self.replay)
        try:
            await asyncio.to_thread(self._first_open)
        except BaseException:
            self.bus.unsubscribe(self._sub)
            raise
        self.writer.start()
        self._tasks = [
            asyncio.create_task(self._consume_loop(self._sub), name="history-record"),
            asyncio.create_task(self._tick_loop(), name="history-tick"),
        ]
        return self

    def _first_open(self) -> None:
        """Open at the start: errors of what the database is stop the run; its state
        (locked, unreachable, full) does not."""
        try:
            engine = open_database(self.cfg)
        except exc.SQLAlchemyError as err:
            if is_transient(err):
                logger.warning(
                    "history %s: cannot open it now (%s); retrying in the background",
                    self.cfg.where(),
                    describe_error(err),
                )
                self.writer.problem = f"cannot open: {describe_error(err)}"
            else:
                self.writer._disable(describe_error(err), full=is_full(err))
            return
        try:
            run_id = self.writer.register(engine)
        except exc.SQLAlchemyError as err:
            engine.dispose()
            if is_transient(err):
                self.writer.problem = f"cannot open: {describe_error(err)}"
            else:
                self.writer._disable(describe_error(err), full=is_full(err))
            return
        self.writer.adopt(engine, run_id)
        logger.info("history %s: recording (run %d)", self.cfg.where(), run_id)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        record, _tick = self._tasks or (None, None)
        try:
            if record is not None:
                # The bus is closed by now: the recorder ends after what is queued.
                done, _ = await asyncio.wait({record}, timeout=END_DRAIN_S)
                if not done:
                    logger.warning("history: the recorder did not finish in time")
            await cancel_and_wait(*(t for t in self._tasks if not t.done()))
        finally:
            if self._sub is not None:
                self.bus.unsubscribe(self._sub)
            self._note_cameras()
            self.writer.put(self.recorder.close())
            self.clean = await asyncio.to_thread(self.writer.stop, self.cfg.flush_timeout_s)
            if self._reader is not None:
                self._reader.dispose()
            self._log_summary()

    async def flush(self, *, ok: bool, replay: bool) -> None:
        """Nothing to hand on: the history reads the bus until it closes, then writes
        its last batch when it exits."""

    def _note_cameras(self) -> None:
        seen = set(self.recorder.cameras) | set(self.writer.run.cameras)
        if len(seen) != len(self.writer.cameras):
            self.writer.cameras = tuple(sorted(seen))

    def _log_summary(self) -> None:
        w = self.writer
        dropped = sum(w.dropped.values())
        line = (
            f"history {self.cfg.where()}: {sum(w.written.values())} row(s) written in "
            f"{w.commits} commit(s)"
        )
        if dropped:
            why = ", ".join(f"{k} {v}" for k, v in sorted(w.dropped.items()))
            logger.warning("%s; %d dropped (%s)", line, dropped, why)
        else:
            logger.info("%s; none dropped", line)

    def summary(self) -> dict[str, Any]:
        """What the history did in this run (the run's summary)."""
        w = self.writer
        return {
            "database": self.cfg.where(),
            "run": w.run_id,
            "written": dict(w.written),
            "commits": w.commits,
            "dropped": dict(w.dropped),
            "failures": w.failures,
            "problem": w.problem,
        }

    # ------------------------------------------------------------------ loops

    async def _consume_loop(self, sub: Subscription) -> None:
        rec, writer = self.recorder, self.writer
        async for first in sub:
            t0 = time.thread_time()
            batch: list[Message] = [first]
            while (more := sub.get_nowait()) is not None:
                batch.append(more)
            rows = []
            for msg in batch:
                rows.extend(rec.add(msg))
            if rows:
                writer.put(rows)
            self.messages += len(batch)
            self.busy_s += time.thread_time() - t0

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.commit_interval_s)
            t0 = time.thread_time()
            self._note_cameras()
            self.writer.put(self.recorder.tick())
            self.writer.commit_soon()
            self.busy_s += time.thread_time() - t0

    # ------------------------------------------------------------------ run view

    def problem(self) -> str:
        """Why the history is not being written now ("" when it is)."""
        return self.writer.problem

    def metrics(self) -> list[Metric]:
        w = self.writer
        return [
            Metric.by_label(
                "streamer_history_rows_written",
                "history rows written, by kind",
                "counter",
                "kind",
                dict(w.written),
            ),
            Metric.by_label(
                "streamer_history_rows_dropped",
                "history rows dropped (queue_full: the database was too slow or away; "
                "disabled: the history stopped; flush_timeout: not written at the end)",
                "counter",
                "reason",
                {k: w.dropped.get(k, 0) for k in ("queue_full", "disabled", "flush_timeout")},
            ),
            Metric.counter("streamer_history_commits", "history transactions committed", w.commits),
            Metric.counter(
                "streamer_history_commit_failures", "history commits or opens failed", w.failures
            ),
            Metric.gauge("streamer_history_queue_rows", "history rows waiting", w.queued),
            Metric.gauge(
                "streamer_history_up", "1 while the history is being written", float(not w.problem)
            ),
            Metric.histogram(
                "streamer_history_commit_seconds",
                "duration of a history transaction",
                w.commit_s,
                (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0),
            ),
        ]

    # ------------------------------------------------------------------ review store

    def _engine(self) -> sa.Engine:
        with self._reader_lock:
            if self._reader is None:
                self._reader = open_database(self.cfg, writer=False, create=False, migrate=False)
            return self._reader

    def _read(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        with self._engine().connect() as conn:
            return fn(conn, *args, **kwargs)

    def _change(self, fn: Any, *args: Any) -> Any:
        """A review change; a locked SQLite file (the writer committing) is retried."""
        deadline = time.monotonic() + CHANGE_RETRY_S
        while True:
            try:
                with self._engine().begin() as conn:
                    return fn(conn, *args)
            except exc.OperationalError as err:
                if not is_transient(err) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    async def review_episodes(
        self,
        *,
        camera: str | None,
        rule: str | None,
        reviewed: bool | None,
        after: float | None,
        before: float | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        f = queries.EpisodeFilter(camera, rule, reviewed, after, before, limit)
        items: list[dict[str, Any]] = await asyncio.to_thread(self._read, queries.review_items, f)
        return items

    async def review_mood(
        self, *, camera: str, after: float, before: float, points: int
    ) -> list[dict[str, Any]]:
        entries = await asyncio.to_thread(self._read, queries.mood_entries, camera, after, before)
        return queries.mood_buckets(entries, after, before, points)

    async def review_va(
        self, *, camera: str, track_id: int, run: int | None, after: float, before: float
    ) -> list[dict[str, Any]]:
        bins = await asyncio.to_thread(
            self._read,
            queries.va_bins,
            camera,
            track_id,
            run_id=run,
            after=after,
            before=before,
        )
        return [queries.va_record(camera, r, t, b) for r, t, b in bins]

    async def review_timeline(self, *, camera: str, after: float, before: float) -> dict[str, Any]:
        out: dict[str, Any] = await asyncio.to_thread(
            self._read, queries.timeline, camera, after, before
        )
        return out

    async def review_cameras(self) -> list[str]:
        names: list[str] = await asyncio.to_thread(self._read, queries.cameras)
        return names

    async def mark_reviewed(self, ids: Sequence[int], reviewed: bool) -> int:
        n: int = await asyncio.to_thread(self._change, queries.mark_reviewed, ids, reviewed)
        return n

    async def set_keep(self, episode: int, keep: bool) -> bool:
        ok: bool = await asyncio.to_thread(self._change, queries.set_keep, episode, keep)
        return ok


def sink(ctx: SinkContext) -> HistorySink:
    """The history of a run whose config has a ``history`` section
    (:data:`streamer.compose.SINKS`)."""
    if ctx.cfg.history is None:
        raise ValueError("the history sink needs a history section")
    return HistorySink(ctx.cfg.history, ctx.bus, list(ctx.view.cameras), replay=ctx.options.replay)
