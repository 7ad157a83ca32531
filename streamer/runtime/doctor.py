"""``streamer doctor``: check every part a config needs before leaving it alone.

One :class:`Check` per part, each ``ok``, ``warning`` (works, but look) or ``failed``
(will not work as configured) with what was found and what to do:

- ``config``: the file is valid (nothing else is checked when it is not);
- ``models``: the detector's and the VA network's files (and a llama.cpp GGUF) are in
  the store and match their sha256;
- ``camera NAME``: the source opens and decodes a first frame (resolution, fps, codec,
  seconds to the first frame), bounded by the camera's open and read timeouts;
- ``mqtt``: the broker accepts a connection with the configured credentials and TLS;
- ``llm``: the server answers and has the model (llama.cpp: the package and the file);
- ``web``: the port is free and the token is set where one is required;
- ``history``: the database is writable, and its schema version;
- ``gpu``: which GPU runtimes are available, and whether the config asks for a missing one.

The checks run concurrently, each under its own deadline; one that overruns (a camera
whose FFmpeg call never returns) is reported failed and its thread abandoned, so a dead
part costs at most its timeout. Every text goes through :func:`redact`: no password,
token or URL credential is ever printed.

    report = run_doctor(Path("config.yaml"))      # blocking, own event loop
    report.failed  # True when a configured part will not work
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from streamer.config import AppConfig, load_config
from streamer.errors import ConfigError, StreamerError
from streamer.history.config import HistoryConfig
from streamer.sources.config import CameraConfig
from streamer.sources.redact import redact

T = TypeVar("T")
Status = Literal["ok", "warning", "failed"]

SLACK_S = 2.0  # added to a part's own timeout before its check is abandoned (s)
CHECK_TIMEOUT_S = 15.0  # a check with no timeout of its own in the config (s)
MODELS_TIMEOUT_S = 120.0  # re-hashing the model files (s)
LLM_TIMEOUT_S = 10.0  # most an LLM server gets to list its models (s)
GPU_TIMEOUT_S = 60.0  # importing GPU runtimes (TensorRT is slow to import) (s)


@dataclass(frozen=True)
class Check:
    """The outcome of one check.

    Attributes:
        name: the part (``config``, ``models``, ``camera door``, ``mqtt``, ...).
        status: ``ok``, ``warning`` or ``failed``.
        detail: what was found (redacted).
        fix: what to do about it ("" when nothing).
        seconds: how long the check took.
        data: machine-readable findings (``--json``), e.g. a camera's resolution.
    """

    name: str
    status: Status
    detail: str
    fix: str = ""
    seconds: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        text = f"{self.status:<7} {self.name}: {self.detail}"
        return f"{text} -> {self.fix}" if self.fix else text


@dataclass(frozen=True)
class Report:
    """Every check of one config, in a fixed order."""

    config: str
    checks: list[Check]

    @property
    def failed(self) -> bool:
        return any(c.status == "failed" for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "ok": not self.failed,
            "checks": [asdict(c) for c in self.checks],
        }


def _check(name: str, status: Status, detail: str, fix: str = "", **data: Any) -> Check:
    return Check(name, status, redact(detail), redact(fix), data=data)


async def in_thread(fn: Callable[[], T], timeout_s: float, name: str) -> T:
    """``fn()`` in a daemon thread, awaited at most ``timeout_s``.

    Unlike ``asyncio.to_thread`` the thread is abandoned when the deadline passes (a
    blocking call that never returns keeps only its own thread), and it never holds
    up the interpreter's exit.

    Raises:
        TimeoutError: ``fn`` did not return in time.
    """
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if fut.done():
            return
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result, error = fn(), None
        except BaseException as err:  # handed to the awaiting task
            result, error = None, err
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name=f"doctor-{name}", daemon=True).start()
    async with asyncio.timeout(timeout_s):
        return await fut


async def _timed(name: str, timeout_s: float, body: Awaitable[Check]) -> Check:
    """Run one check under its deadline; what it raises becomes a failed check."""
    start = time.monotonic()
    try:
        async with asyncio.timeout(timeout_s):
            check = await body
    except TimeoutError:
        check = _check(
            name,
            "failed",
            f"no answer within {timeout_s:.0f} s",
            "check that the part is running and reachable from here",
        )
    except StreamerError as err:
        check = _check(name, "failed", str(err))
    return Check(
        check.name,
        check.status,
        check.detail,
        check.fix,
        round(time.monotonic() - start, 3),
        check.data,
    )


# ---- the checks ------------------------------------------------------------------------


async def check_models(cfg: AppConfig) -> Check:
    """The detector, the VA network and a llama.cpp GGUF: present and sha256-verified."""
    from streamer.affect.models import choose_network, store_artifact
    from streamer.store import default_store

    store = default_store()

    def verify() -> Check:
        names = ["yunet"]
        network = ""
        if cfg.affect.weights is None:
            network, _ = choose_network(cfg.affect, store)
            names.append(store_artifact(network))
        missing: list[str] = []
        found: dict[Path, list[str]] = {}
        for name in names:
            try:
                found.setdefault(store.path(name).parent, []).append(name)
            except StreamerError as err:
                missing.append(f"{name}: {err}")
        weights = cfg.affect.weights
        if weights is not None and not Path(weights).is_file():
            missing.append(f"affect.weights {weights}: no such file")
        if missing:
            return _check(
                "models",
                "failed",
                "; ".join(missing),
                f"streamer models fetch {' '.join(names)} (offline: set STREAMER_MODEL_MIRROR)",
            )
        what = "; ".join(f"{', '.join(n)} in {folder}" for folder, n in found.items())
        what += f"; weights {weights}" if weights is not None else ""
        return _check(
            "models", "ok", f"{what}: present, sha256 verified", network=network or "weights"
        )

    return await in_thread(verify, MODELS_TIMEOUT_S, "models")


async def check_camera(cam: CameraConfig) -> Check:
    """The camera opens and decodes a first frame."""
    from streamer.sources.probe import probe_camera

    name = f"camera {cam.name}"
    try:
        probe = await in_thread(
            lambda: probe_camera(cam), cam.open_timeout_s + cam.stall_timeout_s, name
        )
    except TimeoutError:
        return _check(
            name,
            "failed",
            f"no frame within {cam.open_timeout_s + cam.stall_timeout_s:.0f} s "
            f"(open_timeout_s + stall_timeout_s) from {cam.url}",
            "check the URL, the camera's power and network, and the credentials",
        )
    except ConfigError as err:
        return _check(name, "failed", str(err), "set it in the environment (compose: .env)")
    except StreamerError as err:
        return _check(
            name,
            "failed",
            str(err).removeprefix(f"{name}: "),
            "check the URL, the camera's network and credentials",
        )
    return _check(name, "ok", probe.describe(), **asdict(probe))


async def check_mqtt(cfg: AppConfig) -> Check:
    """The broker accepts a connection with the configured credentials and TLS."""
    import aiomqtt

    from streamer.publish.connect import (
        Client,
        FailureKind,
        build_tls_context,
        client_kwargs,
        connection,
        explain_failure,
    )

    mqtt = cfg.mqtt
    assert mqtt is not None
    try:
        password = mqtt.resolve_password()
    except ConfigError as err:  # names the variable or file, never a secret
        return _check("mqtt", "failed", str(err), "set it (compose: .env) or fix the path")
    tls_cfg = mqtt.tls
    tls = (
        await in_thread(lambda: build_tls_context(tls_cfg), CHECK_TIMEOUT_S, "mqtt-tls")
        if tls_cfg is not None
        else None
    )
    kwargs = client_kwargs(mqtt, password, tls, client_id=f"streamer-doctor-{os.getpid()}")
    who = f"as {mqtt.username!r}" if mqtt.username else "anonymously"
    where = f"{mqtt.host}:{mqtt.port}" + (" over TLS" if tls is not None else "")
    try:
        async with connection(Client(**kwargs)):
            pass
    except aiomqtt.MqttError as err:
        kind, why = explain_failure(err, mqtt)
        fix = {
            FailureKind.AUTH: "fix mqtt.username or the password, or the broker's ACL",
            FailureKind.TLS: "fix mqtt.tls (CA file, certificate) or mqtt.host",
        }.get(kind, "start the broker, or fix mqtt.host and mqtt.port")
        return _check("mqtt", "failed", why, fix)
    if tls is None and mqtt.username and not _is_loopback(mqtt.host):
        return _check(
            "mqtt",
            "warning",
            f"connected to {where} {who}, but the password crosses the network in plaintext",
            "add an `mqtt.tls:` section and a TLS listener",
        )
    return _check("mqtt", "ok", f"connected to {where} {who}")


def _is_loopback(host: str) -> bool:
    from streamer.web.config import is_loopback

    return is_loopback(host)


async def check_llm(cfg: AppConfig) -> Check:
    """The LLM server answers and has the model (llama.cpp: the package and the file)."""
    llm = cfg.llm
    assert llm is not None
    if llm.provider == "llamacpp":
        from streamer.describe.providers.llamacpp import (
            LlamaCppConfig,
            find_gguf,
            llama_cpp_available,
        )

        assert isinstance(llm, LlamaCppConfig)
        if not llama_cpp_available():
            return _check(
                "llm", "failed", "llama_cpp is not installed", "pip install 'streamer[llamacpp]'"
            )
        gguf = find_gguf(llm)
        if gguf is None:
            return _check(
                "llm",
                "failed",
                f"no GGUF file ({llm.gguf_path or 'store artifact smollm2'})",
                "streamer models fetch smollm2, or set llm.gguf_path",
            )
        return _check("llm", "ok", f"llama.cpp with {gguf}")
    if llm.provider != "ollama":
        return _check("llm", "warning", f"provider {llm.provider!r}: not checked")
    return await _check_ollama(cfg)


async def _check_ollama(cfg: AppConfig) -> Check:
    import httpx
    import ollama

    from streamer.describe.providers.ollama import OllamaConfig

    llm = cfg.llm
    assert isinstance(llm, OllamaConfig)
    timeout_s = min(llm.timeout_s, LLM_TIMEOUT_S)
    client = ollama.AsyncClient(host=llm.host, timeout=httpx.Timeout(timeout_s))
    try:
        listed = await client.list()
    except (httpx.HTTPError, ollama.ResponseError, OSError) as err:
        return _check(
            "llm",
            "failed",
            f"Ollama server {llm.host} does not answer: {err or type(err).__name__}",
            "start it (`ollama serve`) or fix llm.host",
        )
    finally:
        await client.close()  # type: ignore[no-untyped-call]
    names = {m.model for m in listed.models if m.model}
    wanted = llm.model if ":" in llm.model else f"{llm.model}:latest"
    if llm.model not in names and wanted not in names:
        have = ", ".join(sorted(names)) or "none"
        return _check(
            "llm",
            "failed",
            f"Ollama server {llm.host} has no model {llm.model!r} (it has: {have})",
            f"ollama pull {llm.model}",
        )
    return _check("llm", "ok", f"Ollama server {llm.host} has {llm.model}")


async def check_web(cfg: AppConfig) -> Check:
    """The web port is free; the token is set where one is required."""
    web = cfg.web
    assert web is not None
    if not web.enabled:
        return _check("web", "ok", "disabled (web.enabled: false)")
    where = f"{web.host}:{web.port}"
    if web.port != 0:
        try:
            _bind_test(web.host, web.port)
        except OSError as err:
            return _check(
                "web",
                "failed",
                f"cannot listen on {where}: {err.strerror or err}",
                "stop what uses the port, or change web.port",
            )
    if web.loopback:
        return _check("web", "ok", f"{where} free; loopback only, no token needed")
    # the config refuses a missing, blank or short token off loopback
    return _check("web", "ok", f"{where} free; token set in ${web.token_env}")


def _bind_test(host: str, port: int) -> None:
    """Raise OSError when ``host:port`` cannot be listened on as the server will
    (address reuse on, as aiohttp does: a port in TIME_WAIT is free)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(addr)
        s.listen(1)


async def check_history(cfg: HistoryConfig) -> Check:
    """The history database: writable, and its schema version against this streamer's
    (``history.path``: SQLite; ``history.url``: PostgreSQL, connected with the
    configured user and password)."""
    if cfg.url is not None:
        return await in_thread(lambda: check_postgres(cfg), CHECK_TIMEOUT_S, "history")
    return await in_thread(lambda: check_sqlite(cfg.path.expanduser()), CHECK_TIMEOUT_S, "history")


def check_sqlite(path: Path) -> Check:
    """A SQLite history file: the folder writable, the file writable (a write lock taken
    and released), its schema version."""
    if not path.exists():
        folder = path.parent
        if not folder.is_dir():
            return _check(
                "history", "failed", f"{folder} does not exist", f"create it: mkdir -p {folder}"
            )
        if not os.access(folder, os.W_OK | os.X_OK):
            return _check(
                "history",
                "failed",
                f"{folder} is not writable by this user (uid {os.getuid()})",
                "give the user write access, or point history.path elsewhere",
            )
        return _check("history", "ok", f"{path} will be created (folder writable)")
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=2.0)) as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            row = (
                db.execute("SELECT version_num FROM alembic_version").fetchone()
                if "alembic_version" in tables
                else None
            )
            db.execute("BEGIN IMMEDIATE")  # the write lock the writer needs
            db.rollback()
    except sqlite3.Error as err:
        return _check(
            "history",
            "failed",
            f"{path}: {err}",
            "check the file's permissions, and that no other program holds it locked",
        )
    if row is None and tables:
        return _check(
            "history",
            "failed",
            f"{path} is not a streamer history (it holds {', '.join(sorted(tables)[:5])})",
            "point history.path at another file",
        )
    return _schema_check(f"{path} writable", None if row is None else str(row[0]))


def check_postgres(cfg: HistoryConfig) -> Check:
    """Connect to the history's PostgreSQL as configured and read its schema version."""
    from sqlalchemy import exc

    from streamer.history.database import describe_error, make_engine, revision

    where = redact(cfg.url or "")
    try:
        engine = make_engine(cfg, writer=False)
    except ModuleNotFoundError as err:  # the driver is the `postgres` extra
        return _check(
            "history",
            "failed",
            f"no PostgreSQL driver ({err.name})",
            "pip install 'streamer[postgres]' (image: --build-arg EXTRAS=postgres)",
        )
    try:
        with engine.connect() as conn:
            rev = revision(conn)
    except exc.SQLAlchemyError as err:
        return _check(
            "history",
            "failed",
            f"{where}: {describe_error(err)}",
            f"start the server, or fix history.url and ${cfg.password_env}",
        )
    finally:
        engine.dispose()
    return _schema_check(f"{where} connected", rev)


def _schema_check(where: str, rev: str | None) -> Check:
    """ok / warning / failed for a database at schema revision ``rev`` (None: empty)."""
    from streamer.history.schema import SCHEMA_VERSION, version_of

    if rev is None:
        return _check("history", "ok", f"{where}; empty: the schema is made at start")
    found = version_of(rev)
    if found > SCHEMA_VERSION or found < 0:
        return _check(
            "history",
            "failed",
            f"{where}; schema version {found if found >= 0 else rev} is newer than this "
            f"streamer's ({SCHEMA_VERSION})",
            "upgrade streamer, or point the history at another database",
            schema=found,
        )
    if found < SCHEMA_VERSION:
        return _check(
            "history",
            "warning",
            f"{where}; schema version {found}, migrated to {SCHEMA_VERSION} at start "
            "(SQLite: a copy is kept first)",
            "back the database up before the first start (docs/deploy.md)",
            schema=found,
        )
    return _check("history", "ok", f"{where}; schema version {found}", schema=found)


def _asks_gpu(cfg: AppConfig) -> dict[str, str]:
    """Which parts ask for which GPU runtime (``auto`` asks for none)."""
    asks: dict[str, str] = {}
    det = cfg.faces.detector
    if det.backend == "onnxruntime" and det.device in ("cuda", "tensorrt"):
        asks["faces.detector"] = det.device
    runtime = cfg.affect.runtime
    if runtime.type == "tensorrt":
        asks["affect.runtime"] = "tensorrt"
    elif getattr(runtime, "device", "auto") == "cuda":
        asks["affect.runtime"] = f"cuda ({runtime.type})"
    return asks


async def check_gpu(cfg: AppConfig) -> Check:
    """The GPU runtimes this install has, and whether the config asks for a missing one."""

    def probe() -> dict[str, Any]:
        import onnxruntime

        found: dict[str, Any] = {"onnxruntime": onnxruntime.get_available_providers()}
        found["tensorrt"] = importlib.util.find_spec("tensorrt") is not None
        smi = shutil.which("nvidia-smi")
        if smi:
            proc = subprocess.run(
                [smi, "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            found["gpus"] = [g.strip() for g in proc.stdout.splitlines() if g.strip()]
        else:
            found["gpus"] = []
        return found

    found = await in_thread(probe, GPU_TIMEOUT_S, "gpu")
    providers = found["onnxruntime"]
    has = {
        "cuda": "CUDAExecutionProvider" in providers,
        "tensorrt": "TensorrtExecutionProvider" in providers or found["tensorrt"],
    }
    gpus = ", ".join(found["gpus"]) or "no NVIDIA GPU seen (nvidia-smi)"
    usable = [k for k, v in has.items() if v]
    detail = f"{gpus}; GPU runtimes: {', '.join(usable) or 'none (CPU only)'}"
    missing = {part: want for part, want in _asks_gpu(cfg).items() if not has[want.split(" ")[0]]}
    if missing:
        asks = ", ".join(f"{p} wants {w}" for p, w in missing.items())
        return _check(
            "gpu",
            "failed",
            f"{asks}, not available here ({detail})",
            "install onnxruntime-gpu / the tensorrt extra and the NVIDIA driver "
            "(docs/deploy.md), or set the device to auto or cpu",
            **found,
        )
    return _check("gpu", "ok", detail, **found)


# ---- the whole run --------------------------------------------------------------------


def _plan(cfg: AppConfig) -> list[tuple[str, float, Callable[[], Awaitable[Check]]]]:
    """(name, deadline, check) of every part ``cfg`` configures, in report order."""
    plan: list[tuple[str, float, Callable[[], Awaitable[Check]]]] = [
        ("models", MODELS_TIMEOUT_S + SLACK_S, lambda: check_models(cfg))
    ]
    for cam in cfg.cameras:
        budget = cam.open_timeout_s + cam.stall_timeout_s + SLACK_S
        plan.append((f"camera {cam.name}", budget, lambda cam=cam: check_camera(cam)))  # type: ignore[misc]
    if cfg.mqtt is not None:
        plan.append(("mqtt", cfg.mqtt.connect_timeout_s + SLACK_S, lambda: check_mqtt(cfg)))
    if cfg.llm is not None:
        plan.append(("llm", LLM_TIMEOUT_S + SLACK_S, lambda: check_llm(cfg)))
    if cfg.web is not None:
        plan.append(("web", CHECK_TIMEOUT_S, lambda: check_web(cfg)))
    history = cfg.history
    if history is not None:
        plan.append(("history", CHECK_TIMEOUT_S + SLACK_S, lambda: check_history(history)))
    plan.append(("gpu", GPU_TIMEOUT_S + SLACK_S, lambda: check_gpu(cfg)))
    return plan


async def diagnose(path: Path, on_check: Callable[[Check], None] | None = None) -> Report:
    """Check every part the config at ``path`` needs.

    Args:
        path: the YAML config.
        on_check: called with each check as soon as it and every check before it in the
            report are done (so lines can be printed in order while the rest run).
    """
    start = time.monotonic()
    try:
        cfg = load_config(path)
    except StreamerError as err:
        check = _check("config", "failed", str(err), "fix the key named above")
        if on_check:
            on_check(check)
        return Report(str(path), [check])
    # the optional sections it sets (the others always have their defaults)
    parts = [
        name
        for name, info in type(cfg).model_fields.items()
        if info.default is None and getattr(cfg, name) is not None
    ]
    config = Check(
        "config",
        "ok",
        f"{path}: valid; {len(cfg.cameras)} camera(s); sections: {', '.join(parts) or 'none'}",
        seconds=round(time.monotonic() - start, 3),
    )
    if on_check:
        on_check(config)
    tasks = [asyncio.create_task(_timed(n, t, make())) for n, t, make in _plan(cfg)]
    checks = [config]
    for task in tasks:
        checks.append(await task)
        if on_check:
            on_check(checks[-1])
    return Report(str(path), checks)


def run_doctor(path: Path, on_check: Callable[[Check], None] | None = None) -> Report:
    """:func:`diagnose` in its own event loop (blocking)."""
    return asyncio.run(diagnose(path, on_check))
