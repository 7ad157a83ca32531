"""Replay with the LLM describer on: descriptions join the JSONL, VA is untouched.

The LLM is a real HTTP server on loopback speaking the Ollama API
(:mod:`streamer.testing.ollama`); "refused" is a port where nothing listens.
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
from streamer.testing.net import free_port
from streamer.testing.ollama import FakeOllama


def _replay(video: Path, out: Path, config: Path | None) -> None:
    cmd = [
        sys.executable,
        "-m",
        "streamer",
        "replay",
        str(video),
        "--no-progress",
        "--out",
        str(out),
    ]
    if config is not None:
        cmd += ["--config", str(config)]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "COLUMNS": "160"},
    )
    assert proc.returncode == 0, proc.stderr


def _llm_config(tmp_path: Path, host: str) -> Path:
    cfg = tmp_path / "llm.yaml"
    cfg.write_text(
        "llm:\n"
        f"  host: {host}\n"
        "  model: llama3.2\n"
        "  timeout_s: 5\n"
        "  interval_s: 0.5\n"
        "  min_gap_s: 0.25\n"
        "  warmup_s: 0.2\n"
        "  drain_timeout_s: 20\n"
    )
    return cfg


def _lines(path: Path, schema: str) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if json.loads(ln)["schema"] == schema]


@pytest.fixture(scope="module")
def baseline(store_path: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("base") / "base.jsonl"
    _replay(store_path("single_face.mp4"), out, None)
    return out


@pytest.mark.parametrize("server", ["happy", "refused", "error500"])
def test_descriptions_join_replay_and_va_is_unchanged(
    server: str, baseline: Path, store_path: Callable[[str], Path], tmp_path: Path
) -> None:
    fake = None
    if server == "refused":
        host = f"http://127.0.0.1:{free_port()}"
    else:
        fake = FakeOllama(server).start()
        host = fake.url
    try:
        out = tmp_path / "llm.jsonl"
        _replay(store_path("single_face.mp4"), out, _llm_config(tmp_path, host))
    finally:
        if fake is not None:
            fake.stop()
    # The video side is byte-for-byte what it is without an LLM.
    assert _lines(out, VA_SCHEMA) == _lines(baseline, VA_SCHEMA)
    descs = [json.loads(ln) for ln in _lines(out, DESCRIPTION_SCHEMA)]
    fallbacks = [d for d in descs if d["source"] == "fallback"]
    assert fallbacks, "a deterministic description goes out at once"
    for d in descs:
        assert d["track_id"] == 1 and d["text"]
    llm = [d for d in descs if d["source"] == "llm"]
    if server == "happy":
        assert llm, "the LLM's answers follow"
        assert {d["id"] for d in llm} <= {d["id"] for d in fallbacks}
    else:
        assert llm == []
