"""Episodes on a real clip (single_face.mp4: neutral, then smiling), end to end."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streamer.messages import DESCRIPTION_SCHEMA, EPISODE_SCHEMA, MOOD_SCHEMA, VA_SCHEMA
from streamer.testing.ollama import FakeOllama

SMILE = """\
episodes:
  rules:
    - name: smiling
      when: {valence_above: 0.3}
      for_s: 0.5
mood:
  interval_s: 1
"""


def streamer(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamer", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )


def records(path: Path, schema: str) -> list[dict[str, Any]]:
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in recs if r["schema"] == schema]


@pytest.fixture(scope="module")
def smile_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = tmp_path_factory.mktemp("cfg") / "smile.yaml"
    cfg.write_text(SMILE)
    return cfg


@pytest.fixture(scope="module")
def two_replays(
    store_path: Callable[[str], Path], smile_config: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("replays")
    paths = (out / "a.jsonl", out / "b.jsonl")
    for p in paths:
        proc = streamer(
            "replay", str(store_path("single_face.mp4")), "--no-progress", "--out", str(p),
            "--config", str(smile_config),
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    return paths


def test_one_episode_in_the_smiling_part(two_replays: tuple[Path, Path]) -> None:
    a, _ = two_replays
    eps = records(a, EPISODE_SCHEMA)
    assert [e["state"] for e in eps] == ["started", "ended"]
    started, ended = eps
    assert started["id"] == ended["id"] and started["rule"] == "smiling"
    va = records(a, VA_SCHEMA)
    # The neutral part: the first half second, raw valence near zero.
    neutral = [r for r in va if r["t"] < 0.5]
    assert neutral and max(r["valence_raw"] for r in neutral) < 0.3
    assert started["t_start"] >= 0.5
    assert started["t"] - started["t_start"] >= 0.5
    smiling = [r for r in va if started["t_start"] <= r["t"] <= ended["t_end"]]
    assert min(r["valence"] for r in smiling) > 0.3
    assert ended["reason"] == "end_of_stream"
    assert ended["valence"]["min"] > 0.3


def test_two_replays_give_the_same_episodes(two_replays: tuple[Path, Path]) -> None:
    a, b = two_replays
    assert records(a, EPISODE_SCHEMA) == records(b, EPISODE_SCHEMA)
    assert records(a, MOOD_SCHEMA) == records(b, MOOD_SCHEMA)


def test_episodes_cli_on_the_jsonl_gives_the_replays_episodes(
    two_replays: tuple[Path, Path], smile_config: Path
) -> None:
    a, _ = two_replays
    proc = streamer("episodes", str(a), "--config", str(smile_config), "--json")
    assert proc.returncode == 0, proc.stderr
    written = [ln for ln in a.read_text().splitlines() if EPISODE_SCHEMA in ln]
    assert proc.stdout.splitlines() == written
    table = streamer("episodes", str(a), "--config", str(smile_config))
    assert table.returncode == 0, table.stderr
    assert "smiling" in table.stdout and "end_of_stream" in table.stdout


def test_mood_of_the_room(two_replays: tuple[Path, Path]) -> None:
    a, _ = two_replays
    moods = records(a, MOOD_SCHEMA)
    assert moods[0]["count"] == 1 and moods[-1]["count"] == 0
    assert any(m["quadrant"] == "excited" for m in moods)
    # Every interval_s while the face is tracked; the last says the room emptied.
    steps = [b["t"] - a["t"] for a, b in itertools.pairwise(moods[:-1])]
    assert steps and min(steps) >= 1.0 - 1e-6
    # The first mood comes from a sure sample, never from the new track's first ones.
    sure = [
        r
        for r in records(a, VA_SCHEMA)
        if r["valence_raw"] is not None and max(r["variance"]) <= 0.05
    ]
    first = records(a, VA_SCHEMA)[0]
    assert max(first["variance"]) > 0.05, "the clip's track starts unsure (so this can fail)"
    assert moods[0]["frame"] >= sure[0]["frame"]


def test_episodes_cli_bad_input(tmp_path: Path, smile_config: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"schema": "streamer.va/1"}\nnot json\n')
    proc = streamer("episodes", str(bad), "--config", str(smile_config))
    assert proc.returncode == 1
    assert f"error: {bad}:1: a streamer.va/1 record: camera must be a text" in proc.stderr
    assert "Traceback" not in proc.stderr
    bad.write_text('\n{"schema": "other"}\nnot json\n')
    proc = streamer("episodes", str(bad), "--config", str(smile_config))
    assert proc.returncode == 1 and f"{bad}:3: not valid JSON" in proc.stderr
    no_rules = tmp_path / "none.yaml"
    no_rules.write_text("mood: {interval_s: 1}\n")
    proc = streamer("episodes", str(bad), "--config", str(no_rules))
    assert proc.returncode == 1 and "no `episodes:` section" in proc.stderr


def test_ended_episode_is_described_with_its_id(
    store_path: Callable[[str], Path], tmp_path: Path
) -> None:
    with FakeOllama("happy") as fake:
        cfg = tmp_path / "llm.yaml"
        cfg.write_text(
            SMILE + f"llm:\n  host: {fake.url}\n  model: llama3.2\n  interval_s: 60\n"
            "  warmup_s: 60\n  drain_timeout_s: 20\n"
        )
        out = tmp_path / "out.jsonl"
        proc = streamer(
            "replay", str(store_path("single_face.mp4")), "--no-progress", "--out", str(out),
            "--config", str(cfg),
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    (ended,) = [e for e in records(out, EPISODE_SCHEMA) if e["state"] == "ended"]
    descs = [d for d in records(out, DESCRIPTION_SCHEMA) if d.get("episode_id") == ended["id"]]
    assert sorted(d["source"] for d in descs) == ["fallback", "llm"]
    fallback = next(d for d in descs if d["source"] == "fallback")
    assert fallback["text"].startswith("Smiling for 1.")
    assert len({d["id"] for d in descs}) == 1


def test_face_leaving_ends_the_episode_as_track_lost(
    store_path: Callable[[str], Path], tmp_path: Path
) -> None:
    """face_noface.mov: the face leaves at 2.4 s, long before the clip ends."""
    cfg = tmp_path / "present.yaml"
    cfg.write_text(
        "episodes:\n  rules:\n    - {name: present, when: {valence_above: -1.0}, for_s: 0.5}\n"
    )
    out = tmp_path / "fnf.jsonl"
    proc = streamer(
        "replay", str(store_path("face_noface.mov")), "--no-progress", "--out", str(out),
        "--config", str(cfg),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    eps = records(out, EPISODE_SCHEMA)
    assert [(e["state"], e["reason"]) for e in eps] == [("started", None), ("ended", "track_lost")]
    last_va = max(r["t"] for r in records(out, VA_SCHEMA))
    assert eps[1]["t_end"] == last_va and abs(last_va - 2.4) <= 0.5
    (lost,) = [r for r in records(out, "streamer.event/1") if r["event"] == "lost"]
    assert "reason" not in lost, "the tracker lost it: not the end of the stream"
