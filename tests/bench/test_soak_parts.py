"""The soak's fake LLM server in its own process, driven over its ``/_fake/`` routes."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from streamer.testing.ollama import FakeOllamaProcess


def _chat(url: str) -> int:
    body = {"model": "llama3.2", "stream": False, "messages": [{"role": "user", "content": "x"}]}
    req = urllib.request.Request(url + "/api/chat", data=json.dumps(body).encode())
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return err.code


def test_the_child_server_switches_mode_and_counts_only_api_requests() -> None:
    with FakeOllamaProcess("happy") as srv:
        assert _chat(srv.url) == 200
        srv.set_mode("error500")  # an LLM outage, as the soak injects it
        assert _chat(srv.url) == 500
        srv.set_mode("happy")
        assert _chat(srv.url) == 200
        assert srv.count("/api/chat") == 3  # the control calls are not requests
        with pytest.raises(urllib.error.HTTPError) as err:
            srv.set_mode("sulking")
        assert err.value.code == 400 and "sulking" in err.value.read().decode()
        assert srv.mode == "happy"
    assert srv._proc is None  # stopped with the block
