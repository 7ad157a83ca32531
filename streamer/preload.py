"""Slow imports started in the background, off the path to the first result.

Some dependencies are costly to import and needed only a little later: filterpy (about
a second: its package imports ``scipy.stats``) is first used when a track is confirmed,
several frames into a stream. :func:`start` begins such an import in a daemon thread
while the caller goes on (decoding and detection release the GIL, so the import runs
on the other core); :func:`require` waits for it and returns the module. Each module is
imported at most once per process, as any import::

    preload.start("filterpy.kalman")        # when a camera starts
    kalman = preload.require("filterpy.kalman")   # when the first track is confirmed
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
import time
from types import ModuleType

logger = logging.getLogger(__name__)

__all__ = ["require", "start"]

_lock = threading.Lock()
_threads: dict[str, threading.Thread] = {}
_errors: dict[str, BaseException] = {}


def _load(name: str) -> None:
    t0 = time.perf_counter()
    try:
        importlib.import_module(name)
    except BaseException as err:  # kept for require(), which re-raises it in the caller
        _errors[name] = err
        return
    logger.debug("imported %s in the background in %.3f s", name, time.perf_counter() - t0)


def start(name: str) -> None:
    """Begin importing ``name`` in a background thread (no-op if already done or begun)."""
    with _lock:
        if name in sys.modules or name in _threads:
            return
        thread = threading.Thread(target=_load, args=(name,), name=f"import-{name}", daemon=True)
        _threads[name] = thread
    thread.start()


def require(name: str) -> ModuleType:
    """The module ``name``, waiting for a background import of it if one is running.

    Raises:
        ImportError: the module cannot be imported (the error of the background import).
    """
    with _lock:
        thread = _threads.get(name)
    if thread is not None:
        thread.join()
        err = _errors.pop(name, None)
        if err is not None:
            raise err
    return importlib.import_module(name)
