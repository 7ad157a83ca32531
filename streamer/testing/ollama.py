"""A real HTTP server on loopback that speaks the Ollama API the describer uses.

Endpoints: ``POST /api/chat`` (streaming NDJSON and not), ``GET /api/tags``,
``POST /api/embed``, ``GET /api/version``. Behaviour is chosen by ``mode`` (may change
while running):

- ``happy``: a valid structured answer that echoes the VA numbers of the prompt.
- ``slow``: holds the request until :meth:`FakeOllama.release` (or 30 s), then answers.
- ``delay``: every chat answer comes ``delay_s`` late (2 s by default), then ``happy``.
- ``error500``: HTTP 500 with an Ollama-style ``{"error": ...}`` body.
- ``malformed``: HTTP 200 whose body is not JSON.
- ``garbage``: a valid envelope whose message content is prose, not JSON.
- ``blank``: a valid envelope with empty content.
- ``invalid_once``: ``garbage`` for the first chat request, ``happy`` afterwards.

Every request is recorded (path and parsed JSON body) for assertions.

Run on its own (the container check runs it as the compose stack's ``ollama`` service)::

    python -m streamer.testing.ollama --host 0.0.0.0 --port 11434 --model qwen2.5:0.5b

Run that way, ``POST /_fake/mode`` (``{"mode": "garbage"}``) changes the mode and
``GET /_fake/counts`` returns the requests per path (neither is recorded);
:class:`FakeOllamaProcess` drives such a child, so that a soak's measured process holds
none of the server's threads, sockets or objects.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import math
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODES = ("happy", "slow", "delay", "error500", "malformed", "garbage", "blank", "invalid_once")

_VA = re.compile(r"valence ([+-]\d\.\d\d), arousal ([+-]\d\.\d\d)")
SLOW_HOLD_S = 30.0  # upper bound on how long a slow handler holds a request


def embed_text(text: str, dim: int = 64) -> list[float]:
    """Deterministic bag-of-words vector: shared words give a high cosine."""
    vec = [0.0] * dim
    for word in re.findall(r"[a-z]+", text.lower()):
        h = int(hashlib.sha256(word.encode()).hexdigest(), 16)
        vec[h % dim] += 1.0 if (h >> 8) & 1 else -1.0
    norm = math.sqrt(sum(x * x for x in vec)) or 1.0
    return [x / norm for x in vec]


THREAD_PREFIX = "fake-ollama"  # the names of the server's threads


class _QuietServer(ThreadingHTTPServer):
    """A client that gave up (timeout tests) is expected: no traceback for it."""

    daemon_threads = True
    fake: FakeOllama

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def process_request(self, request: Any, client_address: Any) -> None:
        """One daemon thread per request, named as the server's (a test tells them apart)."""
        threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"{THREAD_PREFIX}-request",
            daemon=True,
        ).start()


class _Handler(BaseHTTPRequestHandler):
    """Serves one request for the :class:`FakeOllama` that owns the server."""

    server: _QuietServer

    protocol_version = "HTTP/1.1"

    @property
    def fake(self) -> FakeOllama:
        return self.server.fake

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode())

    def do_GET(self) -> None:
        if self.path == "/_fake/counts":
            with self.fake._lock:
                self._json(200, dict(self.fake._counts))
            return
        self.fake._record(self.path, None)
        if self.path == "/api/tags":
            self._json(
                200,
                {
                    "models": [
                        {"name": self.fake.tagged, "model": self.fake.tagged},
                        {"name": "embedder:latest", "model": "embedder:latest"},
                    ]
                },
            )
        elif self.path == "/api/version":
            self._json(200, {"version": "0.0.0-fake"})
        else:
            self._json(404, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            body = {"_unparsed": raw.decode("utf-8", "replace")}
        if self.path == "/_fake/mode":
            mode = body.get("mode") if isinstance(body, dict) else None
            if mode not in MODES:
                self._json(400, {"error": f"unknown mode {mode!r}; one of {', '.join(MODES)}"})
                return
            self.fake.mode = mode
            self._json(200, {"mode": mode})
            return
        n = self.fake._record(self.path, body)
        if self.path == "/api/embed":
            inputs = body.get("input", [])
            if isinstance(inputs, str):
                inputs = [inputs]
            self._json(
                200,
                {"model": body.get("model"), "embeddings": [embed_text(t) for t in inputs]},
            )
            return
        if self.path != "/api/chat":
            self._json(404, {"error": f"no route {self.path}"})
            return
        mode = self.fake.mode
        if mode == "invalid_once":
            mode = "garbage" if n == 1 else "happy"
        mode = self.fake._hold(mode)
        if mode == "error500":
            self._json(500, {"error": "model runner crashed"})
            return
        if mode == "malformed":
            self._send(200, b'{"model": "x", "message": {"role": "assist')
            return
        if mode == "garbage":
            content = "I think this person looks quite happy, maybe content!"
        elif mode == "blank":
            content = "   "
        else:
            content = json.dumps(self.fake.answer_for(body))
        self._chat_reply(body, content)

    def _chat_reply(self, body: dict[str, Any], content: str) -> None:
        model = body.get("model", self.fake.model)
        if not body.get("stream", True):
            self._json(
                200,
                {
                    "model": model,
                    "created_at": "2026-01-01T00:00:00Z",
                    "message": {"role": "assistant", "content": content},
                    "done": True,
                    "done_reason": "stop",
                },
            )
            return
        step = max(1, len(content) // 4)
        pieces = [content[i : i + step] for i in range(0, len(content), step)] or [""]
        lines = [
            {"model": model, "message": {"role": "assistant", "content": p}, "done": False}
            for p in pieces
        ]
        lines.append(
            {
                "model": model,
                "message": {"role": "assistant", "content": ""},
                "done": True,
                "done_reason": "stop",
            }
        )
        payload = b"".join(json.dumps(x).encode() + b"\n" for x in lines)
        self._send(200, payload, "application/x-ndjson")


class FakeOllama:
    """``with FakeOllama("happy") as srv: srv.url`` -> ``http://127.0.0.1:PORT``.

    ``keep`` bounds the request log (:attr:`requests`, :meth:`chat_bodies`) to the newest
    requests; :meth:`count` stays exact.
    """

    def __init__(
        self,
        mode: str = "happy",
        port: int = 0,
        model: str = "llama3.2",
        delay_s: float = 2.0,
        host: str = "127.0.0.1",
        keep: int | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        self.mode = mode
        self.delay_s = delay_s  # "delay" mode: every chat answer comes this late
        self.model = model
        # The newest ``keep`` requests (all of them when None); counts are always exact,
        # so a long soak's server holds bounded memory.
        self.requests: collections.deque[tuple[str, Any]] = collections.deque(maxlen=keep)
        self._counts: collections.Counter[str] = collections.Counter()
        self._release = threading.Event()
        self._lock = threading.Lock()
        self.holding = 0  # slow requests being held right now
        self._server = _QuietServer((host, port), _Handler)
        self._server.fake = self
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=THREAD_PREFIX,
            daemon=True,
        )

    def _hold(self, mode: str) -> str:
        """Delay or hold a chat request as ``mode`` says; returns the mode to answer in."""
        if mode == "delay":
            self._release.wait(self.delay_s)  # stop() cuts it short
            return "happy"
        if mode == "slow":
            with self._lock:
                self.holding += 1
            try:
                self._release.wait(SLOW_HOLD_S)
            finally:
                with self._lock:
                    self.holding -= 1
            return "happy"
        return mode

    def _record(self, path: str, body: Any) -> int:
        """Record a request; returns how many chat requests there were so far."""
        with self._lock:
            self.requests.append((path, body))
            self._counts[path] += 1
            return self._counts["/api/chat"]

    @staticmethod
    def answer_for(body: dict[str, Any]) -> dict[str, Any]:
        """A schema-valid answer echoing the current VA of the prompt."""
        user = next(
            (m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user"),
            "",
        )
        m = _VA.search(user)
        va = f"valence {m.group(1)}, arousal {m.group(2)}" if m else "no numbers"
        return {
            "basic": "happiness",
            "complex": ["Happiness", "pleasure"],
            "description": f"A warm smile with relaxed eyes ({va}).",
        }

    @property
    def tagged(self) -> str:
        """The model as ``/api/tags`` lists it: with ``:latest`` unless it has a tag."""
        return self.model if ":" in self.model else f"{self.model}:latest"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def chat_bodies(self) -> list[dict[str, Any]]:
        with self._lock:
            return [b for p, b in self.requests if p == "/api/chat"]

    def count(self, path: str) -> int:
        with self._lock:
            return self._counts[path]

    def release(self) -> None:
        """Let held (slow) requests answer."""
        self._release.set()

    def start(self) -> FakeOllama:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeOllama:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class FakeOllamaProcess:
    """A :class:`FakeOllama` in a child process, driven over its ``/_fake/`` routes.

    ``with FakeOllamaProcess("happy") as srv: srv.set_mode("error500")``; :meth:`count`
    as :meth:`FakeOllama.count`.
    """

    def __init__(self, mode: str = "happy", model: str = "llama3.2", keep: int = 50) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        self.mode, self.model, self.keep = mode, model, keep
        self._proc: subprocess.Popen[str] | None = None
        self._port = 0

    def start(self) -> FakeOllamaProcess:
        cmd = [sys.executable, "-m", "streamer.testing.ollama", "--port", "0"]
        cmd += ["--mode", self.mode, "--model", self.model, "--keep", str(self.keep)]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()  # "READY <port>" once it listens
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"the fake Ollama server did not start: {line!r}")
        self._port = int(line.split()[1])
        return self

    def _call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path, data=data, method="GET" if data is None else "POST"
        )
        with urllib.request.urlopen(req, timeout=5) as resp:  # loopback, our own child
            return json.loads(resp.read())

    def set_mode(self, mode: str) -> None:
        self._call("/_fake/mode", {"mode": mode})
        self.mode = mode

    def count(self, path: str) -> int:
        return int(self._call("/_fake/counts").get(path, 0))

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._proc = None

    def __enter__(self) -> FakeOllamaProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT (as PID 1 of a container too: a handler is set)."""
    parser = argparse.ArgumentParser(description="a server speaking the Ollama API (tests)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11434)
    parser.add_argument("--model", default="llama3.2")
    parser.add_argument("--mode", choices=MODES, default="happy")
    parser.add_argument("--keep", type=int, default=None, help="requests kept (default: all)")
    args = parser.parse_args(argv)
    fake = FakeOllama(args.mode, port=args.port, model=args.model, host=args.host, keep=args.keep)

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    print(f"READY {fake.port}", flush=True)
    try:
        fake._server.serve_forever(poll_interval=0.2)
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        fake._server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
