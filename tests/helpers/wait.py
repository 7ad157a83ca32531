"""Waiting in tests: poll a condition until a deadline (a bound, never a timing assertion).

* :func:`wait_until_sync` blocks the calling thread (tests without an event loop);
* :func:`wait_until` and :func:`wait_until_async` yield to the event loop between looks,
  the second for a coroutine predicate.

Each returns the predicate's first true value and fails the test after ``timeout_s``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

SLACK_S = 60.0  # deadline for what takes seconds on an idle machine (CI is busy)
POLL_S = 0.02  # how often a condition is looked at


def _timed_out(timeout_s: float, what: str, last: object = None) -> AssertionError:
    seen = "" if last is None else f" (last: {last!r})"
    return AssertionError(f"timed out after {timeout_s} s waiting for {what}{seen}")


def wait_until_sync(
    predicate: Callable[[], T | None],
    timeout_s: float = SLACK_S,
    what: str = "condition",
    poll_s: float = POLL_S,
) -> T:
    """Call ``predicate`` every ``poll_s`` until it returns something true (blocking)."""
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise _timed_out(timeout_s, what)
        time.sleep(poll_s)
    return value  # true, so not None


async def wait_until(
    predicate: Callable[[], T | None],
    timeout_s: float = SLACK_S,
    what: str = "condition",
    poll_s: float = POLL_S,
) -> T:
    """:func:`wait_until_sync` that sleeps on the event loop between looks."""
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise _timed_out(timeout_s, what)
        await asyncio.sleep(poll_s)
    return value  # true, so not None


async def wait_until_async(
    predicate: Callable[[], Awaitable[T | None]],
    timeout_s: float = SLACK_S,
    what: str = "condition",
    poll_s: float = POLL_S,
) -> T:
    """:func:`wait_until` for a coroutine predicate; the timeout names its last value."""
    deadline = time.monotonic() + timeout_s
    while not (last := await predicate()):
        if time.monotonic() > deadline:
            raise _timed_out(timeout_s, what, last)
        await asyncio.sleep(poll_s)
    return last  # true, so not None
