"""Lossless end to end: an LLM that is slow or hangs never changes or loses a VA line.

A replay with an LLM whose server answers every request 2 s late, and one whose server
holds every request (a hang; the describer's timeout ends each), must write exactly the
same records as a replay without an LLM once the description lines are dropped; and the
number of VA lines equals the faces counted by ``streamer bench replay``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from streamer.messages import DESCRIPTION_SCHEMA, VA_SCHEMA
from streamer.testing.ollama import FakeOllama

STREAMER = [sys.executable, "-m", "streamer"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*STREAMER, *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "COLUMNS": "160"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _llm_config(tmp_path: Path, host: str) -> Path:
    cfg = tmp_path / "llm.yaml"
    cfg.write_text(
        "llm:\n"
        f"  host: {host}\n"
        "  timeout_s: 3\n"
        "  interval_s: 0.5\n"
        "  min_gap_s: 0.25\n"
        "  warmup_s: 0.2\n"
        "  max_concurrency: 2\n"
        "  drain_timeout_s: 10\n"
    )
    return cfg


def _without_descriptions(path: Path) -> list[str]:
    return [
        line
        for line in path.read_text().splitlines()
        if json.loads(line)["schema"] != DESCRIPTION_SCHEMA
    ]


@pytest.fixture(scope="module")
def video(store_path: Callable[[str], Path]) -> Path:
    return store_path("single_face.mp4")


@pytest.fixture(scope="module")
def baseline(video: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("base") / "base.jsonl"
    _run("replay", str(video), "--no-progress", "--out", str(out))
    return out


def test_va_lines_equal_faces_counted_by_bench_replay(video: Path, baseline: Path) -> None:
    bench = json.loads(_run("bench", "replay", str(video), "--repeat", "1").stdout)
    va = [line for line in baseline.read_text().splitlines() if f'"{VA_SCHEMA}"' in line]
    assert bench["faces"] > 0
    assert len(va) == bench["faces"]
    frames_with_va = {json.loads(line)["frame"] for line in va}
    assert len(frames_with_va) <= bench["frames"]


@pytest.mark.parametrize("mode", ["delay", "slow"])
def test_slow_or_hung_llm_changes_no_record(
    mode: str, video: Path, baseline: Path, tmp_path: Path
) -> None:
    with FakeOllama(mode, delay_s=2.0) as server:
        out = tmp_path / "llm.jsonl"
        _run(
            "replay",
            str(video),
            "--no-progress",
            "--out",
            str(out),
            "--config",
            str(_llm_config(tmp_path, server.url)),
        )
        asked = server.count("/api/chat")
    assert asked > 0, "the describer never asked the LLM"
    descriptions = [
        json.loads(line)
        for line in out.read_text().splitlines()
        if json.loads(line)["schema"] == DESCRIPTION_SCHEMA
    ]
    assert descriptions, "no description at all (not even the fallback)"
    if mode == "delay":
        assert any(d["source"] == "llm" for d in descriptions), "late answers never joined"
    else:
        assert all(d["source"] == "fallback" for d in descriptions)
    assert _without_descriptions(out) == _without_descriptions(baseline)
