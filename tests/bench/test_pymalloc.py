"""The pymalloc probe of ``bench soak``: arenas held apart from the objects in them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from streamer.bench.pymalloc import pymalloc_stats

MB = 1 << 20


@pytest.mark.skipif(sys.implementation.name != "cpython", reason="pymalloc is CPython's")
def test_a_few_survivors_keep_their_arenas_resident() -> None:
    """What tracemalloc cannot see: objects freed, arenas kept by the few left in them."""
    before = pymalloc_stats()
    assert before is not None and before["used_bytes"] <= before["arena_bytes"]
    objs = [f"{i:0200d}" for i in range(100_000)]  # ~25 MB of 250-byte strings
    full = pymalloc_stats()
    assert full is not None
    assert full["arena_bytes"] - before["arena_bytes"] >= 20 * MB
    survivors = objs[::50]  # one in 50 kept, spread over every arena
    del objs
    sparse = pymalloc_stats()
    assert sparse is not None
    assert full["used_bytes"] - sparse["used_bytes"] >= 20 * MB  # the objects went
    assert sparse["arena_bytes"] - before["arena_bytes"] >= 20 * MB  # their arenas stayed
    assert sparse["free_bytes"] >= 20 * MB
    del survivors
    empty = pymalloc_stats()
    assert empty is not None
    assert empty["arena_bytes"] - before["arena_bytes"] <= 4 * MB  # all freed: returned


def test_no_pymalloc_no_figures() -> None:
    code = "from streamer.bench.pymalloc import pymalloc_stats; print(pymalloc_stats())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONMALLOC": "malloc"},
    )
    assert out.stdout.strip() == "None"
