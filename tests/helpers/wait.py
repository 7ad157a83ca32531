"""Waiting in tests: poll a condition until a deadline (a bound, never a timing assertion)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

POLL_S = 0.02  # how often a condition is looked at


async def wait_until(
    predicate: Callable[[], object],
    timeout_s: float = 15.0,
    what: str = "condition",
) -> None:
    """Poll ``predicate`` until it returns something true; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(POLL_S)


async def wait_until_async(
    predicate: Callable[[], Awaitable[T | None]],
    timeout_s: float = 15.0,
    what: str = "condition",
) -> T:
    """:func:`wait_until` for a coroutine predicate; returns its first true value."""
    deadline = time.monotonic() + timeout_s
    while not (last := await predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout_s} s waiting for {what} (last: {last!r})"
            )
        await asyncio.sleep(POLL_S)
    return last  # true, so not None
