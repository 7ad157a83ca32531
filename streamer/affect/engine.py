"""AffectEngine: one worker thread owns the VA model; callers await micro-batched results.

    async with AffectEngine(model, max_batch=32, max_wait_ms=2.0) as engine:
        va = await engine.infer(crops)     # (N, 64, 64) uint8 -> (N, 2) [valence, arousal]

Batching: the worker takes the first pending request, then adds requests already queued
up to ``max_batch`` faces. It waits up to ``max_wait_ms`` for more only while some
*other* recently active caller (an asyncio task that called :meth:`infer` in the last
second, e.g. another camera) has nothing in the batch yet, so a single caller (replay)
never waits.

Faults: a model that raises, returns the wrong shape or non-finite values yields NaN
rows for the affected faces (the caller rejects them; the tracks predict without an
update), counted in :attr:`AffectEngine.stats`. A call not answered within
``timeout_s`` returns NaN rows, and the watchdog replaces the worker thread (the hung
call is abandoned); more than ``max_restarts`` restarts within ``restart_window_s``
(the package's one :class:`~streamer.supervise.RestartGuard`) mark the engine
degraded: calls then return NaN at once until ``degraded_retry_s`` has passed, and the
first successful batch clears the state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from streamer.affect.config import AffectConfig
from streamer.affect.models import VAModel, runtime_name
from streamer.errors import ModelError
from streamer.lifecycle import SingleUse
from streamer.supervise import RestartGuard
from streamer.throttle import LogThrottle

logger = logging.getLogger(__name__)

__all__ = ["AffectEngine", "EngineStats"]

ACTIVE_CALLER_S = 1.0  # s; a caller that submitted within this window is expected again
STOP_WAIT_S = 2.0  # s; longest wait for the worker at shutdown
_STOP = object()
GPU_WAIT_MS = 2.0  # default batching wait off the CPU (GPU runtimes, remote services)
FAILURE_LOG_INTERVAL_S = 10.0  # failed model batches: one warning per this (s)


@dataclass
class EngineStats:
    """Counters of an :class:`AffectEngine` (a snapshot is returned by ``stats``)."""

    calls: int = 0
    faces: int = 0
    batches: int = 0
    largest_batch: int = 0
    model_errors: int = 0  # batches whose model call raised or returned a wrong shape
    failed_faces: int = 0  # faces answered with NaN because of an error or a timeout
    nonfinite_faces: int = 0  # faces whose model output was NaN / inf
    timeouts: int = 0
    restarts: int = 0
    skipped_faces: int = 0  # faces answered with NaN at once while degraded
    degraded: bool = False


@dataclass
class _Request:
    crops: np.ndarray
    future: asyncio.Future[np.ndarray]
    loop: asyncio.AbstractEventLoop
    caller: int
    generation: int


def _nan_rows(n: int) -> np.ndarray:
    return np.full((n, 2), np.nan, np.float32)


def _deliver(fut: asyncio.Future[np.ndarray], rows: np.ndarray) -> None:
    if not fut.done():
        fut.set_result(rows)


class AffectEngine(SingleUse):
    """Micro-batching front of a :class:`~streamer.affect.models.VAModel`.

    Args:
        model: the VA model; only the engine's worker thread calls it.
        max_batch: largest number of faces per model call.
        max_wait_ms: longest wait for other callers' crops to join a batch.
        timeout_s: a call not answered within this time returns NaN rows and the worker
            is restarted.
        max_restarts: restarts within ``restart_window_s`` before the engine is degraded.
        restart_window_s: window for counting restarts.
        degraded_retry_s: while degraded, calls return NaN at once for this long before
            the model is tried again.
    """

    def __init__(
        self,
        model: VAModel,
        max_batch: int = 32,
        max_wait_ms: float = 2.0,
        timeout_s: float = 10.0,
        max_restarts: int = 3,
        restart_window_s: float = 60.0,
        degraded_retry_s: float = 30.0,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.model = model
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.timeout_s = timeout_s
        self.max_restarts = max_restarts
        self.restart_window_s = restart_window_s
        self.degraded_retry_s = degraded_retry_s
        self._queue: queue.Queue[Any] = queue.Queue()
        self._stats = EngineStats()
        self._lock = threading.Lock()
        self._callers: dict[int, float] = {}
        self._generation = 0
        self._thread: threading.Thread | None = None
        self._restarts = RestartGuard(max_restarts, restart_window_s)
        self._degraded_until = 0.0
        self._running = False
        self._size = int(model.input_size)
        self._failure_log = LogThrottle(FAILURE_LOG_INTERVAL_S)

    @classmethod
    def from_config(cls, model: VAModel, cfg: AffectConfig) -> AffectEngine:
        """An engine with the batching and watchdog settings of ``cfg``."""
        wait_ms = cfg.max_wait_ms
        if wait_ms is None:  # auto: batching pays on a GPU; on the CPU waiting only delays
            runtime = runtime_name(model)
            wait_ms = 0.0 if runtime.endswith("-cpu") else GPU_WAIT_MS
        return cls(
            model,
            max_batch=cfg.max_batch,
            max_wait_ms=wait_ms,
            timeout_s=cfg.infer_timeout_s,
            max_restarts=cfg.max_restarts,
            restart_window_s=cfg.restart_window_s,
        )

    # -- lifecycle ---------------------------------------------------------------------
    async def __aenter__(self) -> AffectEngine:
        self._enter_once()
        self._running = True
        self._start_worker()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._running = False
        self._queue.put(_STOP)
        thread = self._thread
        if thread is not None:
            # Bounded: a hung model call must not delay shutdown (the thread is a daemon).
            wait_s = min(self.timeout_s, STOP_WAIT_S)
            await asyncio.to_thread(thread.join, wait_s)
            if thread.is_alive():
                logger.warning("affect worker did not stop within %.1f s (hung model call)", wait_s)
        while True:  # answer whatever is still queued
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Request) and not item.future.done():
                item.future.set_result(_nan_rows(len(item.crops)))

    def _start_worker(self) -> None:
        gen = self._generation
        self._thread = threading.Thread(
            target=self._worker_loop, args=(gen,), name=f"affect-worker-{gen}", daemon=True
        )
        self._thread.start()

    # -- public API --------------------------------------------------------------------
    @property
    def stats(self) -> EngineStats:
        """A snapshot of the counters."""
        with self._lock:
            return replace(self._stats)

    @property
    def degraded(self) -> bool:
        return self._stats.degraded

    async def infer(self, crops: np.ndarray) -> np.ndarray:
        """Valence and arousal of each crop.

        Args:
            crops: (N, S, S) uint8 grayscale aligned face crops, S = the model's
                ``input_size``; N may be 0.

        Returns:
            (N, 2) float32 [valence, arousal]; rows are NaN where the model failed,
            returned non-finite values, or did not answer in time.

        Raises:
            ValueError: ``crops`` has the wrong shape or dtype.
            ModelError: the engine is not running (use ``async with``).
        """
        arr = np.asarray(crops)
        if arr.ndim != 3 or arr.shape[1:] != (self._size, self._size) or arr.dtype != np.uint8:
            raise ValueError(
                f"expected crops of shape (N, {self._size}, {self._size}) uint8, got "
                f"{arr.shape} {arr.dtype}"
            )
        n = arr.shape[0]
        if n == 0:
            return np.zeros((0, 2), np.float32)
        if not self._running:
            raise ModelError("AffectEngine is not running (use `async with engine:`)")
        now = time.monotonic()
        with self._lock:
            self._stats.calls += 1
            self._stats.faces += n
            if self._stats.degraded and now < self._degraded_until:
                self._stats.skipped_faces += n
                return _nan_rows(n)
            task = asyncio.current_task()
            caller = id(task) if task is not None else 0
            self._callers[caller] = now
            if len(self._callers) > 64:  # bound memory when callers are short-lived tasks
                self._callers = {
                    c: t for c, t in self._callers.items() if now - t <= ACTIVE_CALLER_S
                }
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[np.ndarray] = loop.create_future()
        req = _Request(arr, fut, loop, caller, self._generation)
        self._queue.put(req)
        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for returns an answer that
            # arrives in the same loop turn as a cancellation, and the cancellation is lost.
            async with asyncio.timeout(self.timeout_s):
                return await fut
        except TimeoutError:
            self._on_timeout(req)
            return _nan_rows(n)

    # -- watchdog ----------------------------------------------------------------------
    def _on_timeout(self, req: _Request) -> None:
        now = time.monotonic()
        with self._lock:
            self._stats.timeouts += 1
            self._stats.failed_faces += len(req.crops)
            if req.generation != self._generation or not self._running:
                return  # this hang was already handled by another caller's timeout
            self._generation += 1
            self._stats.restarts += 1
            restarts = self._restarts.record()
            storm = self._restarts.storm
            if storm:
                self._stats.degraded = True
                self._degraded_until = now + self.degraded_retry_s
        if storm:
            logger.error(
                "affect model hung %d times within %.0f s: stage degraded, faces get no "
                "VA for %.0f s before the model is tried again",
                restarts,
                self.restart_window_s,
                self.degraded_retry_s,
            )
        else:
            logger.warning(
                "affect model call did not answer within %.1f s: worker restarted",
                self.timeout_s,
            )
        self._start_worker()

    # -- worker ------------------------------------------------------------------------
    def _should_wait(self, batch: list[_Request]) -> bool:
        if self.max_wait_s <= 0:
            return False
        now = time.monotonic()
        in_batch = {r.caller for r in batch}
        with self._lock:
            for caller, seen in list(self._callers.items()):
                if now - seen > ACTIVE_CALLER_S:
                    del self._callers[caller]
                elif caller not in in_batch:
                    return True
        return False

    def _collect(self, first: _Request, carry: list[Any]) -> list[_Request]:
        batch = [first]
        n = len(first.crops)
        deadline = time.monotonic() + self.max_wait_s
        while n < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                if not self._should_wait(batch):
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if item is _STOP or n + len(item.crops) > self.max_batch:
                carry.append(item)
                break
            batch.append(item)
            n += len(item.crops)
        return batch

    def _worker_loop(self, generation: int) -> None:
        carry: list[Any] = []
        failures = 0
        # Each worker has its own staging buffer: an abandoned (hung) worker may still
        # be reading its batch.
        stage = np.empty((self.max_batch, self._size, self._size), np.uint8)
        while True:
            if generation != self._generation:  # superseded while we were hung
                for item in carry:
                    self._queue.put(item)
                return
            item = carry.pop() if carry else self._queue.get()
            if item is _STOP:
                return
            batch = self._collect(item, carry)
            results, failed = self._run(batch, stage)
            if failed:
                failures += 1
            for req, rows in zip(batch, results, strict=True):
                # RuntimeError: the caller's loop is closed, nobody waits any more.
                with contextlib.suppress(RuntimeError):
                    req.loop.call_soon_threadsafe(_deliver, req.future, rows)
            if failed:
                self._failure_log.log(
                    logger,
                    logging.WARNING,
                    "affect model failed on a batch (%d failures so far): %s",
                    failures,
                    failed,
                )

    def _run(self, batch: list[_Request], stage: np.ndarray) -> tuple[list[np.ndarray], str]:
        total = sum(len(r.crops) for r in batch)
        if len(batch) == 1:
            x = batch[0].crops
        else:  # total <= max_batch here: the stage buffer holds it
            x = np.concatenate([r.crops for r in batch], out=stage[:total])
        out = _nan_rows(total)
        error = ""
        nonfinite = 0
        for start in range(0, total, self.max_batch):
            chunk = x[start : start + self.max_batch]
            try:
                va = np.asarray(self.model.predict(chunk), dtype=np.float32)
                if va.shape != (len(chunk), 2):
                    raise ModelError(f"expected output of shape ({len(chunk)}, 2), got {va.shape}")
            except Exception as err:  # supervisor: any model failure becomes NaN rows
                error = f"{type(err).__name__}: {err}"
                with self._lock:
                    self._stats.model_errors += 1
                    self._stats.failed_faces += len(chunk)
                continue
            finite = np.isfinite(va).all(axis=1)
            va[~finite] = np.nan
            nonfinite += int((~finite).sum())
            out[start : start + len(chunk)] = va
        with self._lock:
            self._stats.batches += 1
            self._stats.largest_batch = max(self._stats.largest_batch, total)
            self._stats.nonfinite_faces += nonfinite
            if not error and self._stats.degraded:
                self._stats.degraded = False
                logger.info("affect model answers again: stage no longer degraded")
        results = []
        pos = 0
        for r in batch:
            results.append(out[pos : pos + len(r.crops)])
            pos += len(r.crops)
        return results, error
