"""The one event-loop bootstrap of the live runtime (``streamer run``, cluster actors).

``asyncio.run`` joins the default executor's threads when it ends; a thread hung in a
stage (a detector call that never returns) would then block the exit forever. A live
run's loop is closed without that join, and :func:`stuck_threads` tells the caller
which threads would still hold the process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

LEFTOVER_TASKS_S = 1.0  # how long tasks still pending at the end get to finish (s)


def run_in_fresh_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to its end in a new event loop that never waits for stuck threads."""
    loop = asyncio.new_event_loop()
    executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="asyncio")
    loop.set_default_executor(executor)
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            _cancel_leftovers(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
            loop.close()


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel the tasks still pending (a library's housekeeping task, say) and give them
    LEFTOVER_TASKS_S to end, as ``asyncio.run`` does but bounded: a task destroyed while
    pending is a "Task was destroyed but it is pending!" line after the run's summary."""
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.wait(pending, timeout=LEFTOVER_TASKS_S))
    for task in pending:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: the run already reported what mattered


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
