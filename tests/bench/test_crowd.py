"""``streamer bench crowd`` on the 9-face mosaic (the ``crowd9`` fixture)."""

from __future__ import annotations

from pathlib import Path


def test_bench_crowd_ceiling_run_does_all_but_the_va_network(crowd9: Path) -> None:
    """`bench crowd`'s `without_va` run is the pipeline with a VA network that costs
    nothing: it must find and track the same faces as the measured run (only the VA
    values differ), or its fps would not be the ceiling it is reported as."""
    from streamer.bench.crowd import crowd_bench
    from streamer.config import AppConfig

    result = crowd_bench(AppConfig(), crowd9, repeat=1, reference=False)
    free = result["without_va"]
    assert free["faces_per_frame"] == result["faces_per_frame"] > 7.0  # 9 once confirmed
    assert free["fps"] > 0 and free["fps_to_decode_only_pairs"]
    assert result["fps_to_decode_only"] > 0 and free["fps_to_decode_only"] > 0
