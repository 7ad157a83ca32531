"""`bench cameras` tells a stalled test server from a slow analyzer.

gst-rtsp-server's shared media now and then stalls when several clients set it up at
once. Such a run says nothing about the analyzer and is measured again; a run that
decoded too few frames without stalling (decoding could not keep up) is a result and
must never be explained away.
"""

from __future__ import annotations

from typing import Any

from streamer.bench.cameras import rss_slopes, server_stalled, verdict


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


def test_at_an_analysis_rate_the_share_is_of_the_frames_due() -> None:
    # 12 cameras for 20 s at 15 fps, analysed at 5 fps: 2/3 of the frames are off the
    # grid by design; of the 1200 due, 60 were replaced while the analysis was busy.
    run = {**_run(12, 3600, 0, skipped=60), "frames_skipped_by_rate": 2400}
    run["rss_mb"] = {"before_sources": 300.0, "end": 540.0}
    got = verdict(run, 0.95, 100.0)
    assert got["analysed_share"] == 0.95 and got["pass"]
    assert got["frames_skipped_by_rate"] == 2400 and got["decoded_share"] == 1.0
    assert got["rss_per_camera_mb"] == 20.0


def test_rss_per_added_camera_between_counts() -> None:
    runs: list[dict[str, Any]] = [
        {"cameras": 4, "rss_mb": 400.0, "pass": True},
        {"cameras": 8, "rss_mb": 460.0, "pass": None},  # a void run: left out
        {"cameras": 8, "rss_mb": 480.0, "pass": True},
        {"cameras": 16, "rss_mb": 600.0, "pass": False},
    ]
    assert [s["mb_per_camera"] for s in rss_slopes(runs)] == [20.0, 15.0]
