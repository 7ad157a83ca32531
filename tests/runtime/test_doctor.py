"""``streamer doctor``: against real servers (a GStreamer RTSP camera, mosquitto with a
password, a server speaking the Ollama API), first all working, then one part broken at
a time: only that part fails, with what to do, and no secret in the output."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from streamer.history.config import HistoryConfig
from streamer.history.database import open_database
from streamer.history.schema import SCHEMA_VERSION
from streamer.runtime.doctor import Check, Report, check_postgres, check_sqlite, run_doctor
from streamer.testing.mqtt import Broker
from streamer.testing.net import free_port
from streamer.testing.ollama import FakeOllama
from streamer.testing.postgres import PostgresServer, postgres_unavailable
from streamer.testing.sources import RtspServer

pytestmark = pytest.mark.timeout(120)

MQTT_PASSWORD = "Mq77-doctor-pw"
CAMERA_PASSWORD = "CamPass42"
WEB_TOKEN = "doctor-token-0123456789abcdef"


@dataclass
class Stack:
    camera: RtspServer
    broker: Broker
    llm: FakeOllama
    history: Path


@pytest.fixture(scope="module")
def stack(face_loop: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("doctor")
    pwfile = work / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(pwfile), "alice", MQTT_PASSWORD],
        check=True,
        capture_output=True,
    )
    pwfile.chmod(0o600)
    broker = Broker(work, free_port(), f"allow_anonymous false\npassword_file {pwfile}\n")
    broker.start()
    camera = RtspServer(face_loop, user="admin", password=CAMERA_PASSWORD).start()
    llm = FakeOllama(model="llama3.2").start()
    try:
        yield Stack(camera, broker, llm, work / "history.db")
    finally:
        llm.stop()
        camera.stop()
        broker.stop()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The secrets the config names, in the environment."""
    values = {"DOC_MQTT_PW": MQTT_PASSWORD, "DOC_WEB_TOKEN": WEB_TOKEN}
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    return values


def parts(stack: Stack) -> dict[str, str]:
    """The YAML sections of a config that uses every part of ``stack``."""
    return {
        "cameras": (
            "cameras:\n"
            f"  - {{name: front, url: '{stack.camera.url}', open_timeout_s: 5, "
            "stall_timeout_s: 5}\n"
        ),
        "mqtt": (
            f"mqtt:\n  host: 127.0.0.1\n  port: {stack.broker.port}\n  username: alice\n"
            "  password_env: DOC_MQTT_PW\n  connect_timeout_s: 5\n"
        ),
        "llm": f"llm:\n  host: {stack.llm.url}\n  model: llama3.2\n",
        "web": f"web:\n  host: 127.0.0.1\n  port: {free_port()}\n",
        "history": f"history:\n  path: {stack.history}\n",
    }


def write_config(path: Path, stack: Stack, **broken: str) -> Path:
    """A config using every part of ``stack``; ``broken`` replaces a part's YAML."""
    path.write_text("".join((parts(stack) | broken).values()))
    return path


def by_name(report: Report) -> dict[str, Check]:
    return {c.name: c for c in report.checks}


@pytest.mark.mqtt
@pytest.mark.rtsp
def test_everything_working_passes_with_one_line_per_part(
    models: None, stack: Stack, env: dict[str, str], tmp_path: Path
) -> None:
    """The command itself: exit 0, one line per part in order, the camera's figures,
    and no secret anywhere."""
    cfg = write_config(tmp_path / "good.yaml", stack)
    proc = subprocess.run(
        [sys.executable, "-m", "streamer", "doctor", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, **env, "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    names = [line.split(":")[0].split(maxsplit=1)[1] for line in lines]
    assert names == ["config", "models", "camera front", "mqtt", "llm", "web", "history", "gpu"]
    assert all(line.startswith("ok ") for line in lines), lines
    camera = lines[2]
    assert "h264" in camera and "first frame in" in camera
    assert "as 'alice'" in lines[3]
    for secret in (MQTT_PASSWORD, CAMERA_PASSWORD, WEB_TOKEN):
        assert secret not in proc.stdout + proc.stderr
    # --json: the same checks for a script
    proc = subprocess.run(
        [sys.executable, "-m", "streamer", "doctor", "--config", str(cfg), "--json"],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, **env},
    )
    report = json.loads(proc.stdout)
    assert proc.returncode == 0 and report["ok"] is True
    front = next(c for c in report["checks"] if c["name"] == "camera front")
    assert front["data"]["codec"] == "h264" and front["data"]["width"] > 0
    assert front["data"]["first_frame_s"] < 10


def _black_hole() -> socket.socket:
    """A TCP port that accepts connections and never says a word (a wedged camera)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    return s


def _camera(url: str, timeout_s: float = 5) -> str:
    return (
        f"cameras:\n  - {{name: front, url: '{url}', open_timeout_s: {timeout_s}, "
        f"stall_timeout_s: {timeout_s}}}\n"
    )


@pytest.mark.parametrize(
    ("part", "name", "status", "words", "fix"),
    [
        ("refused camera", "camera front", "failed", "Connection refused", "check the URL"),
        ("silent camera", "camera front", "failed", "no answer within open_timeout_s", "URL"),
        ("wrong mqtt password", "mqtt", "failed", "refused the login of user 'alice'", "password"),
        ("unset mqtt password", "mqtt", "failed", "DOC_MQTT_UNSET is not set", "set it"),
        ("llm model missing", "llm", "failed", "has no model 'qwen9:7b'", "ollama pull qwen9:7b"),
        ("llm down", "llm", "failed", "does not answer", "ollama serve"),
        ("web port taken", "web", "failed", "cannot listen on 127.0.0.1", "change web.port"),
    ],
)
@pytest.mark.mqtt
@pytest.mark.rtsp
def test_one_broken_part_fails_alone(
    models: None,
    stack: Stack,
    env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    part: str,
    name: str,
    status: str,
    words: str,
    fix: str,
) -> None:
    hole, taken = _black_hole(), _black_hole()
    auth = f"admin:{CAMERA_PASSWORD}@127.0.0.1"
    good = parts(stack)
    broken = {
        "refused camera": {"cameras": _camera(f"rtsp://{auth}:{free_port()}/gone")},
        "silent camera": {"cameras": _camera(f"rtsp://{auth}:{hole.getsockname()[1]}/x", 1)},
        "wrong mqtt password": {},
        "unset mqtt password": {"mqtt": good["mqtt"].replace("DOC_MQTT_PW", "DOC_MQTT_UNSET")},
        "llm model missing": {"llm": f"llm:\n  host: {stack.llm.url}\n  model: qwen9:7b\n"},
        "llm down": {"llm": f"llm:\n  host: http://127.0.0.1:{free_port()}\n"},
        "web port taken": {"web": f"web:\n  port: {taken.getsockname()[1]}\n"},
    }[part]
    if part == "wrong mqtt password":
        monkeypatch.setenv("DOC_MQTT_PW", "wr0ng-" + MQTT_PASSWORD[::-1])
    try:
        report = run_doctor(write_config(tmp_path / "broken.yaml", stack, **broken))
    finally:
        hole.close()
        taken.close()
    checks = by_name(report)
    assert checks[name].status == status, checks[name]
    assert words in checks[name].detail and fix in checks[name].fix, checks[name]
    assert [c for c in report.checks if c.name != name and c.status != "ok"] == []
    assert report.failed is (status == "failed")
    text = json.dumps(report.as_dict())
    for secret in (MQTT_PASSWORD, CAMERA_PASSWORD, WEB_TOKEN):
        assert secret not in text
    if part == "silent camera":  # a dead camera costs at most its timeout (plus slack)
        assert checks[name].seconds < 1 + 1 + 2.5


@pytest.mark.mqtt
@pytest.mark.rtsp
def test_missing_models_say_how_to_fetch(
    stack: Stack, env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMER_CACHE_DIR", str(tmp_path / "empty"))
    monkeypatch.delenv("STREAMER_MODELS_DIR", raising=False)
    monkeypatch.delenv("STREAMER_MODEL_BUNDLE", raising=False)
    report = run_doctor(write_config(tmp_path / "c.yaml", stack))
    models = by_name(report)["models"]
    assert models.status == "failed"
    assert "streamer models fetch yunet fer" in models.fix
    assert report.failed


def test_invalid_config_is_the_only_check(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("mqtt:\n  hots: broker\n")
    proc = subprocess.run(
        [sys.executable, "-m", "streamer", "doctor", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        f"failed  config: {cfg}:2: mqtt.hots: unknown key -> fix the key named above"
    ]


def test_gpu_asked_for_but_absent(tmp_path: Path) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has CUDA: the config's request is met")
    cfg = tmp_path / "gpu.yaml"
    cfg.write_text("affect:\n  runtime: {type: onnx, device: cuda}\n")
    gpu = by_name(run_doctor(cfg))["gpu"]
    assert gpu.status == "failed"
    assert "affect.runtime wants cuda (onnx)" in gpu.detail and "onnxruntime-gpu" in gpu.fix


@pytest.mark.parametrize(
    ("setup", "status", "words"),
    [
        ("absent", "ok", "will be created"),
        ("no folder", "failed", "does not exist"),
        ("current", "ok", f"writable; schema version {SCHEMA_VERSION}"),
        ("older", "warning", f"schema version 1, migrated to {SCHEMA_VERSION} at start"),
        ("newer", "failed", f"schema version 99 is newer than this streamer's ({SCHEMA_VERSION})"),
        ("foreign", "failed", "is not a streamer history (it holds orders)"),
        ("locked", "failed", "database is locked"),
    ],
)
def test_sqlite_history_is_writable_and_versioned(
    tmp_path: Path, setup: str, status: str, words: str
) -> None:
    db = tmp_path / "history.db"
    holder = None
    if setup == "no folder":
        db = tmp_path / "nope" / "history.db"
    elif setup in ("older", "newer"):
        with contextlib.closing(sqlite3.connect(db)) as c, c:
            c.execute("CREATE TABLE alembic_version (version_num TEXT)")
            c.execute(
                "INSERT INTO alembic_version VALUES (?)", ("0001" if setup == "older" else "0099",)
            )
    elif setup == "foreign":
        with contextlib.closing(sqlite3.connect(db)) as c, c:
            c.execute("CREATE TABLE orders (x)")
    elif setup in ("current", "locked"):  # a history the store itself made
        open_database(HistoryConfig(path=db)).dispose()
    if setup == "locked":  # another writer holds the write lock for the whole check
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
    try:
        check = check_sqlite(db)
    finally:
        if holder is not None:
            holder.close()
    assert check.status == status and words in check.detail, check


@pytest.mark.postgres
def test_postgres_history_connects_and_reads_the_schema(tmp_path: Path) -> None:
    """A real PostgreSQL: empty, then made by the store; a database that does not exist
    and a stopped server fail with what to do."""
    why = postgres_unavailable()
    if why is not None:
        pytest.skip(f"PostgreSQL unavailable: {why}")
    with PostgresServer() as srv:
        cfg = HistoryConfig(url=srv.url)
        empty = check_postgres(cfg)
        assert empty.status == "ok" and "empty" in empty.detail, empty
        open_database(cfg).dispose()
        made = check_postgres(cfg)
        assert made.status == "ok" and f"schema version {SCHEMA_VERSION}" in made.detail, made
        gone = check_postgres(HistoryConfig(url=srv.url.rsplit("/", 1)[0] + "/nosuchdb"))
        assert gone.status == "failed" and "nosuchdb" in gone.detail, gone
        srv.stop()
        down = check_postgres(cfg)
        assert down.status == "failed" and "start the server" in down.fix, down
