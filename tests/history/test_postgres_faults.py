"""PostgreSQL going away and coming back during a live run: the run goes on, writes
resume, what was buffered within the bounded queue is written, the rest is counted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from streamer.bus import EventBus
from streamer.history.config import HistoryConfig
from streamer.history.database import open_database
from streamer.history.sink import HistorySink
from streamer.testing.history_load import frame_messages
from streamer.testing.postgres import PostgresServer, postgres_unavailable
from tests.helpers.wait import wait_until

pytestmark = pytest.mark.postgres


@pytest.fixture
def own_pg() -> Iterator[PostgresServer]:
    why = postgres_unavailable()
    if why is not None:
        pytest.skip(f"PostgreSQL unavailable: {why}")
    srv = PostgresServer().start()
    yield srv
    srv.close()


async def test_postgres_stopped_and_started_during_a_live_run(own_pg: PostgresServer) -> None:
    cfg = HistoryConfig(url=own_pg.url, commit_interval_s=0.2, max_queue_rows=10)
    bus = EventBus(lossless_wait_s=2.0)
    sink = HistorySink(cfg, bus, ["cam00", "cam01"])
    frame = 0
    produced = 0

    async def frames(n: int) -> None:
        nonlocal frame, produced
        for _ in range(n):
            wall = time.time()
            for msg in frame_messages(frame, frame / 30, wall, 2, 2, episode_every=5):
                await bus.publish(msg)
                produced += msg.__class__.__name__ == "Episode"
            frame += 1
            await asyncio.sleep(1 / 30)

    async with sink:
        await frames(30)
        await wait_until(lambda: sink.writer.written["episode"] >= 2, what="first commits")
        await asyncio.to_thread(own_pg.stop, "fast")
        await frames(90)  # 3 s without the database: the run goes on
        await wait_until(lambda: sink.problem() != "", what="the history to notice")
        assert sink.writer.queued > 0
        await asyncio.to_thread(own_pg.start)
        await wait_until(lambda: sink.problem() == "", 60, what="writes to resume")
        await frames(30)
        bus.close()
    w = sink.writer
    assert w.failures > 0
    assert frame == 150  # every frame went through while the database was away
    engine = open_database(cfg)
    with engine.connect() as conn:
        episodes = conn.execute(sa.text("select count(*) from episodes")).scalar()
        runs = conn.execute(sa.text("select ended_at is not null from runs")).scalars().all()
    engine.dispose()
    assert episodes == w.written["episode"]
    assert episodes + w.dropped["queue_full"] >= produced  # written or counted
    assert w.dropped["queue_full"] > 0  # past the bound: counted
    assert episodes > 10 + 2 * 30 // 5  # before, within the bound during, and after
    assert runs == [True]
