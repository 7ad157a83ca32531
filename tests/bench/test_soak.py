"""``streamer bench soak``: scheduled faults over real cameras, broker and LLM server.

The short run (default suite) checks the report's invariants on a fraction of a minute;
the ``soak``-marked run does the full 10 minutes with every fault kind several times.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from streamer.bench.soak import CAMERAS, SCHEDULE


def _soak(minutes: float, store_path: Any, *options: str) -> dict[str, Any]:
    """The report of a real ``streamer bench soak`` (it starts RTSP cameras and a broker:
    its tests are marked ``rtsp`` and ``mqtt``). A run past its time is stopped with
    SIGABRT first, so that the failure shows each thread's stack (``-X faulthandler``)
    after the end of its log; then its cameras, broker and LLM server (its session)."""
    clip: Path = store_path("single_face.mp4")
    cmd = [sys.executable, "-X", "faulthandler", "-m", "streamer", "bench", "soak"]
    limit_s = minutes * 60 + 240
    with subprocess.Popen(
        [*cmd, "--minutes", str(minutes), "--clip", str(clip), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "160"},
        start_new_session=True,
    ) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=limit_s)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            try:
                stdout, stderr = proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:  # its servers hold the pipes open
                os.killpg(proc.pid, signal.SIGKILL)
                stdout, stderr = proc.communicate()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"the soak ran past {limit_s:.0f} s; its stderr ends:\n{stderr[-12000:]}")
    assert proc.returncode == 0, stderr[-4000:]
    assert "Traceback" not in stderr, stderr[-4000:]
    report: dict[str, Any] = json.loads(stdout)
    return report


def _check_invariants(r: dict[str, Any]) -> None:
    faults = r["faults"]
    assert faults["injected"] >= 1
    assert faults["recovered"] == faults["injected"], faults["log"]
    assert r["nan_published"] == 0
    va = r["va"]
    assert va["analysed"] > 0 and va["published"] > 0
    assert va["unexplained"] == 0, va
    assert va["nonfinite_analysed"] == 0
    assert va["seen_on_broker"] <= va["published"]
    for cam in CAMERAS:
        assert r["frames_analysed"][cam] > 0
    # The damaged camera's corrupt packets are detected and counted, not analysed.
    assert r["corrupt_packets"]["detected"][CAMERAS[1]] > 0
    for target, row in r["recover_s"].items():
        if row["n"]:
            assert row["max"] is not None and row["p95"] is not None, target
            assert row["p95"] <= row["max"]
    assert r["fds"]["end"] - r["fds"]["start"] <= 8, r["fds"]
    assert r["threads"]["end"] - r["threads"]["start"] <= 4, r["threads"]
    assert r["rss_mb"]["samples"] >= 3
    # The resident memory by kind adds up to the RSS (read in one sample, not one read).
    kinds = r["rss_mb"]["by_kind"]
    assert set(kinds) == {"anon", "file", "shmem"}
    total_end = sum(k["end"] for k in kinds.values())
    assert abs(total_end - r["rss_mb"]["end"]) < 0.05 * r["rss_mb"]["end"], (kinds, r["rss_mb"])
    assert kinds["anon"]["end"] > 0 and kinds["anon"]["slope_mb_per_min"] is not None
    # Python's small objects: the arenas held, and what is in use in them (tracing
    # hooks the allocator, and CPython then gives no figures).
    pym = r["rss_mb"]["pymalloc"]
    if r["tracemalloc"].get("frames"):
        assert pym is None
    else:
        assert 0 < pym["used_end"] <= pym["arenas_end"] <= pym["arenas_highwater"], pym
        assert pym["arenas_end"] < kinds["anon"]["end"]
    # CPython's full collections in the measured part (the live run's periodic tidy's).
    gcs = r["gc"]
    if gcs["full_collections"]:
        assert gcs["max_ms"] >= gcs["median_ms"] >= 0, gcs
    else:
        assert gcs["freed"] == 0 and gcs["max_ms"] is None, gcs


@pytest.mark.rtsp
@pytest.mark.mqtt
@pytest.mark.timeout(420)
def test_short_soak_report_holds_its_invariants(store_path: Any) -> None:
    report = _soak(0.6, store_path, "--trace-frames", "8")
    _check_invariants(report)
    assert report["faults"]["log"][0]["kind"] == SCHEDULE[0][0]
    # Allocation growth by site, the bench's own apart from the analyzer's.
    traced = report["tracemalloc"]
    assert traced["frames"] == 8 and traced["snapshots_failed"] == 0, traced
    assert traced["snapshots"] and traced["top_growth"], traced
    assert {row["owner"] for row in traced["top_growth"]} <= {"bench", "analyzer"}
    assert set(report["verdict"]["checks"]) >= {"rss_slope_below_0.05_mb_per_min", "fds_equal"}
    assert report["verdict"]["pass"] is None  # tracing distorts RSS: not judged


@pytest.mark.soak
@pytest.mark.rtsp
@pytest.mark.mqtt
@pytest.mark.timeout(1200)
def test_ten_minute_soak(store_path: Any) -> None:
    """Ten minutes of faults after a two-minute warm-up: memory grows under 0.2 MB a
    minute (0.05 is the 60-minute target; ten minutes measure it less precisely) and
    no thread or fd is left behind."""
    report = _soak(10, store_path, "--warmup", "2")
    _check_invariants(report)
    kinds = {kind for kind, _, _ in SCHEDULE}
    assert set(report["faults"]["by_kind"]) == kinds
    assert all(row["injected"] >= 3 for row in report["faults"]["by_kind"].values())
    assert report["rss_mb"]["slope_mb_per_min"] < 0.2, report["rss_mb"]
    for counted in ("threads", "fds"):
        assert report[counted]["end"] == report[counted]["start"], report[counted]
    assert report["verdict"]["checks"]["native_threads_bounded"], report["os_threads"]
    # The live run's memory tidy: a full collection a minute (the dead MQTT sessions'
    # reference cycles freed), over the frozen start-up.
    assert report["gc"]["full_collections"] >= 7 and report["gc"]["freed"] > 0, report["gc"]
    assert report["gc"]["frozen_at_end"] > 0, report["gc"]


@pytest.mark.soak
@pytest.mark.rtsp
@pytest.mark.mqtt
@pytest.mark.timeout(1200)
def test_soak_without_faults_is_the_memory_baseline(store_path: Any) -> None:
    report = _soak(10, store_path, "--no-faults", "--warmup", "2")
    assert report["faults"]["injected"] == 0
    assert report["va"]["unexplained"] == 0 and report["va"]["published"] > 0
    assert report["rss_mb"]["slope_mb_per_min"] < 0.2, report["rss_mb"]
    for counted in ("threads", "fds"):
        assert report[counted]["end"] == report[counted]["start"], report[counted]
    assert report["verdict"]["checks"]["native_threads_bounded"], report["os_threads"]
