"""The one event-loop bootstrap of the live runtime (``streamer run``, cluster actors).

``asyncio.run`` joins the default executor's threads when it ends; a thread hung in a
stage (a detector call that never returns) would then block the exit forever. A live
run's loop is closed without that join, and :func:`stuck_threads` tells the caller
which threads would still hold the process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

CANCEL_WAIT_S = 5.0  # how long tasks left at the end get to finish their cancellation (s)


def run_in_fresh_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to its end in a new event loop that never waits for stuck threads."""
    loop = asyncio.new_event_loop()
    executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="asyncio")
    loop.set_default_executor(executor)
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            # As asyncio.run does: tasks still pending are cancelled and finish inside
            # the loop (an MQTT client disconnects there), never collected after it closed.
            loop.run_until_complete(_cancel_leftovers())
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
            loop.close()


async def _cancel_leftovers() -> None:
    """Cancel every other task of the loop and wait (bounded) for them to end."""
    me = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    for t in tasks:
        t.cancel()
    if tasks:
        done, pending = await asyncio.wait(tasks, timeout=CANCEL_WAIT_S)
        for t in done:
            if not t.cancelled() and t.exception() is not None:
                logger.debug("a task left at the end failed: %r", t.exception())
        if pending:
            logger.warning(
                "%d task(s) did not end within %.0f s of their cancellation: %s",
                len(pending),
                CANCEL_WAIT_S,
                ", ".join(sorted(t.get_name() for t in pending)),
            )


def stuck_threads(grace_s: float) -> list[str]:
    """Non-daemon threads still alive after ``grace_s`` (they would block the exit)."""
    deadline = time.monotonic() + grace_s
    for t in threading.enumerate():
        if t is not threading.main_thread() and not t.daemon:
            t.join(max(0.0, deadline - time.monotonic()))
    return [
        t.name
        for t in threading.enumerate()
        if t is not threading.main_thread() and not t.daemon and t.is_alive()
    ]
