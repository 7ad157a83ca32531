"""`bench cameras` tells a stalled test server from a slow analyzer.

gst-rtsp-server's shared media now and then stalls when several clients set it up at
once. Such a run says nothing about the analyzer and is measured again; a run that
decoded too few frames without stalling (decoding could not keep up) is a result and
must never be explained away.
"""

from __future__ import annotations

from typing import Any

from streamer.bench.cameras import server_stalled, verdict


def _run(cameras: int, decoded: int, stalls: int, skipped: int = 0) -> dict[str, Any]:
    return {
        "cameras": cameras,
        "duration_s": 20.0,
        "frames_decoded": decoded,
        "frames_skipped": skipped,
        "stalls": stalls,
        "reconnects": stalls,
        "latency_ms": {"p50": 10.0, "p95": 20.0},
        "detector_runs": 0,
        "detections_deferred": 0,
        "ms_per_frame_by_stage": {},
    }


def test_a_run_whose_sources_stalled_with_few_frames_met_a_stalled_server() -> None:
    # The run seen in this project: 6 cameras, 18 frames decoded in 20 s, 10 stalls.
    why = server_stalled(_run(6, 18, 10))
    assert why is not None and "18 of about 1800 frames" in why


def test_a_shortfall_without_stalls_is_a_result_not_a_void_run() -> None:
    run = _run(16, 700, 0)  # decoding could not keep up: no stall
    assert server_stalled(run) is None
    assert verdict(run, 0.95, 100.0)["decoded_share"] == round(700 / 4800, 4)  # reported


def test_stalls_with_most_frames_delivered_are_the_analyzers_to_judge() -> None:
    assert server_stalled(_run(12, 3500, 2)) is None
