"""``streamer bench history``: what the history costs and what it holds (JSON).

* ``rows_per_s``: rows written per second, sustained (SQLite; PostgreSQL too when a
  server can be started here, ``streamer.testing.postgres``): episode rows and VA
  segment rows queued as fast as the writer takes them, commits of ``commit_rows``;
* ``live``: the history sink of 12 cameras with 3 faces each at 15 fps (VA samples,
  moods every 2 s, an episode per camera a minute) fed in real time over a real bus
  for ``--duration-s``: the share of one core it used (the recorder on the event loop
  plus the writer thread), commits and drops;
* ``query_day_ms``: a day of 12 cameras' episodes (one per camera every 5 min) read
  back: the first review page (200) and the whole day;
* ``growth``: the database's growth per camera-day at the defaults (1 Hz bins, moods
  every 2 s, 3 faces all day), from ``--simulate-h`` hours of one camera, and with an
  LLM description per track every 10 s on top;
* ``prune``: the longest retention step (a commit waits at most this long).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from streamer.bench.harness import emit
from streamer.bus import EventBus
from streamer.history.config import HistoryConfig
from streamer.history.database import open_database
from streamer.history.recorder import Recorder, Row
from streamer.history.writer import RunInfo, Writer
from streamer.messages import Description, Episode, Mood, VASample, VAStats
from streamer.testing.history_load import frame_messages

DAY_S = 86400.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("history", help="history store: rows/s, CPU share, queries, growth")
    p.add_argument("--duration-s", type=float, default=20.0, help="live load duration (s)")
    p.add_argument("--rows", type=int, default=60000, help="rows of the throughput runs")
    p.add_argument("--simulate-h", type=float, default=2.0, help="hours simulated for growth")
    p.add_argument("--no-postgres", action="store_true", help="SQLite only")
    p.set_defaults(func=cmd_bench_history)


def cmd_bench_history(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp:
        root = Path(tmp)
        result: dict[str, Any] = {"rows_per_s": {}}
        result["rows_per_s"]["sqlite"] = throughput(HistoryConfig(path=root / "t.db"), args.rows)
        if not args.no_postgres:
            result["rows_per_s"]["postgresql"] = _postgres_throughput(args.rows)
        result["live"] = asyncio.run(
            live_load(HistoryConfig(path=root / "live.db"), args.duration_s)
        )
        result["query_day_ms"] = query_day(HistoryConfig(path=root / "day.db"))
        result["growth"] = growth(root, args.simulate_h)
        result["prune"] = prune_steps(HistoryConfig(path=root / "day.db"))
    return emit(result)


def _episode_row(i: int, wall: float) -> Row:
    st = VAStats(-0.5, -0.6, -0.4)
    ep = Episode(
        f"cam{i % 12:02d}:{i}:low:{i}",
        f"cam{i % 12:02d}",
        i,
        "low",
        "ended",
        5.0,
        150,
        1.0,
        4.0,
        3.0,
        "cleared",
        st,
        st,
        wall,
    )
    rows = Recorder(1.0).add(ep)
    return rows[0]


def throughput(cfg: HistoryConfig, n: int) -> dict[str, Any]:
    """Rows per second into ``cfg``'s database: episode rows and VA segment rows."""
    cfg = cfg.model_copy(update={"max_queue_rows": n + 10})
    rec = Recorder(1.0)
    now = time.time()
    va: list[Row] = []
    for k in range(n // 4):  # segment rows of 60 samples each
        for j in range(60):
            va += rec.add(
                VASample(
                    "cam",
                    j,
                    j,
                    k,
                    (0, 0, 1, 1),
                    0.1,
                    0.2,
                    None,
                    None,
                    (0, 0),
                    "m",
                    now + 60 * (k % 500) + j,
                )
            )
        va += rec.close()
    va = va[: n // 2]
    eps = [_episode_row(i, now + i) for i in range(n - len(va))]
    writer = Writer(cfg, RunInfo("live", ("cam",)), lambda: open_database(cfg))
    writer.start()
    t0 = time.perf_counter()
    writer.put(eps + va)
    writer.commit_soon()
    while writer.queued and not writer.problem:
        time.sleep(0.005)
    wall = time.perf_counter() - t0
    writer.stop(30.0)
    rows = sum(writer.written.values())
    return {
        "rows": rows,
        "episode_rows": writer.written["episode"],
        "va_segment_rows": writer.written["va"],
        "seconds": round(wall, 3),
        "rows_per_s": round(rows / wall),
        "commits": writer.commits,
        "commit_rows": cfg.commit_rows,
    }


def _postgres_throughput(n: int) -> dict[str, Any]:
    from streamer.testing.postgres import PostgresServer, postgres_unavailable

    why = postgres_unavailable()
    if why is not None:
        return {"skipped": why}
    with PostgresServer() as pg:
        out = throughput(HistoryConfig(url=pg.url), n)
        out["note"] = "a local server with fsync off (the test server)"
        return out


async def live_load(cfg: HistoryConfig, duration_s: float) -> dict[str, Any]:
    """12 cameras x 3 faces at 15 fps in real time through the sink on a real bus."""
    from streamer.history.sink import HistorySink

    cameras, faces, fps = 12, 3, 15.0
    bus = EventBus(lossless_wait_s=2.0)
    sink = HistorySink(cfg, bus, [f"cam{c:02d}" for c in range(cameras)])
    frames = int(duration_s * fps)
    t0 = time.perf_counter()
    async with sink:
        start = time.perf_counter()
        for i in range(frames):
            wall = time.time()
            for msg in frame_messages(
                i,
                i / fps,
                wall,
                cameras,
                faces,
                mood_every=int(2 * fps),
                episode_every=int(60 * fps),
            ):
                bus.publish_nowait(msg)
            delay = start + (i + 1) / fps - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        wall_s = time.perf_counter() - start
        bus.close()
    total_s = time.perf_counter() - t0
    w = sink.writer
    cpu = sink.busy_s + w.thread_cpu_s
    return {
        "cameras": cameras,
        "faces": faces,
        "fps": fps,
        "messages": sink.messages,
        "seconds": round(wall_s, 2),
        "recorder_cpu_s": round(sink.busy_s, 3),
        "writer_cpu_s": round(w.thread_cpu_s, 3),
        "cpu_share_of_one_core_pct": round(100.0 * cpu / total_s, 2),
        "commits": w.commits,
        "rows_written": sum(w.written.values()),
        "dropped": dict(w.dropped),
    }


def _write_rows(cfg: HistoryConfig, rows: list[Row]) -> None:
    writer = Writer(
        cfg.model_copy(update={"max_queue_rows": len(rows) + 10}),
        RunInfo("live", ()),
        lambda: open_database(cfg),
    )
    writer.start()
    writer.put(rows)
    writer.commit_soon()
    writer.stop(600.0)


def query_day(cfg: HistoryConfig) -> dict[str, Any]:
    """A day of 12 cameras' episodes (one per camera every 5 min) read back."""
    from streamer.history import queries as q

    day0 = time.time() - 2 * DAY_S
    rows = [_episode_row(i, day0 + (i // 12) * 300 + i % 12) for i in range(12 * 288)]
    _write_rows(cfg, rows)
    engine = open_database(cfg, writer=False, create=False, migrate=False)
    out: dict[str, Any] = {"episodes": len(rows)}
    with engine.connect() as conn:
        for name, limit in (("first_page_200", 200), ("whole_day", None)):
            best = float("inf")
            for _ in range(5):
                t0 = time.perf_counter()
                items = q.review_items(
                    conn, q.EpisodeFilter(None, None, None, day0, day0 + DAY_S, limit)
                )
                best = min(best, time.perf_counter() - t0)
            out[name] = {"items": len(items), "ms": round(best * 1000, 2)}
    engine.dispose()
    return out


def growth(root: Path, hours: float) -> dict[str, Any]:
    """MB per camera-day at the defaults, from ``hours`` of one camera with 3 faces."""
    out: dict[str, Any] = {"simulated_hours": hours, "faces": 3, "fps": 15}
    for name, describe in (("defaults", False), ("with_llm_every_10s", True)):
        path = root / f"growth-{name}.db"
        cfg = HistoryConfig(path=path)
        open_database(cfg).dispose()
        base = _size(path)
        rec = Recorder(1.0, anchor=time.time() - hours * 3600)
        rows: dict[tuple[Any, ...], Row] = {}
        fps, frames = 15, int(hours * 3600 * 15)
        for i in range(frames):
            t = i / fps
            for k in range(3):
                s = VASample("cam", i, t, k + 1, (0, 0, 1, 1), 0.3, 0.1, None, None, (0, 0), "m")
                for r in rec.add(s):
                    rows[(r.kind, *r.key)] = r
            if i % 30 == 0:
                for r in rec.add(Mood("cam", t, i, 3, 0.2, 0.1, 0.05, 0.05, "neutral")):
                    rows[(r.kind, *r.key)] = r
            if describe and i % 150 == 0:
                for k in range(3):
                    d = Description(
                        f"cam:{k + 1}:{i}",
                        "cam",
                        k + 1,
                        t,
                        0.3,
                        0.1,
                        "neutral",
                        ("calm", "attentive"),
                        "A calm, attentive face with a slight smile "
                        "and relaxed eyes, looking towards the screen.",
                        "llm",
                        "llama3.2",
                    )
                    for r in rec.add(d):
                        rows[(r.kind, *r.key)] = r
        for r in rec.close():
            rows[(r.kind, *r.key)] = r
        _write_rows(cfg, list(rows.values()))
        size = _size(path) - base
        out[name] = {
            "bytes": size,
            "mb_per_camera_day": round(size / 1e6 * 24 / hours, 2),
        }
    return out


def _size(path: Path) -> int:
    import sqlite3

    con = sqlite3.connect(path)
    con.execute("pragma wal_checkpoint(TRUNCATE)")
    con.close()
    return sum(os.path.getsize(p) for p in (str(path), f"{path}-wal") if os.path.exists(p))


def prune_steps(cfg: HistoryConfig) -> dict[str, Any]:
    """The longest retention step over the day of episodes (made old)."""
    from streamer.history.prune import prune_now

    engine = open_database(cfg)
    p = prune_now(engine, time.time() + 400 * DAY_S, cfg.keep_days, cfg.keep_episode_days)
    engine.dispose()
    steps = sorted(p.step_s)
    return {
        "deleted": p.deleted,
        "steps": len(steps),
        "step_ms_max": round(1000 * steps[-1], 2) if steps else None,
        "step_ms_median": round(1000 * steps[len(steps) // 2], 2) if steps else None,
    }
