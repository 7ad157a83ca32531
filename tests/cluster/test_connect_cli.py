"""``--cluster`` on the command line: an address that is not one is a usage error, and an
address where no Ray cluster answers ends with one error line; Ray's own retry warnings
(its C++ core writes them straight to the terminal) appear only with ``-v``."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.cli import run_streamer

pytestmark = pytest.mark.cluster

TIMEOUT_S = 7  # connect_timeout_s: past Ray's first retry warning (5 s)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts TCP connections and never speaks (no Ray there)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


def _config(tmp_path: Path) -> Path:
    cfg = tmp_path / "cluster.yaml"
    cfg.write_text(
        "cameras:\n  - name: cam\n    url: rtsp://127.0.0.1:9/none\n"
        "mqtt:\n  host: 127.0.0.1\n  port: 1883\n"
        f"cluster:\n  connect_timeout_s: {TIMEOUT_S}\n"
    )
    return cfg


def test_unreachable_cluster_is_one_line_and_ray_spam_needs_v(
    tmp_path: Path, silent_port: int
) -> None:
    cfg = _config(tmp_path)
    address = f"127.0.0.1:{silent_port}"
    quiet = run_streamer("run", "--config", str(cfg), "--cluster", address, timeout_s=120)
    assert quiet.returncode == 1
    assert quiet.stderr.splitlines() == [
        f"error: cluster address {address}: no answer within {TIMEOUT_S} s"
    ], quiet.stderr
    loud = run_streamer("-v", "run", "--config", str(cfg), "--cluster", address, timeout_s=120)
    assert loud.returncode == 1
    assert "Failed to connect to GCS" in loud.stderr or "gcs_client" in loud.stderr, loud.stderr
    assert loud.stderr.splitlines()[-1] == quiet.stderr.splitlines()[0]
