"""The history sink on a real bus and real SQLite files: what is kept, how it is updated,
retention, a full database, two processes on one file."""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa

from streamer.bus import EventBus
from streamer.history import queries as q
from streamer.history.config import HistoryConfig
from streamer.history.database import open_database
from streamer.history.prune import PrunePass, prune_now
from streamer.history.schema import episodes, va_segments
from streamer.history.sink import HistorySink
from streamer.messages import (
    CameraState,
    CameraStatus,
    Description,
    Episode,
    Message,
    TrackEvent,
    TrackEventKind,
    VASample,
    VAStats,
)
from streamer.testing.history_load import frame_messages
from tests.helpers.wait import wait_until

DAY = 86400.0


async def record(
    cfg: HistoryConfig, messages: Sequence[Message], *, replay: bool = False
) -> HistorySink:
    bus = EventBus()
    sink = HistorySink(cfg, bus, ["lounge"], replay=replay)
    async with sink:
        for msg in messages:
            await bus.publish(msg)
        bus.close()
    return sink


def reader(cfg: HistoryConfig) -> sa.Engine:
    return open_database(cfg, writer=False, create=False, migrate=False)


def sample(t: float, wall: float, v: float, a: float, track: int = 1) -> VASample:
    return VASample(
        "lounge", int(t * 10), t, track, (0, 0, 1, 1), v, a, v, a, (0.01, 0.01), "m", wall
    )


def episode(state: str, t: float, wall: float, t_end: float | None = None) -> Episode:
    st = VAStats(-0.5, -0.7, -0.3)
    return Episode(
        "lounge:1:low:1000",
        "lounge",
        1,
        "low",
        state,
        t,
        int(t * 10),
        1.0,
        t_end,
        t - 1.0 if t_end is None else t_end - 1.0,
        None if t_end is None else "cleared",
        st,
        st,
        wall,
    )


async def test_a_live_run_is_kept_and_updated_in_place(tmp_path: Path) -> None:
    cfg = HistoryConfig(path=tmp_path / "h.db", commit_interval_s=0.05)
    w0 = 1_700_000_000.0
    fallback = Description(
        "d1",
        "lounge",
        1,
        3.0,
        -0.5,
        0.1,
        "sad",
        ("down",),
        "looks down",
        "fallback",
        "fallback",
        w0 + 3.0,
        episode_id="lounge:1:low:1000",
    )
    llm = Description(
        "d1",
        "lounge",
        1,
        3.0,
        -0.5,
        0.1,
        "sad",
        ("gloomy",),
        "a gloomy face",
        "llm",
        "llama",
        w0 + 3.0,
        episode_id="lounge:1:low:1000",
    )
    msgs: list[Message] = [
        CameraStatus("lounge", CameraState.STARTING, w0 - 1),
        CameraStatus("lounge", CameraState.ONLINE, w0 - 0.5),
        CameraStatus("lounge", CameraState.ONLINE, w0),  # no change: not kept
        sample(0.0, w0 + 0.1, 0.5, 0.2),
        sample(0.5, w0 + 0.6, -0.5, 0.4),
        sample(1.2, w0 + 1.2, -0.1, 0.0),
        episode("started", 1.5, w0 + 1.5),
        episode("ended", 2.5, w0 + 2.5, t_end=2.2),
        fallback,
        llm,
        TrackEvent("lounge", 1, TrackEventKind.LOST, 30, 3.0, w0 + 3.0),
        CameraStatus("lounge", CameraState.OFFLINE, w0 + 4, "refused"),
    ]
    sink = await record(cfg, msgs)
    assert sink.writer.dropped == {}
    with reader(cfg).connect() as conn:
        rows = q.episode_rows(conn, q.EpisodeFilter())
        assert len(rows) == 1  # started, then ended: one row
        rec = q.episode_record(rows[0])
        assert rec == episode("ended", 2.5, w0 + 2.5, t_end=2.2).to_record()
        item = q.review_items(conn, q.EpisodeFilter())[0]
        assert item["description"]["text"] == "a gloomy face"  # the LLM's answer won
        assert item["wall_start"] == pytest.approx(w0 + 1.0)
        assert item["wall_end"] == pytest.approx(w0 + 2.2)
        bins = q.va_bins(conn, "lounge", 1)
        assert [(b.start, b.n) for _, _, b in bins] == [(w0, 2), (w0 + 1, 1)]
        assert bins[0][2].valence == (0.0, -0.5, 0.5)
        tl = q.timeline(conn, "lounge", w0 - 10, w0 + 10)
        assert [(o["state"], o["detail"]) for o in tl["outages"]] == [
            ("starting", ""),
            ("offline", "refused"),
        ]
        assert conn.execute(sa.text("select count(*) from descriptions")).scalar() == 1


async def test_a_camera_is_named_in_its_run_with_its_first_rows(tmp_path: Path) -> None:
    """The review timeline shows a camera's runs from the run's list of cameras: a camera
    the run was not configured with is added in the same commit as its first rows (not
    at the next commit interval, which here never comes)."""
    cfg = HistoryConfig(path=tmp_path / "h.db", commit_interval_s=300, commit_rows=1)
    bus = EventBus()
    sink = HistorySink(cfg, bus, [])
    w0 = time.time()
    async with sink:
        await bus.publish(episode("started", 1.5, w0))
        await wait_until(lambda: sink.writer.written["episode"] == 1, what="the episode")
        with reader(cfg).connect() as conn:
            cams = conn.execute(sa.text("select cameras from runs")).scalar_one()
            tl = q.timeline(conn, "lounge", w0 - 10, w0 + 10)
        bus.close()
    assert json.loads(cams) == ["lounge"]
    assert [span["run"] for span in tl["recording"]] == [1]


async def test_an_outage_ends_with_its_run(tmp_path: Path) -> None:
    """The timeline shades a camera offline only while an analyzer knew it was: the
    status of a run that ended (stopped, or killed) holds no further than the run."""
    cfg = HistoryConfig(path=tmp_path / "h.db")
    now = time.time()
    await record(
        cfg,
        [
            CameraStatus("lounge", CameraState.ONLINE, now - 100),
            CameraStatus("lounge", CameraState.OFFLINE, now - 50, "refused"),
        ],
    )
    engine = open_database(cfg)
    with engine.begin() as conn:  # that run went from now - 200 to now - 40
        conn.execute(sa.text(f"update runs set started_at = {now - 200}, ended_at = {now - 40}"))
    engine.dispose()
    await record(
        cfg,
        [
            CameraStatus("lounge", CameraState.STARTING, now - 10),
            CameraStatus("lounge", CameraState.ONLINE, now - 9),
        ],
    )
    with reader(cfg).connect() as conn:
        tl = q.timeline(conn, "lounge", now - 300, now)
    spans = [(o["state"], o["start"] - now, o["end"] - now) for o in tl["outages"]]
    assert spans == [
        ("offline", pytest.approx(-50, abs=0.01), pytest.approx(-40, abs=0.01)),
        ("starting", pytest.approx(-10, abs=0.01), pytest.approx(-9, abs=0.01)),
    ]
    first = tl["recording"][0]
    assert (first["start"] - now, first["end"] - now) == (
        pytest.approx(-200, abs=0.01),
        pytest.approx(-40, abs=0.01),
    )


async def test_a_replay_is_placed_at_its_start_and_keeps_no_wall_time(tmp_path: Path) -> None:
    cfg = HistoryConfig(path=tmp_path / "h.db")
    before = time.time()
    msgs = [m for i in range(40) for m in frame_messages(i, i / 10, None, 1, 2, mood_every=10)]
    await record(cfg, msgs, replay=True)
    with reader(cfg).connect() as conn:
        moods = q.mood_entries(conn, "cam00")
        assert len(moods) == 4 and not any(live for _, live in moods)
        assert "wall_time" not in q.mood_record("cam00", *moods[0])
        assert before - 0.001 <= moods[0][0].wall <= time.time()  # kept to the ms
        assert moods[-1][0].wall - moods[0][0].wall == pytest.approx(3.0, abs=0.002)
        assert sum(b.n for _, _, b in q.va_bins(conn, "cam00", 2)) == 40


async def test_retention_prunes_old_rows_in_batches_and_keeps_kept_episodes(tmp_path: Path) -> None:
    cfg = HistoryConfig(path=tmp_path / "h.db", keep_days=30, keep_episode_days=365)
    now = time.time()
    msgs: list[Message] = []
    for age_days in (400, 40, 1):  # VA and an episode at each age
        wall = now - age_days * DAY
        st = VAStats(0.0, 0.0, 0.0)
        msgs += [sample(age_days, wall + i, 0.1, 0.1, track=age_days) for i in range(3)]
        msgs.append(
            Episode(
                f"lounge:{age_days}:low:0",
                "lounge",
                age_days,
                "low",
                "ended",
                1.0,
                1,
                0.0,
                1.0,
                1.0,
                "cleared",
                st,
                st,
                wall + 1,
            )
        )
        msgs += [
            sample(age_days + 0.5, wall + 100 + i, 0.1, 0.1, track=1000 + age_days)
            for i in range(600)
        ]
    await record(cfg, msgs)
    engine = open_database(cfg)
    with engine.begin() as conn:  # keep the oldest episode
        conn.execute(sa.update(episodes).where(episodes.c.track_id == 400).values(keep=True))
    p = PrunePass(now, cfg.keep_days, cfg.keep_episode_days)
    p._batch = 1  # bounded batches: one row a step
    while not p.done:
        p.step(engine)
    assert len(p.step_s) > 3
    with engine.connect() as conn:
        left = {r.track_id: r.keep for r in conn.execute(sa.select(episodes))}
        assert left == {400: True, 40: False, 1: False}  # 400 days: kept; 40 < 365: kept
        va_tracks = set(conn.execute(sa.select(va_segments.c.track_id)).scalars())
        # the kept episode's VA stays; other VA older than 30 days goes
        assert va_tracks == {400, 1, 1001}
    again = prune_now(engine, now, cfg.keep_days, cfg.keep_episode_days)
    assert sum(again.deleted.values()) == 0


async def test_a_full_database_stops_the_history_not_the_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = HistoryConfig(path=tmp_path / "h.db", max_size_mb=0.15, commit_interval_s=0.05)
    msgs = [m for i in range(3000) for m in frame_messages(i, i / 30, 1_700_000_000 + i * 60, 2, 3)]
    caplog.set_level(logging.ERROR, "streamer.history")
    sink = await record(cfg, msgs)
    assert sink.writer.disabled
    assert "full" in sink.problem()
    assert sink.writer.dropped["disabled"] > 0
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "full" in errors[0].getMessage()
    assert sqlite3.connect(cfg.path).execute("pragma integrity_check").fetchone() == ("ok",)


def test_two_processes_write_one_sqlite_file(tmp_path: Path) -> None:
    """WAL: a second process on the same file works (the two take turns, nothing lost).

    Each writes at a live run's pace (30 frames a second of 4 cameras with 3 faces, an
    episode every 3 frames: far more episodes than a room makes) and commits every
    0.2 s, so the two meet on the file's lock dozens of times. Unpaced, how many rows a
    second the generator makes depends on the machine, and a backlog past
    ``max_queue_rows`` is dropped and counted by design (the PostgreSQL outage test holds
    that bound).
    """
    db = tmp_path / "h.db"
    open_database(HistoryConfig(path=db)).dispose()
    load = ["-m", "streamer.testing.history_load", str(db), "4", "--cameras", "4", "--fps", "30"]
    procs = [
        subprocess.Popen(
            [sys.executable, *load],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert "dropped" not in err
    con = sqlite3.connect(db)
    runs = con.execute("select count(distinct run_id) from episodes").fetchone()[0]
    assert runs == 2
    last = [int(o.strip().splitlines()[-1].split()[1].split("=")[1]) for o, _ in outs]
    assert con.execute("select count(*) from episodes").fetchone()[0] == sum(last)
    assert con.execute("pragma integrity_check").fetchone() == ("ok",)


def test_kill_9_mid_write_loses_at_most_the_uncommitted_batch(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamer.testing.history_load", str(db), "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    committed = 0
    for _ in range(5):  # five commits in, then SIGKILL in the middle of heavy writing
        line = proc.stdout.readline()
        assert line.startswith("committed"), proc.stderr.read() if proc.stderr else line
        committed = int(line.split()[1].split("=")[1])
    proc.kill()
    proc.wait(30)
    con = sqlite3.connect(db)
    assert con.execute("pragma integrity_check").fetchone() == ("ok",)
    kept = con.execute("select count(*) from episodes").fetchone()[0]
    assert kept >= committed  # nothing reported committed was lost
    assert con.execute("select ended_at from runs").fetchone() == (None,)
    con.close()
    # a restart opens it and writes on
    out = subprocess.run(
        [sys.executable, "-m", "streamer.testing.history_load", str(db), "0.5"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    con = sqlite3.connect(db)
    assert con.execute("select count(distinct run_id) from episodes").fetchone()[0] == 2
    assert con.execute("pragma integrity_check").fetchone() == ("ok",)


def test_records_are_json_serialisable(tmp_path: Path) -> None:
    """The va_bin and review records are plain JSON (no numpy scalars)."""
    from streamer.history.segments import VASegment, unpack_va

    seg = VASegment(60.0, 1.0)
    seg.add(60.2, 0.5, -0.25)
    (b,) = unpack_va(60.0, 1.0, seg.pack())
    json.dumps(q.va_record("c", 1, 1, b))
    assert b.valence == (0.5, 0.5, 0.5) and b.arousal == (-0.25, -0.25, -0.25)


@pytest.mark.parametrize(
    ("yaml", "message"),
    [
        ("history:\n  url: mysql://u@h/db\n", "expected a postgresql://"),
        ("history:\n  url: postgresql://u:secret@h/db\n", "holds a password"),
        ("history:\n  url: postgresql://u@h/db\n  path: x.db\n", "not both"),
        ("history:\n  va_hz: 0\n", "greater than 0"),
        (
            "mqtt: {host: localhost}\ncluster: {address: auto}\nhistory: {path: h.db}\n",
            "cluster mode needs `history.url`",
        ),
    ],
)
def test_bad_history_config_names_the_key(yaml: str, message: str) -> None:
    from streamer.config import parse_config
    from streamer.errors import ConfigError

    with pytest.raises(ConfigError, match=message) as err:
        parse_config(yaml, "cfg.yaml")
    assert "cfg.yaml:" in str(err.value)


def test_a_postgres_history_goes_to_a_cluster_actor_intact() -> None:
    """The driver hands each camera actor its config as JSON: a history with a URL (and
    no `path`) must validate again on the other side."""
    from streamer.config import AppConfig, parse_config

    cfg = parse_config(
        "cameras: [{name: a, url: 'rtsp://127.0.0.1:1/x'}]\nmqtt: {host: localhost}\n"
        "cluster: {address: auto}\n"
        "history: {url: 'postgresql://streamer@db:5432/h', commit_interval_s: 1}\n",
        "cfg.yaml",
    )
    again = AppConfig.model_validate_json(cfg.model_dump_json())
    assert again.history == cfg.history and again.history is not None
    assert again.history.url == "postgresql://streamer@db:5432/h"
    assert again.history.commit_interval_s == 1
