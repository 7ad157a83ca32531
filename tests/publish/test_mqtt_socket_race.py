"""paho registers a connect's socket from the executor thread; when the attempt was given
up (its connect timeout) and the socket closed before the loop ran the registration,
nothing is registered and asyncio logs no ``Bad file descriptor`` traceback."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiomqtt
import pytest

from streamer.publish.connect import Client


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
