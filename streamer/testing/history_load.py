"""A synthetic run for the history: cameras with faces, moods, episodes, statuses.

``frame_messages`` makes what the pipeline and the episodes stage publish for one frame
of every camera (a VA sample per face, a mood every ``mood_every`` frames, an episode
started and ended now and then); the history's tests and ``streamer bench history``
feed it to a real :class:`~streamer.history.sink.HistorySink` over a real bus.

``python -m streamer.testing.history_load DB SECONDS`` writes such a run as fast as it
can (or, with ``--fps``, at that many frames a second of wall time, as a live run
would) and prints ``committed episodes=N rows=M`` after each commit (the kill -9 test
reads it).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from pathlib import Path

from streamer.bus import EventBus
from streamer.messages import (
    CameraState,
    CameraStatus,
    Episode,
    Message,
    Mood,
    VASample,
    VAStats,
)


def frame_messages(
    frame: int,
    t: float,
    wall: float | None,
    cameras: int,
    faces: int,
    *,
    mood_every: int = 30,
    episode_every: int = 0,
) -> list[Message]:
    """The messages of frame ``frame`` (media time ``t``) of every camera."""
    out: list[Message] = []
    for c in range(cameras):
        cam = f"cam{c:02d}"
        for k in range(faces):
            v = 0.7 * math.sin(0.3 * t + k + c)
            a = 0.6 * math.cos(0.2 * t + 2 * k)
            out.append(
                VASample(
                    cam,
                    frame,
                    t,
                    k + 1,
                    (10.0, 10.0, 60.0, 60.0),
                    v,
                    a,
                    v,
                    a,
                    (0.01, 0.01),
                    "synthetic",
                    wall,
                )
            )
        if mood_every and frame % mood_every == 0:
            out.append(Mood(cam, t, frame, faces, 0.1, 0.2, 0.05, 0.04, "neutral", wall))
        if episode_every and frame % episode_every == 0 and frame:
            stats = VAStats(-0.5, -0.6, -0.4)
            t0 = t - 2.0
            eid = f"{cam}:1:low:{round(t0 * 1000)}"
            out.append(
                Episode(
                    eid,
                    cam,
                    1,
                    "low",
                    "ended",
                    t,
                    frame,
                    t0,
                    t - 0.5,
                    1.5,
                    "cleared",
                    stats,
                    stats,
                    wall,
                )
            )
    return out


def status(camera: str, state: CameraState, wall: float, detail: str = "") -> CameraStatus:
    return CameraStatus(camera, state, wall, detail)


async def _write(
    db: str, seconds: float, cameras: int, faces: int, commit_s: float, fps: float
) -> None:
    from streamer.history.config import HistoryConfig
    from streamer.history.sink import HistorySink

    cfg = HistoryConfig(path=Path(db), commit_interval_s=commit_s)
    bus = EventBus()
    sink = HistorySink(cfg, bus, [f"cam{c:02d}" for c in range(cameras)], replay=True)
    async with sink:
        seen = 0
        frame = 0
        t_start = time.monotonic()
        t_end = t_start + seconds
        while time.monotonic() < t_end:
            if fps > 0:  # paced: frame n is due at n / fps seconds
                await asyncio.sleep(max(0.0, t_start + frame / fps - time.monotonic()))
            for msg in frame_messages(frame, frame / 30.0, None, cameras, faces, episode_every=3):
                await bus.publish(msg)
            frame += 1
            if frame % 10 == 0:
                await asyncio.sleep(0)
            w = sink.writer
            if w.commits != seen:
                seen = w.commits
                print(
                    f"committed episodes={w.written['episode']} rows={sum(w.written.values())}",
                    flush=True,
                )
        bus.close()
    w = sink.writer
    print(f"committed episodes={w.written['episode']} rows={sum(w.written.values())}", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("db")
    p.add_argument("seconds", type=float)
    p.add_argument("--cameras", type=int, default=4)
    p.add_argument("--faces", type=int, default=3)
    p.add_argument("--commit-s", type=float, default=0.2)
    p.add_argument("--fps", type=float, default=0.0, help="frames a second (0: as fast as it can)")
    args = p.parse_args()
    asyncio.run(_write(args.db, args.seconds, args.cameras, args.faces, args.commit_s, args.fps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
