"""Fuzzing as tests: seeded mutations of real clips through replay and a file camera.

Never a traceback, never a hang (a bound on each case), exit codes as documented
(0 clean, 1 error with nothing written, 3 damage skipped), output complete or absent.
The default corpus is small; the ``soak`` one runs every mutation on every clip.
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from streamer.errors import MediaError
from streamer.sources.config import CameraConfig
from streamer.sources.file import EXIT_CORRUPT, FileSource
from streamer.sources.live import LiveSource
from tests.sources.test_decode_core import flip_bytes

CASE_BOUND_S = 60.0  # each case through one source (seconds): a hang fails it


def truncate(src: Path, dst: Path, keep: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def damage_header(src: Path, dst: Path, seed: int) -> Path:
    """Flip bytes in the first 64 bytes and right after the ``moov`` box's tag."""
    data = bytearray(src.read_bytes())
    rng = random.Random(seed)
    moov = data.find(b"moov")
    for lo in (0, moov if moov > 0 else len(data) // 2):
        for _ in range(8):
            i = lo + rng.randrange(64)
            data[i] ^= 1 << rng.randrange(8)
    dst.write_bytes(bytes(data))
    return dst


Mutation = Callable[[Path, Path], Path]
SMALL: dict[str, Mutation] = {
    "flip-0.05%-start": lambda s, d: flip_bytes(s, d, 0.0005, seed=1, where=0.1),
    "flip-0.5%-mid": lambda s, d: flip_bytes(s, d, 0.005, seed=2, where=0.5),
    "flip-5%-end": lambda s, d: flip_bytes(s, d, 0.05, seed=3, where=0.9),
    "cut-10%": lambda s, d: truncate(s, d, 0.1),
    "cut-95%": lambda s, d: truncate(s, d, 0.95),
    "header": lambda s, d: damage_header(s, d, seed=4),
}
LARGE: dict[str, Mutation] = {
    f"flip-{share:g}-{where:g}-s{seed}": functools.partial(
        flip_bytes, share=share, seed=seed, where=where
    )
    for share in (0.0002, 0.001, 0.005, 0.02, 0.1)
    for where in (0.05, 0.3, 0.5, 0.7, 0.95)
    for seed in (0, 1)
}
LARGE.update({f"cut-{k:g}": functools.partial(truncate, keep=k) for k in (0.01, 0.3, 0.6, 0.99)})
LARGE.update({f"header-s{n}": functools.partial(damage_header, seed=n) for n in range(6)})
CLIPS = ("single_face.mp4", "face_noface.mov")


async def through_sources(path: Path) -> tuple[str, int, int]:
    """(outcome, frames) through replay's source and a file camera, each bounded in time."""

    async def replay_source() -> tuple[str, int]:
        src = FileSource(path)
        try:
            async with src:
                n = sum([1 async for _ in src])
        except MediaError:
            return "error", 0
        return ("damaged" if src.report.damaged else "clean"), n

    async def camera() -> int:
        cfg = CameraConfig(
            name="fuzz", url=str(path), realtime=False, backoff={"initial_s": 0.05, "max_s": 0.2}
        )
        async with LiveSource(cfg) as cam:
            n = 0
            async for _ in cam:
                n += 1
            return n

    outcome, n_replay = await asyncio.wait_for(replay_source(), CASE_BOUND_S)
    # A camera retries an unreadable file for ever: bound it, it must never raise.
    try:
        n_camera = await asyncio.wait_for(camera(), CASE_BOUND_S / 4)
    except TimeoutError:
        n_camera = -1
    return outcome, n_replay, n_camera


async def check_corpus(corpus: dict[str, Mutation], clip: Path, tmp: Path) -> list[str]:
    seen = []
    for name, mutate in corpus.items():
        bad = mutate(clip, tmp / f"{name}{clip.suffix}")
        outcome, n_replay, n_camera = await through_sources(bad)
        if outcome != "error":
            # The camera decodes the same file with the same core: same good frames.
            assert n_camera in (n_replay, -1), (name, n_replay, n_camera)
        seen.append(f"{name}:{outcome}")
    return seen


async def test_fuzz_corpus_through_replay_and_a_camera(
    store_path: Callable[[str], Path], tmp_path: Path
) -> None:
    seen = await check_corpus(SMALL, store_path("single_face.mp4"), tmp_path)
    assert len(seen) == len(SMALL)


@pytest.mark.soak
@pytest.mark.parametrize("clip", CLIPS)
async def test_fuzz_large_corpus(
    clip: str, store_path: Callable[[str], Path], tmp_path: Path
) -> None:
    seen = await check_corpus(LARGE, store_path(clip), tmp_path)
    assert len(seen) == len(LARGE)


@pytest.mark.parametrize("name", ["flip-0.5%-mid", "cut-10%", "header"])
def test_fuzz_replay_cli(name: str, store_path: Callable[[str], Path], tmp_path: Path) -> None:
    """Exit code as documented, no traceback, the output whole or absent."""
    bad = SMALL[name](store_path("single_face.mp4"), tmp_path / "bad.mp4")
    out = tmp_path / "out.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "streamer", "replay", str(bad), "--no-progress", "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=CASE_BOUND_S * 3,
        env={**os.environ, "COLUMNS": "160"},
    )
    assert "Traceback" not in proc.stderr
    assert proc.returncode in (0, 1, EXIT_CORRUPT), proc.stderr
    if proc.returncode == 1:
        assert not out.exists()
        assert len([ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]) == 1
    else:
        assert out.exists() and (not out.read_text() or out.read_text().endswith("\n"))
    assert not list(tmp_path.glob("*.tmp"))
