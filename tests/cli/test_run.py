"""``streamer run``: live cameras end to end, clean stop on SIGTERM, bad input.

The end-to-end tests use a real RTSP server (GStreamer) serving a real face clip, the
real models from the store and a real ``streamer`` process.
"""

from __future__ import annotations

import asyncio
import faulthandler
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamer.config import AppConfig, parse_config
from streamer.errors import ConfigError
from streamer.messages import Detection, VASample
from streamer.pipeline import FaceDetector
from streamer.store import default_store
from streamer.supervise import RestartPolicy
from streamer.testing.mqtt import Broker
from streamer.testing.net import free_port
from streamer.testing.sources import RtspServer, loop_clip
from tests.helpers.cli import read_jsonl, run_streamer
from tests.helpers.wait import SLACK_S, wait_until, wait_until_sync


@pytest.fixture
def face_server(face_loop: Path) -> Iterator[RtspServer]:
    """A real RTSP camera whose URL carries a password (tests using it: ``rtsp``)."""
    with RtspServer(face_loop, user="admin", password="CamPass42") as srv:
        yield srv


def write_config(path: Path, cameras: list[tuple[str, str]], extra: str = "") -> Path:
    lines = ["cameras:"]
    for name, url in cameras:
        lines += [f"  - name: {name}", f"    url: {url}", "    backoff: {initial_s: 0.2, max_s: 1}"]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


@pytest.mark.rtsp
def test_sigterm_stops_a_live_run_cleanly(
    models: None, face_server: RtspServer, tmp_path: Path
) -> None:
    dead = f"rtsp://admin:CamPass42@127.0.0.1:{free_port()}/gone"
    cfg = write_config(tmp_path / "live.yaml", [("front", face_server.url), ("dead", dead)])
    out = tmp_path / "live.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamer", "run", "--config", str(cfg), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "300"},
    )
    try:

        def va_on_disk() -> bool:
            if out.exists() and '"streamer.va/1"' in out.read_text():
                return True
            assert proc.poll() is None, proc.communicate()
            return False

        # A live log is on disk while the run goes on (a SIGKILL loses only what is queued).
        wait_until_sync(va_on_disk, what="a VA record from the live camera", poll_s=0.1)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=SLACK_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    stop_s = float(stderr.split("stopped in ")[1].split(" s")[0])
    assert stop_s < 5.0  # measured by the process from the signal to the end of the run
    assert "threads still running" not in stderr
    assert "CamPass42" not in stderr
    records = read_jsonl(out)  # complete after the clean stop
    assert "CamPass42" not in out.read_text()
    va = [r for r in records if r["schema"] == "streamer.va/1"]
    assert va and all(r["camera"] == "front" and "wall_time" in r for r in va)
    assert all(-1.0 <= r["valence"] <= 1.0 and -1.0 <= r["arousal"] <= 1.0 for r in va)
    statuses = [r for r in records if r["schema"] == "streamer.status/1"]
    front = [r["state"] for r in statuses if r["camera"] == "front"]
    dead_states = [r["state"] for r in statuses if r["camera"] == "dead"]
    assert front[0] == "starting" and "online" in front and front[-1] == "stopped"
    assert "offline" in dead_states and "online" not in dead_states
    assert dead_states[-1] == "stopped"


@pytest.mark.rtsp
async def test_run_live_in_process_leaves_no_thread(models: None, face_server: RtspServer) -> None:
    from streamer.compose import build_pipeline
    from streamer.runtime.live import run_live

    cfg = parse_config(
        f"cameras:\n  - name: front\n    url: {face_server.url}\n"
        f"  - name: dead\n    url: rtsp://127.0.0.1:{free_port()}/x\n"
    )
    before = set(threading.enumerate())
    pipe = build_pipeline(cfg, default_store())
    sub = pipe.bus.subscribe("test", maxsize=100_000)
    stop = asyncio.Event()

    async def stop_after_samples(n: int) -> None:
        seen = 0
        async for msg in sub:
            if isinstance(msg, VASample):
                seen += 1
                if seen >= n:
                    stop.set()

    watcher = asyncio.create_task(stop_after_samples(20))
    result = await asyncio.wait_for(
        run_live(cfg, stop=stop, pipeline=pipe, handle_signals=False), SLACK_S
    )
    await watcher
    assert result.cameras["front"].frames >= 20
    assert result.sources["front"].reconnects == 0
    assert result.sources["dead"].frames == 0
    assert result.leftover_threads == []
    assert [
        t
        for t in threading.enumerate()
        if t not in before and t.is_alive() and not t.name.startswith("asyncio_")
    ] == []


def test_run_without_cameras_is_a_clear_error(tmp_path: Path) -> None:
    cfg = tmp_path / "none.yaml"
    cfg.write_text("log_level: info\n")
    proc = subprocess.run(
        [sys.executable, "-m", "streamer", "run", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "no cameras configured" in proc.stderr


def test_select_cameras() -> None:
    from streamer.runtime.live import select_cameras

    cfg = parse_config("cameras:\n  - {name: a, url: x.mp4}\n  - {name: b, url: y.mp4}\n")
    assert [c.name for c in select_cameras(cfg, None, "f").cameras] == ["a", "b"]
    assert [c.name for c in select_cameras(cfg, ["b"], "f").cameras] == ["b"]
    with pytest.raises(ConfigError, match="no camera named c"):
        select_cameras(cfg, ["c"], "f")


@pytest.mark.parametrize(
    ("yaml_text", "needle"),
    [
        ("cameras:\n  - {name: a, url: x, fps: 0}\n", "fps"),
        ("cameras:\n  - {name: a, url: x, stall_timeout: 5}\n", "stall_timeout"),
        ("cameras:\n  - {name: a, url: x, backoff: {initial_s: 9, max_s: 1}}\n", "max_s"),
        ("cameras:\n  - {name: 'a b', url: x}\n", "name"),
        ("cameras:\n  - {name: a, url: x, transport: quic}\n", "transport"),
    ],
)
def test_bad_camera_config_names_the_key_and_line(yaml_text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(yaml_text, "cams.yaml")
    assert "cams.yaml:2" in str(info.value)
    assert needle in str(info.value)


class _HangingDetector:
    """Makes real YuNet detectors whose chosen calls block until released."""

    def __init__(self, hang_on: Callable[[int], bool]) -> None:
        self.release = threading.Event()
        self.calls = 0
        self.hung = 0
        self.hang_on = hang_on

    def factory(self, cfg: AppConfig) -> Callable[[], FaceDetector]:
        from streamer.faces.yunet import YuNetDetector

        outer = self
        path = default_store().path("yunet")

        class Detector(YuNetDetector):
            def detect(self, image: np.ndarray) -> list[Detection]:
                outer.calls += 1
                if outer.hang_on(outer.calls):
                    outer.hung += 1
                    outer.release.wait(120)
                return super().detect(image)

        return lambda: Detector(path, cfg.faces.detector)


async def _run_with_detector(
    store_path: Callable[[str], Path],
    detector: _HangingDetector,
    until: Callable[[Any], bool],
    policy: RestartPolicy,
) -> Any:
    from streamer.compose import build_pipeline
    from streamer.runtime.live import run_live

    clip = store_path("single_face.mp4")
    cfg = parse_config(f"cameras:\n  - {{name: cam, url: '{clip}', loop: true}}\n")
    pipe = build_pipeline(cfg, default_store(), detector_factory=detector.factory(cfg))
    stop = asyncio.Event()

    async def watch() -> None:
        try:
            await wait_until(lambda: until(pipe), 90, "the test's condition")
        finally:
            stop.set()

    watcher = asyncio.create_task(watch())
    try:
        return await asyncio.wait_for(
            run_live(cfg, stop=stop, pipeline=pipe, handle_signals=False, policy=policy),
            90,
        )
    finally:
        detector.release.set()
        watcher.cancel()


async def test_hung_analysis_is_restarted_and_frames_flow_again(
    models: None, store_path: Callable[[str], Path]
) -> None:
    """The analysis of a camera hangs once; the watchdog restarts it."""
    detector = _HangingDetector(lambda n: n == 10)
    result = await _run_with_detector(
        store_path,
        detector,
        # Detection runs every 2nd frame, so call 10 is near frame 20: 60 analysed
        # frames can only come from the restarted analysis.
        lambda pipe: "cam" in pipe.stats and pipe.stats["cam"].frames >= 60,
        RestartPolicy(hang_timeout_s=1.0),
    )
    health = result.analysis["cam"]
    assert detector.hung == 1
    assert health.hangs == 1 and health.failures == 0 and not health.degraded
    assert result.cameras["cam"].frames >= 60
    assert result.sources["cam"].skipped > 0  # the source kept going while analysis hung


async def test_restart_storm_marks_the_analysis_degraded(
    models: None, store_path: Callable[[str], Path]
) -> None:
    detector = _HangingDetector(lambda n: True)  # every analysis hangs at once
    policy = RestartPolicy(hang_timeout_s=1.0, storm_restarts=1, restart_max_s=0.5)
    result = await _run_with_detector(store_path, detector, lambda pipe: detector.hung >= 3, policy)
    health = result.analysis["cam"]
    assert health.hangs >= 2
    assert health.degraded


def _make_churn_clip(faces_jpg: Path, out: Path, seconds: float = 8.0, fps: int = 15) -> Path:
    """Real faces (cut from a photo) popping in and out of 6 slots every 0.4 s."""
    import random

    import av
    import cv2
    import numpy as np

    photo = cv2.imread(str(faces_jpg))
    assert photo is not None, faces_jpg
    boxes = [
        (686, 292, 787, 424),
        (315, 234, 410, 364),
        (531, 305, 626, 436),
        (439, 215, 516, 311),
        (212, 61, 303, 176),
    ]  # YuNet's boxes on multi_face.jpg
    patches = []
    for x1, y1, x2, y2 in boxes:
        m = 25
        crop = photo[max(0, y1 - m) : y2 + m, max(0, x1 - m) : x2 + m]
        patches.append(cv2.resize(crop, (100, 120)))
    slots = [(20 + 210 * (i % 3), 20 + 170 * (i // 3)) for i in range(6)]
    rng = random.Random(7)
    with av.open(str(out), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        stream.options = {"preset": "ultrafast", "bf": "0"}
        shown: list[tuple[int, int]] = []
        for i in range(round(seconds * fps)):
            if i % round(0.4 * fps) == 0:
                k = rng.randint(0, 6)
                shown = [(s, rng.randrange(len(patches))) for s in rng.sample(range(6), k)]
            img = np.full((360, 640, 3), 90, np.uint8)
            for s, p in shown:
                x, y = slots[s]
                img[y : y + 120, x : x + 100] = patches[p]
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out


async def test_face_churn_keeps_live_tracks_bounded(
    models: None, store_path: Callable[[str], Path], tmp_path: Path
) -> None:
    """Face churn on the live path: faces come and go; tracks stay within max_tracks."""
    from streamer.compose import build_pipeline
    from streamer.messages import TrackEvent, TrackEventKind
    from streamer.runtime.live import run_live

    clip = _make_churn_clip(store_path("multi_face.jpg"), tmp_path / "churn.mp4")
    max_tracks = 3
    cfg = parse_config(
        f"cameras:\n  - {{name: churn, url: '{clip}', realtime: false}}\n"
        f"faces:\n  tracker: {{max_tracks: {max_tracks}, min_hits: 3, max_age_s: 0.2}}\n"
        "  detector: {detect_every_n_frames: 1}\n"
    )
    pipe = build_pipeline(cfg, default_store())
    sub = pipe.bus.subscribe("churn", maxsize=1_000_000, lossless=True)
    result = await asyncio.wait_for(run_live(cfg, pipeline=pipe, handle_signals=False), SLACK_S * 3)
    assert result.cameras["churn"].frames == 120  # the file ended the run; no frame lost
    live: set[int] = set()
    appeared: set[int] = set()
    lost: set[int] = set()
    most_live = 0
    while (msg := sub.get_nowait()) is not None:
        if isinstance(msg, TrackEvent):
            if msg.kind is TrackEventKind.APPEARED:
                assert msg.track_id not in appeared  # ids are never reused
                appeared.add(msg.track_id)
                live.add(msg.track_id)
            else:
                live.discard(msg.track_id)
                lost.add(msg.track_id)
            most_live = max(most_live, len(live))
        elif isinstance(msg, VASample):
            assert msg.track_id in live  # samples only between appeared and lost
    assert len(appeared) >= 6  # real churn: many tracks were created and deleted
    assert most_live <= max_tracks
    assert lost == appeared and not live  # every track ended


def test_run_with_unset_url_variable_fails_before_opening(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "env.yaml", [("a", "rtsp://u:${STREAMER_TEST_UNSET}@h/x")])
    env = {k: v for k, v in os.environ.items() if k != "STREAMER_TEST_UNSET"}
    proc = subprocess.run(
        [sys.executable, "-m", "streamer", "run", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 1
    assert "STREAMER_TEST_UNSET is not set" in proc.stderr


def _retained(port: int, topic: str) -> dict[str, Any] | None:
    """The retained message on ``topic`` (via the real mosquitto_sub), or None."""
    proc = subprocess.run(
        [
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-t",
            topic,
            "-C",
            "1",
            "-W",
            "2",
            "--retained-only",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else None


@pytest.mark.rtsp
@pytest.mark.mqtt
def test_sigterm_with_mqtt_leaves_retained_stopped_statuses(
    models: None, face_server: RtspServer, tmp_path: Path
) -> None:
    """SIGTERM: statuses are retained on the broker; after SIGTERM they say ``stopped``."""
    broker = Broker(tmp_path, free_port())
    broker.start()
    port = broker.port
    try:
        cfg = write_config(
            tmp_path / "mqtt.yaml",
            [("front", face_server.url), ("dead", f"rtsp://127.0.0.1:{free_port()}/x")],
            extra=f"mqtt: {{host: 127.0.0.1, port: {port}, prefix: t, reconnect_min_s: 0.2}}\n",
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamer", "run", "--config", str(cfg)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:

            def front_online() -> bool:
                if (_retained(port, "t/front/status") or {}).get("state") == "online":
                    return True
                assert proc.poll() is None, proc.communicate()
                return False

            wait_until_sync(front_online, what="the camera online on the broker")
            assert (_retained(port, "t/dead/status") or {}).get("state") == "offline"
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=SLACK_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 0, stderr
        for camera in ("front", "dead"):
            status = _retained(port, f"t/{camera}/status")
            assert status is not None and status["state"] == "stopped", (camera, status)
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def shifted_face_clip(
    store_path: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """single_face.mp4 with the picture rolled right by 230 px: the face moves, whole."""
    import av
    import numpy as np

    d = tmp_path_factory.mktemp("shifted")
    once = d / "shifted_once.mp4"
    with av.open(str(store_path("single_face.mp4"))) as src, av.open(str(once), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        stream.options = {"preset": "ultrafast", "bf": "0"}
        for frame in src.decode(video=0):
            img = np.roll(frame.to_ndarray(format="bgr24"), 230, axis=1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return loop_clip(once, d / "shifted.mp4", 30.0)


@pytest.mark.rtsp
async def test_tracks_age_out_across_a_reconnect(
    models: None, face_server: RtspServer, shifted_face_clip: Path
) -> None:
    """Row 3: after the stream drops and comes back, the old track is lost, a new one
    appears, and media time never goes backwards.

    The camera comes back with the face elsewhere in the picture. (When it comes back
    at the very same place, the tracker matches the stale track before ageing it out
    and the track continues.)
    """
    from streamer.compose import build_pipeline
    from streamer.messages import CameraState, CameraStatus, TrackEvent, TrackEventKind
    from streamer.runtime.live import run_live

    cfg = parse_config(
        f"cameras:\n  - name: front\n    url: {face_server.url}\n"
        "    backoff: {initial_s: 0.2, max_s: 1.0}\n"
    )
    pipe = build_pipeline(cfg, default_store())
    sub = pipe.bus.subscribe("test", maxsize=100_000)
    stop = asyncio.Event()
    events: list[TrackEvent] = []
    times: list[float] = []

    async def drive() -> None:
        try:
            await steps()
        finally:
            stop.set()  # an error here ends the run at once and is raised below

    killed_after = 0  # appearances seen when the server was killed

    async def steps() -> None:
        nonlocal killed_after
        killed = restarted = False
        async for msg in sub:
            if isinstance(msg, VASample):
                times.append(msg.t)
            elif isinstance(msg, TrackEvent):
                events.append(msg)
            elif (
                isinstance(msg, CameraStatus)
                and msg.state is CameraState.OFFLINE
                and killed
                and not restarted
            ):
                restarted = True
                face_server.clip = shifted_face_clip
                await asyncio.to_thread(face_server.start)
            appeared = [e for e in events if e.kind is TrackEventKind.APPEARED]
            # Under load the stream may already have reconnected once (the clip ended)
            # and the track may have appeared again: kill after whichever came last.
            if appeared and len(times) >= 10 and not killed:
                killed, killed_after = True, len(appeared)
                face_server.kill()
            if restarted and len(appeared) > killed_after and len(times) >= 40:
                return

    driver = asyncio.create_task(drive())
    try:
        await asyncio.wait_for(run_live(cfg, stop=stop, pipeline=pipe, handle_signals=False), 90)
    except TimeoutError:
        faulthandler.dump_traceback(all_threads=True)  # where the reconnect got stuck
        raise
    await driver
    kinds = [(e.track_id, e.kind) for e in events]
    appeared = [t for t, k in kinds if k is TrackEventKind.APPEARED]
    before, after = appeared[killed_after - 1], appeared[killed_after]
    assert after != before
    # The track of before the kill was lost before the new one appeared (it aged out
    # over the gap).
    assert kinds.index((before, TrackEventKind.LOST)) < kinds.index(
        (after, TrackEventKind.APPEARED)
    )
    assert all(b >= a for a, b in itertools.pairwise(times))


HANGING_RUN = """
import sys, threading
from streamer.cli import setup_logging
from streamer.cli.run import report_run
from streamer.runtime.live import run_until_stopped
from streamer.compose import build_pipeline
from streamer.config import load_config
from streamer.faces.yunet import YuNetDetector
from streamer.store import default_store

calls = 0


class Hangs(YuNetDetector):
    def detect(self, image):
        global calls
        calls += 1
        if calls == 5:
            print("HUNG", file=sys.stderr, flush=True)
            threading.Event().wait()  # blocked for good, like a wedged native call
        return super().detect(image)


setup_logging(0, False)
cfg = load_config(sys.argv[1])
path = default_store().path("yunet")
pipe = build_pipeline(cfg, detector_factory=lambda: Hangs(path, cfg.faces.detector))
sys.exit(report_run(run_until_stopped(cfg, pipeline=pipe)))
"""


@pytest.mark.rtsp
def test_sigterm_with_a_stuck_stage_thread_still_exits(
    models: None, face_server: RtspServer, tmp_path: Path
) -> None:
    """SIGTERM while the analysis hangs: a wedged worker thread cannot block the exit."""
    cfg = write_config(tmp_path / "stuck.yaml", [("front", face_server.url)])
    proc = subprocess.Popen(
        [sys.executable, "-c", HANGING_RUN, str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "300"},
    )
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + SLACK_S
        seen = ""
        while "HUNG" not in seen:
            line = proc.stderr.readline()
            assert line, f"process ended early: {seen}"
            seen += line
            assert time.monotonic() < deadline, "the detector never hung"
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=SLACK_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    stderr = seen + rest
    assert proc.returncode == 0, stderr
    assert "threads stuck at exit" in stderr
    assert float(stderr.split("stopped in ")[1].split(" s")[0]) < 5.0


def test_duration_stops_a_run_with_a_looping_file_camera(
    models: None, store_path: Callable[[str], Path], tmp_path: Path
) -> None:
    clip = store_path("single_face.mp4")
    cfg = tmp_path / "file.yaml"
    cfg.write_text(f"cameras:\n  - {{name: filecam, url: '{clip}', loop: true}}\n")
    out = tmp_path / "file.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamer",
            "run",
            "--config",
            str(cfg),
            "--out",
            str(out),
            "--duration-s",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "300"},
    )
    assert proc.returncode == 0, proc.stderr
    records = read_jsonl(out)
    va = [r for r in records if r["schema"] == "streamer.va/1"]
    assert len(va) > 30
    # A looping file is reopened like a camera but never reported as a lost stream.
    states = [r["state"] for r in records if r["schema"] == "streamer.status/1"]
    assert states == ["starting", "online", "stopped"]


@pytest.mark.parametrize("command", [["run"], ["cluster", "status"]])
def test_a_bad_cluster_address_is_a_usage_error(tmp_path: Path, command: list[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "cameras:\n  - name: cam\n    url: rtsp://127.0.0.1:9/x\n"
        "mqtt:\n  host: 127.0.0.1\n  port: 1883\n"
    )
    proc = run_streamer(*command, "--config", str(cfg), "--cluster", "garbage::://x")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "pydantic" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert errors == [
        f"streamer {' '.join(command)}: error: argument --cluster: expected auto, local, "
        "ray://host:port or host:port, got 'garbage::://x'"
    ], proc.stderr
