"""Real media servers and synthetic clips for tests and benchmarks of live sources.

* :class:`RtspServer` runs :mod:`streamer.testing.gst_rtsp_serve` (GStreamer's RTSP
  server) in a child process with Debian's ``/usr/bin/python3``, and can kill, pause
  (SIGSTOP: the connection stays open but nothing is sent) and resume it.
* :func:`make_clip` encodes a synthetic H.264 MP4 with PyAV; :func:`corrupt_packets`
  overwrites the payload of chosen packets in place (container structure intact);
  :func:`loop_clip` remuxes a real clip back to back until it is long enough.
* :class:`SilentServer` accepts TCP connections and never answers.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np

from streamer.errors import MediaError
from streamer.testing.net import free_port

SYSTEM_PYTHON = os.environ.get("STREAMER_GST_PYTHON", "/usr/bin/python3")
SERVER_SCRIPT = Path(__file__).with_name("gst_rtsp_serve.py")
READY_TIMEOUT_S = 20.0  # how long to wait for the server's READY line (seconds)


def gst_rtsp_unavailable() -> str | None:
    """Why the GStreamer RTSP server cannot run here, or None when it can."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found (set STREAMER_GST_PYTHON)"
    probe = (
        "import gi; gi.require_version('GstRtspServer', '1.0'); "
        "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
        "import sys; sys.exit(0 if all(Gst.ElementFactory.find(e) for e in "
        "('qtdemux', 'h264parse', 'rtph264pay')) else 3)"
    )
    try:
        proc = subprocess.run(
            [SYSTEM_PYTHON, "-c", probe], capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"cannot run {SYSTEM_PYTHON}: {err}"
    if proc.returncode == 3:
        return (
            "GStreamer plugins qtdemux/h264parse/rtph264pay missing (gstreamer1.0-plugins-good/bad)"
        )
    if proc.returncode != 0:
        return "python3-gi with gir1.2-gst-rtsp-server-1.0 is not installed"
    return None


class RtspServer:
    """A real RTSP server on loopback serving one H.264 MP4 at its native rate.

    Args:
        clip: MP4 file with an H.264 video track.
        port: TCP port (a free one when None); kept across :meth:`restart`.
        mount: path of the stream.
        user: when set, the URL carries ``user:password@`` (the server ignores it; it
            is there to check redaction).
    """

    def __init__(
        self,
        clip: Path,
        port: int | None = None,
        mount: str = "/cam",
        user: str | None = None,
        password: str = "s3cret",
    ) -> None:
        self.clip = Path(clip)
        self.port = port or free_port()
        self.mount = mount
        self._auth = f"{user}:{password}@" if user else ""
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"rtsp://{self._auth}127.0.0.1:{self.port}{self.mount}"

    def start(self) -> RtspServer:
        """Start the server and wait for it to listen."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("server already running")
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            self.proc = subprocess.Popen(
                [
                    SYSTEM_PYTHON,
                    str(SERVER_SCRIPT),
                    "--port",
                    str(self.port),
                    "--file",
                    str(self.clip),
                    "--mount",
                    self.mount,
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            line = self._read_line(deadline)
            if line.startswith("READY"):
                return self
            # Not ready (port still held, or just slow): make sure this instance is gone
            # before trying again, or a late starter would keep serving on the port after
            # a later kill() and a "dead" camera would come back.
            self.proc.kill()
            self._reap()
            # The port may still be held by the previous instance's sockets: retry.
            if time.monotonic() > deadline:
                raise MediaError(f"RTSP test server did not start on port {self.port}")
            time.sleep(0.2)

    def _read_line(self, deadline: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        stdout = self.proc.stdout
        result: list[str] = []
        reader = threading.Thread(
            target=lambda: result.append(stdout.readline()),
            daemon=True,
        )
        reader.start()
        reader.join(max(0.0, deadline - time.monotonic()))
        return result[0] if result else ""

    def kill(self) -> None:
        """SIGKILL: connections drop at once, like a crashed camera."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        self._reap()

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing more is sent (a stall)."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)

    def restart(self) -> RtspServer:
        self.kill()
        return self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._reap()

    def _reap(self) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        self.proc = None

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class SilentServer:
    """A TCP server on loopback that accepts connections and never sends a byte, or, with
    ``garbage``, answers each with random bytes and then falls silent."""

    def __init__(self, garbage: bool = False) -> None:
        self.garbage = garbage
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self._sock.settimeout(0.2)
        self.port = int(self._sock.getsockname()[1])
        self.accepted = 0
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            self._conns.append(conn)
            if self.garbage:
                with contextlib.suppress(OSError):
                    conn.sendall(os.urandom(512))

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self._conns:
            conn.close()
        self._sock.close()


def make_clip(
    path: Path,
    seconds: float,
    fps: int = 30,
    size: tuple[int, int] = (320, 240),
    gop: int | None = None,
) -> Path:
    """Encode a synthetic H.264 MP4 (moving bars; no faces) with PyAV.

    Args:
        path: output file.
        seconds: duration.
        fps: frame rate (frames/s).
        size: (width, height) in pixels.
        gop: keyframe interval in frames (default: one per second).
    """
    width, height = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop or fps
        stream.options = {"preset": "ultrafast", "tune": "zerolatency", "bf": "0"}
        for i in range(round(seconds * fps)):
            img = np.zeros((height, width, 3), np.uint8)
            img[:, :, 1] = (i * 4) % 256
            y = (i * 3) % max(1, height - 16)
            img[y : y + 16, :, 2] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def corrupt_packets(path: Path, indices: list[int], seed: int = 0) -> list[int]:
    """Overwrite the payload of the video packets at ``indices`` with random bytes.

    The container index and each packet's length prefix stay intact, so demuxers still
    deliver the packets and the decoder rejects their content.

    Returns:
        The byte offsets that were changed (one per packet).
    """
    with av.open(str(path)) as src:
        packets = [(p.pos, p.size) for p in src.demux(video=0) if p.size and p.pos is not None]
    data = bytearray(path.read_bytes())
    rng = random.Random(seed)
    offsets: list[int] = []
    for i in indices:
        pos, size = packets[i]
        for j in range(pos + 6, pos + size):
            data[j] = rng.randrange(256)
        offsets.append(pos)
    path.write_bytes(bytes(data))
    return offsets


def loop_clip(src: Path, dst: Path, min_seconds: float) -> Path:
    """Remux the video track of ``src`` back to back until ``dst`` lasts ``min_seconds``.

    No re-encoding: a real clip stays bit-identical, only timestamps are shifted.
    """
    if min_seconds <= 0:
        shutil.copyfile(src, dst)
        return dst
    with av.open(str(src)) as inp:
        istream = inp.streams.video[0]
        packets = [p for p in inp.demux(istream) if p.size]
        time_base = istream.time_base
        rate = istream.average_rate or Fraction(30)
        if not packets or time_base is None:
            raise MediaError(f"{src}: no video packets")
        first = min(p.pts for p in packets if p.pts is not None)
        last = max(p.pts for p in packets if p.pts is not None)
        span = last - first + round(1 / (rate * time_base))
        n = max(1, int(np.ceil(min_seconds / float(span * time_base))))
        with av.open(str(dst), "w") as out:
            ostream = out.add_stream_from_template(istream)
            for k in range(n):
                for p in packets:
                    q = av.Packet(bytes(p))
                    q.pts = None if p.pts is None else p.pts - first + k * span
                    q.dts = None if p.dts is None else p.dts - first + k * span
                    q.is_keyframe = p.is_keyframe
                    q.time_base = time_base
                    q.stream = ostream
                    out.mux(q)
    return dst
