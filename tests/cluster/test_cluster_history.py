"""Cluster mode with a history: two cameras on two camera actors of a real local Ray
cluster write their episodes, moods and VA into one real PostgreSQL, each actor as a run
of its own; an actor killed with SIGKILL mid-run loses at most what it had not yet
committed, and its replacement writes on as a new run."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from streamer.history import queries as q
from streamer.history.schema import episodes, runs
from streamer.testing.mqtt import Broker
from streamer.testing.sources import RtspServer
from tests.helpers.history import EPISODE_RULES
from tests.helpers.wait import wait_until_sync

pytestmark = [pytest.mark.cluster, pytest.mark.rtsp, pytest.mark.mqtt, pytest.mark.postgres]

NAMESPACE = "hist"
START_S = 180.0  # deadline for a fresh deployment to write (slow shared machine)
FAILOVER_S = 60.0  # the killed camera's replacement must be writing within this
COMMIT_S = 1.0  # history.commit_interval_s of the actors
RUN_BEFORE_KILL_S = 15.0  # the victim has been committing at least this long
# A commit may come late on a loaded machine (the writer thread and the event loop share
# two cores with a whole Ray cluster): what the victim lost may exceed one interval by
# this. A history that commits only at the end would lose the whole run (> 15 s).
LATE_COMMIT_S = 6.0
BIN_S = 1.0  # history.va_hz is 1 (the default)


@dataclass
class HistoryDeployment:
    stop: threading.Event
    thread: threading.Thread
    errors: list[BaseException]
    engine: sa.Engine

    def status(self, camera: str, timeout_s: float = 5.0) -> Any:
        import ray

        try:
            actor = ray.get_actor(f"camera:{camera}", namespace=NAMESPACE)
            return ray.get(actor.status.remote(), timeout=timeout_s)
        except Exception:  # restarting: no answer yet
            return None

    def runs(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(runs).order_by(runs.c.id)).mappings().all()
        return [{**r, "cameras": json.loads(r["cameras"])} for r in rows]

    def episodes_by_run(self) -> dict[int, set[str]]:
        """run id -> the cameras of its episodes."""
        out: dict[int, set[str]] = {}
        with self.engine.connect() as conn:
            for run_id, camera in conn.execute(
                sa.select(episodes.c.run_id, episodes.c.camera).distinct()
            ):
                out.setdefault(int(run_id), set()).add(camera)
        return out

    def committed(self, run_id: int, camera: str) -> tuple[int, int, float]:
        """(episodes, VA samples, start of the latest VA bin) of a run, as committed."""
        with self.engine.connect() as conn:
            n_ep = conn.execute(
                sa.select(sa.func.count()).where(episodes.c.run_id == run_id)
            ).scalar_one()
            bins = [b for _, _, b in q.va_bins(conn, camera, run_id=run_id)]
        last = max((b.start for b in bins), default=0.0)
        return int(n_ep), sum(b.n for b in bins), last


@pytest.fixture
def deployment(
    ray_cluster: Any,
    models: None,
    cameras: list[RtspServer],
    mqtt_broker: Broker,
    pg_url: str,
    tmp_path: Path,
) -> Iterator[HistoryDeployment]:
    """cam0 and cam1 on the cluster, writing into one PostgreSQL, driven from here."""
    from streamer.cluster.driver import run_cluster
    from streamer.config import load_config
    from streamer.history.config import HistoryConfig
    from streamer.history.database import make_engine

    cams = "\n".join(
        f"  - name: cam{i}\n    url: {c.url}\n    backoff: {{initial_s: 0.2, max_s: 1}}"
        for i, c in enumerate(cameras[:2])
    )
    path = tmp_path / "cluster-history.yaml"
    path.write_text(
        f"cameras:\n{cams}\n"
        f"mqtt: {{host: {mqtt_broker.host}, port: {mqtt_broker.port}, prefix: hist}}\n"
        f"cluster:\n  address: '{ray_cluster.address}'\n  namespace: {NAMESPACE}\n"
        f"  lease_s: 3\n  start_timeout_s: {START_S}\n"
        f"history:\n  url: {pg_url}\n  commit_interval_s: {COMMIT_S}\n" + EPISODE_RULES
    )
    cfg = load_config(path)
    stop = threading.Event()
    errors: list[BaseException] = []

    def drive() -> None:
        try:
            run_cluster(cfg, source=str(path), stop=stop)
        except BaseException as err:
            errors.append(err)

    thread = threading.Thread(target=drive, name="test-history-driver", daemon=True)
    thread.start()
    engine = make_engine(HistoryConfig(url=pg_url), writer=False)
    dep = HistoryDeployment(stop, thread, errors, engine)
    try:
        yield dep
    finally:
        stop.set()
        thread.join(60)
        engine.dispose()


def test_two_actors_write_one_postgres_and_a_killed_one_loses_at_most_a_batch(
    deployment: HistoryDeployment,
) -> None:
    dep = deployment

    def both_cameras_have_episodes() -> bool:
        assert not dep.errors, dep.errors
        try:
            by_run = dep.episodes_by_run()
        except sa.exc.ProgrammingError:  # the actors have not made the tables yet
            return False
        return {"cam0", "cam1"} <= set().union(*by_run.values(), set())

    wait_until_sync(both_cameras_have_episodes, START_S, "episodes of both cameras", poll_s=1)
    first = {r["id"]: r for r in dep.runs()}
    by_camera = {r["cameras"][0]: r for r in first.values()}
    # One run per actor, each with its one camera, in two processes, all live.
    assert sorted(by_camera) == ["cam0", "cam1"] and len(first) == 2, first
    assert all(len(r["cameras"]) == 1 and r["kind"] == "live" for r in first.values())
    assert by_camera["cam0"]["pid"] != by_camera["cam1"]["pid"]
    for cam, r in by_camera.items():
        st = dep.status(cam)
        assert st is not None and st.pid == r["pid"], (cam, st)
    assert dep.episodes_by_run() == {by_camera[c]["id"]: {c} for c in ("cam0", "cam1")}

    victim, other = by_camera["cam0"], by_camera["cam1"]
    wait_until_sync(
        lambda: time.time() - victim["started_at"] >= RUN_BEFORE_KILL_S,
        RUN_BEFORE_KILL_S + 5,
        "the victim to run a while",
    )
    before = dep.committed(victim["id"], "cam0")
    t_kill = time.time()
    os.kill(victim["pid"], signal.SIGKILL)

    # The replacement starts (Ray restarts the actor) and writes as a new run of cam0.
    def replacement_writing() -> dict[str, Any] | None:
        for r in dep.runs():
            new = r["cameras"] == ["cam0"] and r["id"] not in first
            if new and dep.committed(r["id"], "cam0")[1] > 0:
                return r
        return None

    new = wait_until_sync(replacement_writing, FAILOVER_S, "cam0's replacement writing")
    assert new["pid"] != victim["pid"]
    st = dep.status("cam0")
    assert st is not None and st.pid == new["pid"] and st.reconstructed

    # What the killed actor committed is all there; it lost at most its last batch.
    after = dep.committed(victim["id"], "cam0")
    assert after[0] >= before[0] and after[1] >= before[1]  # nothing committed lost
    lost_s = t_kill - after[2]  # at most: the latest bin may hold samples up to its end
    assert lost_s <= COMMIT_S + BIN_S + LATE_COMMIT_S, f"VA of the last {lost_s:.1f} s lost"
    killed = next(r for r in dep.runs() if r["id"] == victim["id"])
    assert killed["ended_at"] is None  # no clean end recorded for it
    assert killed["last_seen"] >= t_kill - COMMIT_S - LATE_COMMIT_S
    # The other camera's actor went on, in the same run.
    n_other = dep.committed(other["id"], "cam1")[1]
    wait_until_sync(
        lambda: dep.committed(other["id"], "cam1")[1] > n_other, FAILOVER_S, "cam1 to write on"
    )
    assert dep.status("cam1").pid == other["pid"]

    # A clean stop ends both running runs; the killed one stays without an end.
    dep.stop.set()
    dep.thread.join(60)
    assert not dep.errors, dep.errors
    ended = {r["id"]: r["ended_at"] is not None for r in dep.runs()}
    assert ended == {victim["id"]: False, other["id"]: True, new["id"]: True}
    print(
        f"killed actor: {after[1]} VA samples committed, at most the last {lost_s:.2f} s lost "
        f"(commit interval {COMMIT_S} s)"
    )
