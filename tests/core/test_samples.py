"""``streamer.samples.RecentSamples``: the latest observations, bounded and flat."""

from __future__ import annotations

import tracemalloc

from streamer.samples import RecentSamples


def test_keeps_the_latest_in_order_and_hands_each_out_once() -> None:
    s = RecentSamples(maxlen=4)
    new, seen = s.since(0)
    assert (new, seen, len(s)) == ([], 0, 0)
    for v in range(1, 4):
        s.add(float(v))
    new, seen = s.since(0)
    assert (new, seen) == ([1.0, 2.0, 3.0], 3)
    for v in range(4, 11):
        s.append(float(v))
    assert list(s) == [7.0, 8.0, 9.0, 10.0] and len(s) == 4
    new, seen = s.since(seen)  # a reader that came back late sees the newest maxlen
    assert (new, seen) == ([7.0, 8.0, 9.0, 10.0], 10)
    s.add(11.0)
    assert s.since(seen) == ([11.0], 11)
    assert s.since(11) == ([], 11)


def test_memory_is_taken_at_once_not_while_the_window_fills() -> None:
    """A long run's statistics windows must not show up as slow memory growth."""
    tracemalloc.start()
    try:
        s = RecentSamples(maxlen=10_000)
        before = tracemalloc.get_traced_memory()[0]
        for i in range(10_000):
            s.add(i * 0.001)  # distinct floats: a deque of them would hold 10,000 objects
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 4096, grown
    assert len(s) == 10_000
