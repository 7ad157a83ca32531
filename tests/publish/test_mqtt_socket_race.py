"""paho opens and registers a connect's socket from the executor thread, which goes on
after the attempt was given up (its connect timeout, a stop). Nothing of such an attempt
is left behind: a socket closed before the loop ran its registration is not registered
(asyncio logged ``Bad file descriptor``), and a socket that opened afterwards is closed
(a task nobody ended and ``Event loop is closed`` at exit)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import sys
from typing import Any

import aiomqtt
import pytest

from streamer.publish.connect import Client, connection
from tests.helpers.wait import wait_until


async def _register_then_close(client: aiomqtt.Client, close: bool) -> list[dict[str, Any]]:
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    ours, theirs = socket.socketpair()
    fd = ours.fileno()
    try:
        ran = asyncio.Event()

        def from_connect_thread() -> None:
            client._on_socket_open(client._client, None, ours)
            client._on_socket_register_write(client._client, None, ours)
            if close:
                ours.close()  # the attempt was given up before the loop ran them
            loop.call_soon_threadsafe(ran.set)  # runs after the registrations (in order)

        await asyncio.to_thread(from_connect_thread)
        await ran.wait()
        if not close:
            assert loop.remove_reader(fd) and loop.remove_writer(fd)  # registered
    finally:
        loop.set_exception_handler(None)
        ours.close()
        theirs.close()
    return errors


@pytest.mark.parametrize("close", [True, False], ids=["closed", "open"])
async def test_a_socket_closed_before_the_loop_registers_it_is_left_alone(close: bool) -> None:
    client = Client("127.0.0.1", 1)  # never connected: only its callbacks are used
    assert await _register_then_close(client, close) == []


# A connect that completes after its attempt was given up. Cancelling the attempt does
# not stop paho's connect() in its executor thread: against a broker whose accept queue is
# full (SYNs dropped, retransmitted after ~1 s) the handshake completes later. The socket
# that opened then used to stay open with a housekeeping task nobody ended: after the loop
# closed, "Task was destroyed but it is pending!" and "Exception ignored in Client.__del__
# ... Event loop is closed" (a CI run of the cluster tests failed on it).


class FullListener:
    """A TCP listener whose accept queue is full until :meth:`drain`."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        filler = socket.create_connection(("127.0.0.1", self.port), timeout=5.0)
        self.queued = [filler]  # never accepted: the next SYN is dropped

    def drain(self) -> None:
        """Accept what is queued, so a retransmitted SYN gets in."""
        self.sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                self.queued.append(self.sock.accept()[0])

    def late_connection(self, timeout_s: float) -> socket.socket:
        """The client's connection that got in after :meth:`drain`."""
        self.sock.settimeout(timeout_s)
        conn = self.sock.accept()[0]
        conn.settimeout(timeout_s)
        return conn

    def syn_sent(self) -> bool:
        """A connect to the listener is waiting for its handshake (its SYN was dropped):
        a socket in state SYN_SENT (02) towards the port in /proc/net/tcp."""
        with open("/proc/net/tcp") as table:
            rows = [line.split() for line in table][1:]
        return any(r[2].endswith(f":{self.port:04X}") and r[3] == "02" for r in rows)

    def close(self) -> None:
        for s in self.queued:
            s.close()
        self.sock.close()


async def _give_up_while_connecting(listener: FullListener) -> None:
    client = Client("127.0.0.1", listener.port, identifier="late", timeout=5.0)

    async def attempt() -> None:
        async with connection(client):
            raise AssertionError("connected to a full listener")

    task = asyncio.create_task(attempt())
    await wait_until(listener.syn_sent, 10.0, "paho's connect() waiting for the handshake")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    listener.drain()


def _read_until_eof(conn: socket.socket) -> bytes:
    got = b""
    while chunk := conn.recv(4096):
        got += chunk
    return got


@pytest.mark.parametrize("ending", ["asyncio.run", "closed at once"])
def test_a_connect_that_completes_after_it_was_given_up_leaves_nothing_open(
    ending: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    listener = FullListener()
    try:
        if ending == "asyncio.run":  # waits for the executor thread before closing
            asyncio.run(_give_up_while_connecting(listener))
        else:  # a loop closed while the connect is still running
            loop = asyncio.new_event_loop()
            loop.run_until_complete(_give_up_while_connecting(listener))
            loop.close()
        conn = listener.late_connection(10.0)
        try:
            # the end of the connection (the client closed it before it sent its
            # CONNECT, or after): nothing is left open; a timeout here is the defect
            got = _read_until_eof(conn)
            assert got == b"" or got.startswith(b"\x10")  # nothing, or a CONNECT packet
        finally:
            conn.close()
        gc.collect()
    finally:
        listener.close()
    assert unraisable == []
    assert "Task was destroyed" not in caplog.text
    assert "Event loop is closed" not in caplog.text
