"""Single-use async context managers: a second ``async with`` on one object is an error.

Objects such as the pipeline, the describer, the MQTT publisher and the affect engine
own tasks, subscriptions and threads that are set up once and torn down once; entering
one of them again (even after it exited) would reuse closed queues and stopped threads.
They inherit :class:`SingleUse` and call :meth:`SingleUse._enter_once` first thing in
``__aenter__``, which says so clearly::

    RuntimeError: Describer cannot be entered twice; create a new one

:func:`cancel_and_wait` is how they stop the tasks they own; :func:`stop_on_signals`
turns SIGINT/SIGTERM into an event while a run (or a lingering dashboard) waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger(__name__)


class SingleUse:
    """Mixin that refuses a second ``__aenter__`` (see the module docstring)."""

    _entered: bool = False

    def _enter_once(self) -> None:
        """Mark the object entered; raises on the second call.

        Raises:
            RuntimeError: the object was already entered once.
        """
        if self._entered:
            raise RuntimeError(f"{type(self).__name__} cannot be entered twice; create a new one")
        self._entered = True


async def cancel_and_wait(*tasks: asyncio.Task[Any]) -> None:
    """Cancel ``tasks``, wait until every one has ended, and raise the first error one
    of them ended with (their own cancellation is not an error).

    A cancellation of the *caller* while it waits is raised too, where ``with
    suppress(CancelledError): await task`` would swallow it and leave the caller running
    after it was told to stop.
    """
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    await asyncio.wait(tasks)
    for task in tasks:
        if not task.cancelled() and (err := task.exception()) is not None:
            raise err


__all__ = ["SingleUse", "cancel_and_wait"]


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event, enabled: bool = True) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop`` (main thread only); a second one is reported."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    if enabled and threading.current_thread() is threading.main_thread():

        def on_signal(sig: signal.Signals) -> None:
            if stop.is_set():
                logger.warning("%s again: already stopping", sig.name)
                return
            logger.info("%s: stopping", sig.name)
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, on_signal, sig)
                installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
