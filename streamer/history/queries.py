"""Reading the history: episodes, moods, VA, outages, statistics; marking reviews.

Shared by ``streamer history`` and the dashboard's review API (through the history
sink, on a thread: these calls block). Every function takes a connection; times are
UNIX seconds (wall), ranges are half open ``[after, before)``.

Records: episodes come back as the live ``streamer.episode/1`` messages they were
(:func:`episode_record`) or as review items (:func:`review_item`,
``streamer.history.episode/1``: the episode, its description, whether it was reviewed
or kept); moods as ``streamer.mood/1``; VA bins as ``streamer.va_bin/1``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa

from streamer.circumplex import quadrant
from streamer.errors import HistoryQueryError
from streamer.history.schema import (
    TIMED,
    camera_status,
    descriptions,
    episodes,
    mood_segments,
    runs,
    va_segments,
)
from streamer.history.segments import SEGMENT_S, MoodEntry, VABin, unpack_mood, unpack_va
from streamer.messages import MOOD_SCHEMA, Episode, VAStats

REVIEW_SCHEMA = "streamer.history.episode/1"
VA_BIN_SCHEMA = "streamer.va_bin/1"
RUN_STALE_S = 120.0  # a run not heard of for this long (and not ended) is gone (s)
MAX_LIMIT = 1000  # episodes per page at most
OFFLINE_STATES = ("offline", "reconnecting", "starting", "stopped")


@dataclass(frozen=True)
class EpisodeFilter:
    """Which episodes (every field optional)."""

    camera: str | None = None
    rule: str | None = None
    reviewed: bool | None = None
    after: float | None = None  # wall_start >= after
    before: float | None = None  # wall_start < before
    limit: int | None = None
    newest_first: bool = True


def check_range(after: float | None, before: float | None) -> None:
    """A range that ends before it starts is an error (one line)."""
    if after is not None and before is not None and before <= after:
        raise HistoryQueryError(
            f"the range ends before it starts ({_iso(before)} is not after {_iso(after)})"
        )


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def cameras(conn: sa.Connection) -> list[str]:
    """Every camera the history has rows of (each run records the cameras it saw)."""
    names: set[str] = set(conn.execute(sa.select(episodes.c.camera).distinct()).scalars())
    for text in conn.execute(sa.select(runs.c.cameras)).scalars():
        try:
            names.update(str(c) for c in json.loads(text))
        except ValueError:
            continue
    return sorted(names)


def check_camera(conn: sa.Connection, camera: str | None) -> None:
    """An unknown camera is an error naming the known ones."""
    if camera is None:
        return
    known = cameras(conn)
    if camera not in known:
        raise HistoryQueryError(
            f"no camera {camera!r} in the history (known: {', '.join(known) or 'none'})"
        )


def _alive_runs(conn: sa.Connection, now: float) -> set[int]:
    rows = conn.execute(
        sa.select(runs.c.id).where(runs.c.ended_at.is_(None), runs.c.last_seen >= now - RUN_STALE_S)
    )
    return {int(r) for r in rows.scalars()}


def episode_rows(conn: sa.Connection, f: EpisodeFilter) -> list[dict[str, Any]]:
    """Episode rows matching ``f`` (by start: newest first unless told otherwise)."""
    check_range(f.after, f.before)
    q = sa.select(episodes)
    if f.camera is not None:
        q = q.where(episodes.c.camera == f.camera)
    if f.rule is not None:
        q = q.where(episodes.c.rule == f.rule)
    if f.reviewed is True:
        q = q.where(episodes.c.reviewed_at.is_not(None))
    elif f.reviewed is False:
        q = q.where(episodes.c.reviewed_at.is_(None))
    if f.after is not None:
        q = q.where(episodes.c.wall_start >= f.after)
    if f.before is not None:
        q = q.where(episodes.c.wall_start < f.before)
    order = episodes.c.wall_start.desc() if f.newest_first else episodes.c.wall_start.asc()
    q = q.order_by(order, episodes.c.id.desc() if f.newest_first else episodes.c.id.asc())
    if f.limit is not None:
        q = q.limit(max(1, min(f.limit, MAX_LIMIT)))
    result = conn.execute(q)
    keys = list(result.keys())
    return [dict(zip(keys, row, strict=True)) for row in result]  # plain dicts: cheap to read


def episode_message(row: Mapping[str, Any]) -> Episode:
    """The live message an episode row was made from (its latest state)."""
    return Episode(
        id=row["episode_id"],
        camera=row["camera"],
        track_id=int(row["track_id"]),
        rule=row["rule"],
        state=row["state"],
        t=row["t"],
        frame=int(row["frame"]),
        t_start=row["t_start"],
        t_end=row["t_end"],
        duration_s=row["duration_s"],
        reason=row["reason"],
        valence=VAStats(row["valence_mean"], row["valence_min"], row["valence_max"]),
        arousal=VAStats(row["arousal_mean"], row["arousal_min"], row["arousal_max"]),
        wall_time=row["wall_time"],
    )


def episode_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """``streamer.episode/1``: exactly the record of the episode's latest message."""
    return episode_message(row).to_record()


def _stats(row: Mapping[str, Any], name: str) -> dict[str, float]:
    return {
        "mean": round(row[f"{name}_mean"], 6),
        "min": round(row[f"{name}_min"], 6),
        "max": round(row[f"{name}_max"], 6),
    }


def review_item(row: Mapping[str, Any], alive: set[int], now: float) -> dict[str, Any]:
    """``streamer.history.episode/1``: an episode as the review page and exports show it.

    ``open``: started and its run still going; ``interrupted``: started, but its run
    ended (or was killed) before the episode ended. Values are rounded as in the live
    messages (:meth:`Episode.to_record`).
    """
    started = row["state"] == "started"
    is_open = started and int(row["run_id"]) in alive
    desc = json.loads(row["description"]) if row["description"] else None
    t_end = row["t_end"]
    return {
        "schema": REVIEW_SCHEMA,
        "id": int(row["id"]),
        "episode_id": row["episode_id"],
        "run": int(row["run_id"]),
        "camera": row["camera"],
        "track_id": int(row["track_id"]),
        "rule": row["rule"],
        "state": row["state"],
        "open": is_open,
        "interrupted": started and not is_open,
        "t_start": round(row["t_start"], 6),
        "t_end": None if t_end is None else round(t_end, 6),
        "duration_s": round(now - row["wall_start"] if is_open else row["duration_s"], 3),
        "wall_start": row["wall_start"],  # exact: the next page is before=this
        "wall_end": None if row["wall_end"] is None else round(row["wall_end"], 3),
        "reason": row["reason"],
        "valence": _stats(row, "valence"),
        "arousal": _stats(row, "arousal"),
        "description": desc,
        "reviewed_at": None if row["reviewed_at"] is None else round(row["reviewed_at"], 3),
        "keep": bool(row["keep"]),
    }


def review_items(conn: sa.Connection, f: EpisodeFilter) -> list[dict[str, Any]]:
    """Review items of the episodes matching ``f`` (an unknown camera is an error)."""
    check_camera(conn, f.camera)
    now = time.time()
    alive = _alive_runs(conn, now)
    return [review_item(r, alive, now) for r in episode_rows(conn, f)]


def mark_reviewed(conn: sa.Connection, ids: Sequence[int], reviewed: bool = True) -> int:
    """Mark episodes reviewed (or not); returns how many rows changed."""
    if not ids:
        return 0
    value = time.time() if reviewed else None
    res = conn.execute(
        sa.update(episodes)
        .where(episodes.c.id.in_([int(i) for i in ids]))
        .values(reviewed_at=value)
    )
    return int(res.rowcount or 0)


def set_keep(conn: sa.Connection, episode: int, keep: bool = True) -> bool:
    """Exempt an episode from retention (or not); False when there is no such episode."""
    res = conn.execute(sa.update(episodes).where(episodes.c.id == int(episode)).values(keep=keep))
    return bool(res.rowcount)


# ---------------------------------------------------------------------- mood


def _segments(
    conn: sa.Connection, table: sa.Table, camera: str, after: float | None, before: float | None
) -> sa.Select[Any]:
    q = sa.select(table, runs.c.kind).join(runs, runs.c.id == table.c.run_id)
    q = q.where(table.c.camera == camera)
    if after is not None:
        q = q.where(table.c.start > after - SEGMENT_S)
    if before is not None:
        q = q.where(table.c.start < before)
    return q.order_by(table.c.start, table.c.id)


def mood_entries(
    conn: sa.Connection, camera: str, after: float | None = None, before: float | None = None
) -> list[tuple[MoodEntry, bool]]:
    """(mood, whether it was live) of ``camera`` in the range, oldest first."""
    check_range(after, before)
    check_camera(conn, camera)
    out = []
    for row in conn.execute(_segments(conn, mood_segments, camera, after, before)).mappings():
        live = row["kind"] == "live"
        for e in unpack_mood(row["start"], row["data"]):
            if (after is None or e.wall >= after) and (before is None or e.wall < before):
                out.append((e, live))
    out.sort(key=lambda x: x[0].wall)
    return out


def mood_record(camera: str, e: MoodEntry, live: bool) -> dict[str, Any]:
    """``streamer.mood/1`` of a stored mood (VA at the history's precision, 1e-4)."""
    rec: dict[str, Any] = {
        "schema": MOOD_SCHEMA,
        "camera": camera,
        "t": round(e.t, 6),
        "frame": e.frame,
        "count": e.count,
        "valence": e.valence,
        "arousal": e.arousal,
        "valence_spread": e.valence_spread,
        "arousal_spread": e.arousal_spread,
        "quadrant": e.quadrant,
    }
    if live:
        rec["wall_time"] = e.wall
    return rec


def mood_buckets(
    entries: Sequence[tuple[MoodEntry, bool]], after: float, before: float, points: int
) -> list[dict[str, Any]]:
    """The moods of ``[after, before)`` in at most ``points`` buckets (the timeline's band):
    per bucket the mean VA of the moods with faces, the most faces, the quadrant word."""
    if not entries:
        return []
    points = max(1, min(points, 5000))
    width = max((before - after) / points, 1e-3)
    wall = np.array([e.wall for e, _ in entries])
    count = np.array([e.count for e, _ in entries])
    val = np.array([np.nan if e.valence is None else e.valence for e, _ in entries])
    aro = np.array([np.nan if e.arousal is None else e.arousal for e, _ in entries])
    idx = np.floor((wall - after) / width).astype(np.int64)
    out = []
    for b in np.unique(idx):
        m = idx == b
        faces = m & (count > 0)
        v = float(np.nanmean(val[faces])) if faces.any() else None
        a = float(np.nanmean(aro[faces])) if faces.any() else None
        out.append(
            {
                "start": round(after + float(b) * width, 3),
                "end": round(after + float(b + 1) * width, 3),
                "count": int(count[m].max()),
                "valence": None if v is None else round(v, 4),
                "arousal": None if a is None else round(a, 4),
                "quadrant": "none" if v is None or a is None else quadrant(v, a).value,
            }
        )
    return out


# ---------------------------------------------------------------------- VA


def va_bins(
    conn: sa.Connection,
    camera: str,
    track_id: int | None = None,
    *,
    run_id: int | None = None,
    after: float | None = None,
    before: float | None = None,
) -> list[tuple[int, int, VABin]]:
    """(run, track, bin) of ``camera`` (one track, or all) in the range, oldest first."""
    check_range(after, before)
    check_camera(conn, camera)
    q = _segments(conn, va_segments, camera, after, before)
    if track_id is not None:
        q = q.where(va_segments.c.track_id == track_id)
    if run_id is not None:
        q = q.where(va_segments.c.run_id == run_id)
    out = []
    for row in conn.execute(q).mappings():
        for b in unpack_va(row["start"], row["bin_s"], row["data"]):
            if (after is None or b.start >= after) and (before is None or b.start < before):
                out.append((int(row["run_id"]), int(row["track_id"]), b))
    out.sort(key=lambda x: (x[2].start, x[0], x[1]))
    return out


def va_record(
    camera: str, run: int, track_id: int, b: VABin, bin_s: float | None = None
) -> dict[str, Any]:
    """``streamer.va_bin/1``: one bin of one track's smoothed VA."""
    return {
        "schema": VA_BIN_SCHEMA,
        "camera": camera,
        "run": run,
        "track_id": track_id,
        "wall_time": round(b.start, 3),
        "n": b.n,
        "valence": {"mean": b.valence[0], "min": b.valence[1], "max": b.valence[2]},
        "arousal": {"mean": b.arousal[0], "min": b.arousal[1], "max": b.arousal[2]},
    }


# ---------------------------------------------------------------------- timeline


def timeline(conn: sa.Connection, camera: str, after: float, before: float) -> dict[str, Any]:
    """What the review timeline shades for ``camera`` in ``[after, before)``: when a run
    was recording it, and its outages (every status but ``online``)."""
    check_range(after, before)
    now = time.time()
    rec: list[dict[str, Any]] = []
    q = sa.select(runs).where(runs.c.started_at < before).order_by(runs.c.started_at)
    for r in conn.execute(q).mappings():
        try:
            cams = json.loads(r["cameras"])
        except ValueError:
            cams = []
        end = r["ended_at"] if r["ended_at"] is not None else r["last_seen"]
        if r["ended_at"] is None and now - r["last_seen"] < RUN_STALE_S:
            end = now  # still running
        if camera in cams and end > after:
            rec.append({"run": int(r["id"]), "start": r["started_at"], "end": end})
    prev = (
        conn.execute(
            sa.select(camera_status)
            .where(camera_status.c.camera == camera, camera_status.c.wall_time < after)
            .order_by(camera_status.c.wall_time.desc())
            .limit(1)
        )
        .mappings()
        .first()
    )
    changes = list(
        conn.execute(
            sa.select(camera_status)
            .where(
                camera_status.c.camera == camera,
                camera_status.c.wall_time >= after,
                camera_status.c.wall_time < before,
            )
            .order_by(camera_status.c.wall_time, camera_status.c.id)
        ).mappings()
    )
    outages = []
    seq = ([prev] if prev is not None else []) + changes
    for i, s in enumerate(seq):
        if s["state"] not in OFFLINE_STATES:
            continue
        start = max(s["wall_time"], after)
        end = seq[i + 1]["wall_time"] if i + 1 < len(seq) else min(before, now)
        if end > start:
            outages.append(
                {
                    "start": round(start, 3),
                    "end": round(end, 3),
                    "state": s["state"],
                    "detail": s["detail"],
                }
            )
    for span in rec:
        span["start"] = round(max(span["start"], after), 3)
        span["end"] = round(min(span["end"], before), 3)
    return {
        "camera": camera,
        "after": after,
        "before": before,
        "recording": rec,
        "outages": outages,
    }


# ---------------------------------------------------------------------- stats


def stats(conn: sa.Connection, where: str, sqlite_path: str | None) -> dict[str, Any]:
    """Rows per table, the oldest and newest row's time, and the size on disk."""
    tables: dict[str, Any] = {}
    timed = {
        "episodes": (episodes, episodes.c.wall_start),
        "runs": (runs, runs.c.started_at),
        **TIMED,
    }
    for name, (table, col) in timed.items():
        n, lo, hi = conn.execute(
            sa.select(sa.func.count(), sa.func.min(col), sa.func.max(col)).select_from(table)
        ).one()
        tables[name] = {"rows": int(n), "oldest": lo, "newest": hi}
    size: dict[str, int] = {}
    if sqlite_path is not None:
        import os

        for suffix in ("", "-wal", "-shm"):
            p = sqlite_path + suffix
            if os.path.exists(p):
                size[p] = os.path.getsize(p)
    else:
        size["database"] = int(
            conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar() or 0
        )
    kept = conn.execute(
        sa.select(sa.func.count()).select_from(episodes).where(episodes.c.keep.is_(sa.true()))
    ).scalar()
    unreviewed = conn.execute(
        sa.select(sa.func.count()).select_from(episodes).where(episodes.c.reviewed_at.is_(None))
    ).scalar()
    return {
        "database": where,
        "tables": tables,
        "size_bytes": size,
        "episodes_kept": int(kept or 0),
        "episodes_unreviewed": int(unreviewed or 0),
        "descriptions": int(
            conn.execute(sa.select(sa.func.count()).select_from(descriptions)).scalar() or 0
        ),
    }
