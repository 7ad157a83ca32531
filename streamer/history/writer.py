"""The history's one writer thread: batched transactions, bounded backlog, retries, retention.

The event loop hands rows over with :meth:`Writer.put` (never blocks: a lock and a
dict) and asks for a commit with :meth:`Writer.commit_soon` once per
``commit_interval_s``; the thread writes everything waiting in transactions of at most
``commit_rows`` rows. Rows are keyed, so a newer version of a row (an ended episode,
the LLM's description, a fuller VA segment) replaces the one still waiting.

What the database costs stays here:

* locked or busy (SQLite), unreachable (PostgreSQL): the batch waits and is retried
  with a growing delay; the backlog is bounded (``max_queue_rows`` for VA and moods,
  as many again for episodes, descriptions and statuses): past it new rows are dropped
  and counted (``dropped["queue_full"]``), a warning logged at most every 10 s;
* full (disk, or ``max_size_mb``), read-only, corrupt: one error line, the history
  stops for the rest of the run (its rows are dropped and counted), :attr:`problem`
  says why (``/readyz``);
* at the end, the last batch gets ``flush_timeout_s``; what is not written by then is
  dropped and counted (``dropped["flush_timeout"]``).

Retention (:mod:`streamer.history.prune`) runs on this thread between commits, one
short step at a time, once at start and every ``prune_interval_s``.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc

from streamer import __version__
from streamer.backoff import Backoff, BackoffPolicy
from streamer.errors import HistoryError
from streamer.history.config import HistoryConfig
from streamer.history.database import describe_error, is_fatal, is_full, is_transient
from streamer.history.prune import PrunePass
from streamer.history.recorder import BULK_KINDS, KINDS, Row
from streamer.history.schema import (
    camera_status,
    descriptions,
    episodes,
    mood_segments,
    runs,
    va_segments,
)
from streamer.samples import RecentSamples
from streamer.throttle import LogThrottle

logger = logging.getLogger(__name__)

RETRY_INITIAL_S = 0.5  # first retry after a failed commit or open (s)
RETRY_MAX_S = 30.0  # retries at least this often (s)
FINAL_RETRY_S = 0.1  # retries while flushing at the end (s)
HEARTBEAT_S = 30.0  # an idle run updates its last_seen this often (s)
WARN_INTERVAL_S = 10.0  # at most one warning per this about drops or failures (s)

Key = tuple[Any, ...]


@dataclass(frozen=True)
class RunInfo:
    """What the history records about the run that writes (its ``runs`` row)."""

    kind: str  # live | replay
    cameras: tuple[str, ...]
    source: str | None = None
    started_at: float = field(default_factory=time.time)


def _upsert(table: sa.Table, dialect: str, keys: list[str], fixed: Iterable[str] = ()) -> Any:
    """INSERT ... ON CONFLICT (keys) DO UPDATE every other column (but ``fixed``)."""
    from sqlalchemy.dialects import postgresql, sqlite

    stmt: Any = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
    skip = {"id", *keys, *fixed}
    update = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in skip}
    return stmt.on_conflict_do_update(index_elements=keys, set_=update)


class _Statements:
    """The statements of a batch, per row kind, for one dialect."""

    def __init__(self, dialect: str) -> None:
        self.episode = _upsert(
            episodes,
            dialect,
            ["run_id", "episode_id"],
            fixed=("description", "reviewed_at", "keep"),
        )
        self.description = _upsert(descriptions, dialect, ["run_id", "description_id"])
        self.va = _upsert(va_segments, dialect, ["run_id", "camera", "track_id", "start"])
        self.mood = _upsert(mood_segments, dialect, ["run_id", "camera", "start"])
        self.status = sa.insert(camera_status)
        self.episode_description = (
            sa.update(episodes)
            .where(
                episodes.c.run_id == sa.bindparam("b_run_id"),
                episodes.c.episode_id == sa.bindparam("b_episode_id"),
            )
            .values(description=sa.bindparam("b_description"))
        )


class Writer:
    """The writer thread (see the module docstring).

    Args:
        cfg: the ``history`` section.
        run: what to record about this run.
        open_engine: makes the engine (opens and migrates the database); called on the
            writer thread, retried after transient failures.
    """

    def __init__(
        self,
        cfg: HistoryConfig,
        run: RunInfo,
        open_engine: Any,
    ) -> None:
        self.cfg = cfg
        self.run = run
        self._open_engine = open_engine
        self.engine: sa.Engine | None = None
        self.run_id: int | None = None
        self._pending: dict[Key, Row] = {}
        self._sizes = {"bulk": 0, "other": 0}
        self._cond = threading.Condition()
        self._commit_requested = False
        self._stop = False
        self._abandon = False
        self._thread: threading.Thread | None = None
        self._backoff = Backoff(BackoffPolicy(RETRY_INITIAL_S, RETRY_MAX_S, jitter=0.2))
        self._retry_at = 0.0
        self._prune: PrunePass | None = None
        self._next_prune = 0.0
        self._warn = LogThrottle(WARN_INTERVAL_S)
        self._fail_warn = LogThrottle(WARN_INTERVAL_S)
        self._stmts: _Statements | None = None
        # counters (read by metrics() from the event loop; ints under the GIL)
        self.written: collections.Counter[str] = collections.Counter()
        self.dropped: collections.Counter[str] = collections.Counter()
        self.commits = 0
        self.failures = 0
        self.pruned: collections.Counter[str] = collections.Counter()
        self.commit_s = RecentSamples()
        self.prune_step_s = RecentSamples()
        self.problem = ""  # why the history is not being written now ("" when it is)
        self.disabled = False
        self.thread_cpu_s = 0.0  # CPU seconds of the writer thread (bench)
        self.cameras: tuple[str, ...] = run.cameras  # the run's cameras (seen ones added)
        self._cameras_written: tuple[str, ...] = run.cameras
        self._last_write = time.monotonic()

    # ------------------------------------------------------------------ event loop side

    @property
    def queued(self) -> int:
        return self._sizes["bulk"] + self._sizes["other"]

    def put(self, rows: Iterable[Row]) -> None:
        """Queue rows for the next commit (never blocks on the database)."""
        with self._cond:
            for row in rows:
                key = (row.kind, *row.key)
                if key in self._pending:
                    self._pending[key] = row  # a newer version of a waiting row
                    continue
                if self.disabled:
                    self._count_drop("disabled", 1)
                    continue
                group = "bulk" if row.kind in BULK_KINDS else "other"
                if self._sizes[group] >= self.cfg.max_queue_rows:
                    self._count_drop("queue_full", 1)
                    continue
                self._pending[key] = row
                self._sizes[group] += 1
            if self.queued >= self.cfg.commit_rows:
                self._commit_requested = True
                self._cond.notify()

    def commit_soon(self) -> None:
        """Ask for a commit of what is queued (once per commit interval)."""
        with self._cond:
            self._commit_requested = True
            self._cond.notify()

    def _count_drop(self, reason: str, n: int) -> None:
        if n <= 0:
            return
        self.dropped[reason] += n
        if reason != "flush_timeout":
            self._warn.log(
                logger,
                logging.WARNING,
                "history %s: %d row(s) dropped so far (%s)",
                self.cfg.where(),
                sum(self.dropped.values()),
                ", ".join(f"{k} {v}" for k, v in sorted(self.dropped.items())),
            )

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="history-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float) -> bool:
        """Write what is queued (at most ``timeout_s``), end the run's row, stop.

        Returns:
            True when everything queued was written.
        """
        with self._cond:
            self._stop = True
            self._cond.notify()
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
            if thread.is_alive():
                with self._cond:
                    self._abandon = True
                    self._cond.notify()
                thread.join(2.0)
        with self._cond:
            left = self.queued
            self._drop_all("flush_timeout")
        if self.engine is not None and (thread is None or not thread.is_alive()):
            self.engine.dispose()
        return left == 0

    def _drop_all(self, reason: str) -> None:
        """Drop every queued row (the lock is held)."""
        self._count_drop(reason, len(self._pending))
        self._pending.clear()
        self._sizes = {"bulk": 0, "other": 0}

    # ------------------------------------------------------------------ writer thread

    def _main(self) -> None:
        cpu0 = time.thread_time()
        try:
            self._loop()
        except Exception:  # supervisor: the history must never take the run down
            logger.exception("history %s: the writer failed; history stops", self.cfg.where())
            self._disable("the writer failed (see the log)")
        finally:
            self.thread_cpu_s = time.thread_time() - cpu0

    def _loop(self) -> None:
        want_write, last_commit = False, time.monotonic()
        while True:
            stopping, abandon, requested = self._wait(want_write, last_commit)
            if abandon or (self.disabled and stopping):
                return
            if self.disabled:
                continue
            interval_passed = time.monotonic() - last_commit >= self.cfg.commit_interval_s
            want_write = want_write or requested or interval_passed
            if self._write_step(stopping, want_write):
                want_write, last_commit = False, time.monotonic()
            if stopping:
                if self.engine is None or self.queued:
                    time.sleep(FINAL_RETRY_S)  # the end: retry quickly until stop() gives up
                    continue
                self._end_run()
                return
            if not want_write:
                self._prune_some()

    def _wait(self, want_write: bool, last_commit: float) -> tuple[bool, bool, bool]:
        """Sleep until there is something to do; (stopping, abandon, commit requested)."""
        with self._cond:
            if self.disabled and not self._stop:
                self._cond.wait()  # nothing more to write: only the stop wakes it
            elif not (self._stop or self._commit_requested):
                self._cond.wait(self._wait_s(want_write, last_commit))
            requested, self._commit_requested = self._commit_requested, False
            return self._stop, self._abandon, requested

    def _write_step(self, stopping: bool, want_write: bool) -> bool:
        """Open the database if due, write if due; True when a write went through."""
        now = time.monotonic()
        if self.engine is None and (stopping or now >= self._retry_at):
            self._try_open()
        if self.engine is None or not (stopping or (want_write and now >= self._retry_at)):
            return False
        return self._write_all(final=stopping)

    def _wait_s(self, want_write: bool, last_commit: float) -> float:
        """How long the thread may sleep: to the next retry, prune step or interval."""
        now = time.monotonic()
        until = last_commit + self.cfg.commit_interval_s
        if self.engine is None or want_write:
            until = min(until, max(self._retry_at, now))
        elif self._prune is not None:
            until = now
        else:
            until = min(until, self._next_prune)
        return max(0.002, until - now)

    def _try_open(self) -> None:
        try:
            engine: sa.Engine = self._open_engine()
            with engine.begin() as conn:
                self.run_id = self._register(conn)
        except HistoryError as err:
            self._disable(str(err))
            return
        except exc.SQLAlchemyError as err:
            if is_fatal(err):
                self._disable(describe_error(err), full=is_full(err))
            else:
                self._failed("cannot open", err)
            return
        self.engine = engine
        self._stmts = _Statements(engine.dialect.name)
        self._backoff.reset()
        self.problem = ""
        self._next_prune = time.monotonic()
        logger.info("history %s: recording (run %d)", self.cfg.where(), self.run_id)

    def adopt(self, engine: sa.Engine, run_id: int) -> None:
        """Use a database opened (and a run registered) before the thread starts."""
        self.engine, self.run_id = engine, run_id
        self._stmts = _Statements(engine.dialect.name)
        self._next_prune = time.monotonic()

    def register(self, engine: sa.Engine) -> int:
        """Record this run in ``engine``'s history; returns its id."""
        with engine.begin() as conn:
            return self._register(conn)

    def _register(self, conn: sa.Connection) -> int:
        import json

        if self.run_id is not None:
            return self.run_id
        r = self.run
        res = conn.execute(
            sa.insert(runs).values(
                kind=r.kind,
                host=socket.gethostname()[:255],
                pid=os.getpid(),
                version=__version__,
                source=r.source,
                cameras=json.dumps(list(r.cameras)),
                started_at=r.started_at,
                last_seen=time.time(),
            )
        )
        key = res.inserted_primary_key
        assert key is not None
        return int(key[0])

    def _take(self, n: int) -> list[Row]:
        """Up to ``n`` queued rows, oldest first (the lock is held)."""
        out = []
        for key in list(self._pending)[:n]:
            row = self._pending.pop(key)
            self._sizes["bulk" if row.kind in BULK_KINDS else "other"] -= 1
            out.append(row)
        return out

    def _requeue(self, rows: list[Row]) -> None:
        """Put a failed batch back in front; a newer version of a row queued meanwhile
        wins (the lock is held)."""
        merged: dict[Key, Row] = {}
        for row in rows:
            merged[(row.kind, *row.key)] = row
            self._sizes["bulk" if row.kind in BULK_KINDS else "other"] += 1
        for key, row in self._pending.items():
            if key in merged:
                self._sizes["bulk" if row.kind in BULK_KINDS else "other"] -= 1
            merged[key] = row
        self._pending = merged

    def _write_all(self, final: bool) -> bool:
        """Write every queued row, ``commit_rows`` per transaction; False on a failure."""
        while True:
            with self._cond:
                if self._abandon:
                    return False
                batch = self._take(self.cfg.commit_rows)
            if not batch and not self._heartbeat_due():
                return True
            try:
                self._write(batch)
            except exc.SQLAlchemyError as err:
                with self._cond:
                    self._requeue(batch)
                if is_fatal(err):
                    self._disable(describe_error(err), full=is_full(err))
                else:
                    self._failed("cannot write", err, final)
                return False

    def _heartbeat_due(self) -> bool:
        """An idle run still says it is alive (and which cameras it has) now and then."""
        stale = time.monotonic() - self._last_write >= HEARTBEAT_S
        return stale or self.cameras != self._cameras_written

    def _write(self, batch: list[Row]) -> None:
        assert self.engine is not None and self._stmts is not None and self.run_id is not None
        by_kind: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
        for row in batch:
            by_kind[row.kind].append(row.values)
        t0 = time.perf_counter()
        run_id = self.run_id
        with self.engine.begin() as conn:
            for kind in KINDS:
                rows = by_kind[kind]
                if not rows:
                    continue
                if kind == "episode_description":
                    params = [
                        {
                            "b_run_id": run_id,
                            "b_episode_id": r["episode_id"],
                            "b_description": r["description"],
                        }
                        for r in rows
                    ]
                else:
                    params = [{**r, "run_id": run_id} for r in rows]
                conn.execute(getattr(self._stmts, kind), params)
            seen: dict[str, Any] = {"last_seen": time.time()}
            cams = self.cameras
            if cams != self._cameras_written:
                import json

                seen["cameras"] = json.dumps(list(cams))
            conn.execute(sa.update(runs).where(runs.c.id == run_id).values(**seen))
            self._cameras_written = cams
        self._last_write = time.monotonic()
        if not batch:
            return
        self.commit_s.add(time.perf_counter() - t0)
        self.commits += 1
        for kind, rows in by_kind.items():
            if rows:
                self.written[kind] += len(rows)
        self._backoff.reset()
        self._retry_at = 0.0
        if self.problem:
            logger.info("history %s: writing again", self.cfg.where())
            self.problem = ""

    def _failed(self, what: str, err: BaseException, final: bool = False) -> None:
        self.failures += 1
        delay = FINAL_RETRY_S if final else self._backoff.next_delay()
        self._retry_at = time.monotonic() + delay
        why = describe_error(err)
        self.problem = f"{what}: {why}"
        if not is_transient(err):
            logger.error("history %s: %s: %s", self.cfg.where(), what, why)
        else:
            self._fail_warn.log(
                logger,
                logging.WARNING,
                "history %s: %s (%s); %d row(s) waiting, retrying in %.1f s",
                self.cfg.where(),
                what,
                why,
                self.queued,
                delay,
            )
        if (
            self.engine is not None
            and isinstance(err, exc.DBAPIError)
            and err.connection_invalidated
        ):
            self.engine.dispose()

    def _disable(self, why: str, full: bool = False) -> None:
        """Stop the history for the rest of the run (one error line)."""
        self.disabled = True
        self.problem = f"{'full: ' if full else ''}{why}: history stopped for this run"
        logger.error("history %s: %s", self.cfg.where(), self.problem)
        with self._cond:
            self._drop_all("disabled")

    def _prune_some(self) -> None:
        """One retention step when a pass is running or due (never when rows wait)."""
        if self.engine is None:
            return
        now = time.monotonic()
        if self._prune is None:
            if now < self._next_prune:
                return
            self._prune = PrunePass(time.time(), self.cfg.keep_days, self.cfg.keep_episode_days)
        with self._cond:
            if self._commit_requested or self._stop:
                return  # a commit first; the pass goes on after it
        try:
            self._prune.step(self.engine)
        except exc.SQLAlchemyError as err:
            self._prune = None
            self._next_prune = now + self.cfg.prune_interval_s
            self._fail_warn.log(
                logger, logging.WARNING, "history: retention failed: %s", describe_error(err)
            )
            return
        self.prune_step_s.add(self._prune.step_s[-1])
        if self._prune.done:
            for table, n in self._prune.deleted.items():
                self.pruned[table] += n
            if any(self._prune.deleted.values()):
                logger.info(
                    "history %s: retention deleted %s",
                    self.cfg.where(),
                    ", ".join(f"{n} {t}" for t, n in sorted(self._prune.deleted.items()) if n),
                )
            self._prune = None
            self._next_prune = now + self.cfg.prune_interval_s

    def _end_run(self) -> None:
        if self.engine is None or self.run_id is None:
            return
        try:
            with self.engine.begin() as conn:
                now = time.time()
                conn.execute(
                    sa.update(runs)
                    .where(runs.c.id == self.run_id)
                    .values(last_seen=now, ended_at=now)
                )
        except exc.SQLAlchemyError as err:
            logger.warning("history: cannot record the end of the run: %s", describe_error(err))
