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


def run_in_fresh_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to its end in a new event loop that never waits for stuck threads."""
    loop = asyncio.new_event_loop()
    executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="asyncio")
    loop.set_default_executor(executor)
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
            loop.close()


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
