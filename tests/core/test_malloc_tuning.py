"""The live runtime's glibc malloc settings (``streamer.runtime.memory``).

Checked in a fresh interpreter each: whether a freed large block raised glibc's mmap
threshold decides whether the next frame-sized block is mapped on its own (handed back
to the system when freed) or carved out of a heap that fragments.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

PROBE = """
import ctypes, json, sys
from streamer.runtime.memory import tune_malloc
done = tune_malloc()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
big = libc.malloc(8 << 20)  # freed: glibc's own rule raises its threshold to 8 MB
libc.free(big)
frame = libc.malloc(900 * 1024)  # a decoded 640x480 frame
size_field = ctypes.c_size_t.from_address(frame - ctypes.sizeof(ctypes.c_size_t)).value
print(json.dumps({"done": done, "mmapped": bool(size_field & 2)}))
"""


def _probe(**env: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**os.environ, **env},
    )
    result: dict[str, object] = json.loads(proc.stdout)
    return result


pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)


def test_frame_sized_blocks_stay_mapped_after_tuning() -> None:
    tuned = _probe()
    assert tuned["done"] == {"arena_max": 2, "mmap_threshold": 256 * 1024}
    assert tuned["mmapped"] is True
    # Without the tuning glibc's dynamic threshold puts the frame in a heap.
    assert _probe(STREAMER_MALLOC_TUNING="0") == {"done": {}, "mmapped": False}


def test_glibc_environment_settings_win() -> None:
    assert _probe(MALLOC_ARENA_MAX="4")["done"] == {}
