"""Building aiomqtt clients from :class:`MqttConfig` and explaining connection failures.

Shared by the publisher and ``streamer subscribe``. Error texts name the broker, the user
and where the password came from, never the password itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import random
import re
import socket
import ssl
import threading
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.reasoncodes import ReasonCode

from streamer.backoff import Backoff, BackoffPolicy
from streamer.errors import ConfigError
from streamer.publish.config import MqttConfig, MqttTlsConfig
from streamer.publish.flood import mqtt_client_logger

logger = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 1.0  # a half-open connection is given this long to close politely

# MQTT 5 reason codes (paho maps MQTT 3.1.1 CONNACK codes 4 and 5 onto 134 and 135).
_AUTH_REASON_CODES = {134, 135, 138, 140}  # bad user/password, not authorized, banned, bad method
_AUTH_V3_CODES = {4, 5}


class FailureKind(enum.Enum):
    """Why a connection attempt failed; decides the retry delay."""

    NETWORK = "network"  # refused, unreachable, timeout, dropped: normal backoff
    AUTH = "auth"  # credentials refused: long delay, never a tight loop
    TLS = "tls"  # certificate or handshake failure: long delay, never plaintext


def default_client_id() -> str:
    """``streamer-<host name>-<pid>``, restricted to safe characters."""
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40]
    return f"streamer-{host}-{os.getpid()}"


def build_tls_context(tls: MqttTlsConfig) -> ssl.SSLContext:
    """A verifying TLS client context (blocking: reads certificate files).

    Raises:
        ConfigError: a certificate or key file cannot be read or parsed.
    """
    try:
        ctx = ssl.create_default_context(
            cafile=str(tls.ca_file) if tls.ca_file is not None else None
        )
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(f"mqtt.tls.ca_file: cannot load {tls.ca_file}: {err}") from err
    ctx.check_hostname = tls.check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    if tls.cert_file is not None:
        try:
            ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        except (OSError, ssl.SSLError) as err:
            raise ConfigError(
                f"mqtt.tls.cert_file/key_file: cannot load {tls.cert_file} / {tls.key_file}: {err}"
            ) from err
    return ctx


class Client(aiomqtt.Client):
    """:class:`aiomqtt.Client` that fails a connection attempt as soon as the socket
    closes before the broker's CONNACK.

    aiomqtt ignores a disconnection before CONNACK and waits out the whole connect
    timeout (10 s by default). That is what a client sees when a broker behind a relay,
    load balancer or restarting container accepts the TCP connection and drops it: the
    publisher then retried only after the timeout, long after the broker was back.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Set by :func:`abandon`: a ``connect()`` still running in its executor thread
        # closes the socket it opens, and no housekeeping task starts.
        self._given_up = threading.Event()

    def _client_connect(self) -> None:
        # The executor thread of ``__aenter__``. Cancelling the attempt (a stop, a connect
        # timeout) does not stop this thread: a TCP handshake that completes afterwards
        # (a broker with a full accept queue, a slow network) used to leave an open socket
        # and a housekeeping task that nobody would end; once the loop had closed they
        # surfaced as "Task was destroyed but it is pending!" and "Exception ignored in
        # Client.__del__ ... Event loop is closed".
        try:
            super()._client_connect()
        finally:
            if self._given_up.is_set():
                self._close_late()

    def _close_late(self) -> None:
        """Close the socket of a connect that finished after it was given up: on the loop
        while it runs (its reader is registered there), here once it has closed."""
        try:
            self._loop.call_soon_threadsafe(self._close_socket)
        except RuntimeError:  # the loop has closed: nothing of it to tidy
            self._close_socket()

    def _close_socket(self) -> None:
        if self._client.socket() is not None:
            self._client._sock_close()

    def _on_disconnect(
        self,
        client: Any,
        userdata: Any,
        flags: Any,
        reason_code: Any,
        properties: Any = None,
    ) -> None:
        if not self._connected.done():
            self._connected.set_exception(
                aiomqtt.MqttError(f"connection closed before CONNACK ({reason_code})")
            )
            return
        super()._on_disconnect(client, userdata, flags, reason_code, properties)

    # paho calls the two below from the executor thread of ``connect()``, and aiomqtt
    # hands the registration to the loop with ``call_soon_threadsafe``. When the attempt
    # has been given up meanwhile (its connect timeout) and its socket closed, the loop
    # would register a closed fd: asyncio logs ``OSError: [Errno 9] Bad file
    # descriptor`` with a traceback. The callbacks are aiomqtt 2.x's; only what the loop
    # runs is guarded: a socket closed (or its fd reused) by then is not registered.

    def _on_socket_open(self, client: Any, userdata: Any, sock: Any) -> None:
        def callback() -> None:
            try:
                while True:
                    client.loop_read()
                    # SSL sockets may hold decoded bytes loop_read() did not consume
                    pending = getattr(client._sock, "pending", None)
                    if pending is not None and pending() > 0:
                        continue
                    break
            except Exception as exc:  # the connection broke: disconnect
                if not self._disconnected.done():
                    self._disconnected.set_exception(exc)

        def create_misc_task() -> None:
            if not self._given_up.is_set():  # a late connect: its socket is about to close
                self._misc_task = self._loop.create_task(self._misc_loop())

        fd = sock.fileno()
        with contextlib.suppress(RuntimeError):  # the loop has closed: nothing to register
            self._loop.call_soon_threadsafe(_add_if_open, self._loop.add_reader, sock, fd, callback)
            self._loop.call_soon_threadsafe(create_misc_task)

    def _on_socket_register_write(self, client: Any, userdata: Any, sock: Any) -> None:
        def callback() -> None:
            try:
                client.loop_write()
            except Exception as exc:  # the connection broke: disconnect
                if not self._disconnected.done():
                    self._disconnected.set_exception(exc)

        fd = sock.fileno()
        with contextlib.suppress(RuntimeError):  # the loop has closed: nothing to register
            self._loop.call_soon_threadsafe(_add_if_open, self._loop.add_writer, sock, fd, callback)

    def _on_socket_close(self, client: Any, userdata: Any, sock: Any) -> None:
        # aiomqtt's, except for a closed loop (a client collected after its loop ended,
        # or a late connect closing itself): nothing of the loop's is left to undo.
        if self._loop.is_closed():
            return
        super()._on_socket_close(client, userdata, sock)


def _add_if_open(add: Any, sock: Any, fd: int, callback: Any) -> None:
    """``add(fd, callback)`` (the loop's add_reader or add_writer) unless ``sock`` was
    closed since ``fd`` was read from it (a closed socket's fileno() is -1)."""
    if fd >= 0 and sock.fileno() == fd:
        add(fd, callback)
    else:
        logger.debug("MQTT: socket closed before the loop registered it (fd %d)", fd)


def client_kwargs(
    cfg: MqttConfig,
    password: str | None,
    tls_context: ssl.SSLContext | None,
    client_id: str | None = None,
) -> dict[str, Any]:
    """Keyword arguments for :class:`aiomqtt.Client` (without ``will``)."""
    kwargs: dict[str, Any] = {
        "hostname": cfg.host,
        "port": cfg.port,
        "identifier": client_id or cfg.client_id or default_client_id(),
        "protocol": aiomqtt.ProtocolVersion.V5
        if cfg.protocol == "5"
        else aiomqtt.ProtocolVersion.V311,
        "keepalive": cfg.keepalive_s,
        "timeout": cfg.connect_timeout_s,
        "logger": mqtt_client_logger(),  # the library's warnings, rate-limited
    }
    if cfg.username is not None:
        kwargs["username"] = cfg.username
        kwargs["password"] = password
    if tls_context is not None:
        kwargs["tls_context"] = tls_context
    return kwargs


def password_source(cfg: MqttConfig) -> str:
    """Where the password comes from, for error messages (never the value)."""
    if cfg.password_env is not None:
        return f"environment variable {cfg.password_env}"
    if cfg.password_file is not None:
        return f"file {cfg.password_file}"
    return "no password configured"


def explain_failure(err: BaseException, cfg: MqttConfig) -> tuple[FailureKind, str]:
    """Classify a failed connection and describe it for a log line.

    Args:
        err: the exception raised by entering the aiomqtt client (or by the connection
            later).
        cfg: the MQTT config (host, user and password source are named).

    Returns:
        The failure kind and an actionable message without secrets.
    """
    where = f"MQTT broker {cfg.host}:{cfg.port}" + (" (TLS)" if cfg.tls is not None else "")
    if isinstance(err, MqttConnectError):
        rc = err.rc
        code = rc.value if isinstance(rc, ReasonCode) else rc
        is_auth = (isinstance(rc, ReasonCode) and code in _AUTH_REASON_CODES) or (
            not isinstance(rc, ReasonCode) and code in _AUTH_V3_CODES
        )
        reason = str(rc) if isinstance(rc, ReasonCode) else str(err)
        if is_auth:
            who = f"user {cfg.username!r}" if cfg.username else "an anonymous client"
            return FailureKind.AUTH, (
                f"{where} refused the login of {who}: {reason}; check mqtt.username and "
                f"the password ({password_source(cfg)}) and the broker's ACL"
            )
        return FailureKind.NETWORK, f"{where} refused the connection: {reason}"
    # aiomqtt re-raises socket errors as MqttError(str(exc)) "from None"; the original
    # exception is still the implicit context.
    cause: BaseException | None = err
    seen = 0
    while cause is not None and not isinstance(cause, OSError) and seen < 5:
        cause = cause.__cause__ or cause.__context__
        seen += 1
    if isinstance(cause, ssl.SSLCertVerificationError):
        return FailureKind.TLS, (
            f"{where}: TLS certificate verification failed ({cause.verify_message}); "
            "check mqtt.tls.ca_file and that the broker certificate names mqtt.host; "
            "not falling back to plaintext"
        )
    if isinstance(cause, ssl.SSLError):
        why = getattr(cause, "reason", None) or cause
        return FailureKind.TLS, (
            f"{where}: TLS handshake failed ({why}); is the port a TLS "
            "listener, and is the client certificate accepted? not falling back to plaintext"
        )
    if isinstance(cause, ConnectionRefusedError):
        return FailureKind.NETWORK, f"{where} refused the TCP connection (is it running?)"
    if isinstance(cause, socket.gaierror):
        return FailureKind.NETWORK, f"{where}: cannot resolve host name ({cause.strerror})"
    if isinstance(cause, OSError):
        return FailureKind.NETWORK, f"{where}: {cause.strerror or type(cause).__name__}"
    return FailureKind.NETWORK, f"{where}: {str(err)[:200] or type(err).__name__}"


def reconnect_backoff(cfg: MqttConfig, rng: random.Random | None = None) -> Backoff:
    """The reconnect backoff of an MQTT client: capped exponential from
    ``reconnect_min_s`` to ``reconnect_max_s``, each delay jittered in [cap/2, cap]."""
    policy = BackoffPolicy(cfg.reconnect_min_s, cfg.reconnect_max_s, multiplier=2.0, jitter=0.5)
    return Backoff(policy, rng)


@contextlib.asynccontextmanager
async def connection(client: Client) -> AsyncIterator[Client]:
    """``async with client``, except that nothing is left behind by a connect that fails,
    times out or is cancelled (a silent or garbage-speaking broker, a stop mid-connect).

    aiomqtt leaves the socket open and its housekeeping task running in those cases; at
    exit they surfaced as "Task was destroyed but it is pending!" and "Exception ignored
    ... Event loop is closed" after the run's summary. Here the socket is closed and the
    task ended while the loop still runs.
    """
    try:
        await client.__aenter__()
    except BaseException:
        await abandon(client)
        raise
    try:
        yield client
    except BaseException:
        await abandon(client)
        raise
    try:
        await client.__aexit__(None, None, None)
    except BaseException:  # no DISCONNECT acknowledged in time, or cancelled meanwhile
        await abandon(client)
        raise


async def abandon(client: Client) -> None:
    """Close a client whose connect failed, timed out or was cancelled, or whose session
    ended with an error: its socket and its task, within CLOSE_TIMEOUT_S; never raises."""
    # aiomqtt keeps paho's client, which owns the socket, private; closing it is the
    # only way to end a connection whose CONNACK never came.
    client._given_up.set()  # first: a connect still in flight sees it when it ends
    paho = client._client
    connected = client._connected  # cancelled by aiomqtt's wait_for when we were
    settled = connected.done() and not connected.cancelled()
    if paho.socket() is not None and settled and connected.exception() is None:
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):  # a session: say goodbye
                await client.__aexit__(None, None, None)
    if paho.socket() is not None:
        paho._sock_close()  # no CONNACK (or no goodbye): nothing to say, just close
    if not connected.done():
        # Nobody will wait for it again; resolved, so aiomqtt's late callbacks find it so.
        connected.set_exception(aiomqtt.MqttError("connection abandoned"))
    if not connected.cancelled():
        connected.exception()  # retrieved: no "exception was never retrieved" at exit
    task = client._misc_task
    if task is not None and not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
