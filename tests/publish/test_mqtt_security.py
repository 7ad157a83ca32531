"""Credentials and TLS against a real mosquitto: clear errors, no secrets, no plaintext."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streamer.bus import EventBus
from streamer.errors import ConfigError
from streamer.publish.config import MqttConfig
from streamer.publish.mqtt import MqttPublisher
from streamer.testing.mqtt import Broker
from tests.helpers.mqtt import Collector, make_status, wait_until

pytestmark = pytest.mark.timeout(60)

PASSWORD = "s3cret-Pa55word"
WRONG = "wr0ng-Pa55word"


@pytest.fixture
def auth_broker(make_broker: Callable[..., Broker], tmp_path: Path) -> Broker:
    pwfile = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(pwfile), "alice", PASSWORD],
        check=True,
        capture_output=True,
    )
    pwfile.chmod(0o600)
    return make_broker(f"allow_anonymous false\npassword_file {pwfile}\n")


def _cfg(port: int, **kw: Any) -> MqttConfig:
    base: dict[str, Any] = {
        "port": port,
        "prefix": "sec",
        "keepalive_s": 5,
        "reconnect_min_s": 0.01,
        "reconnect_max_s": 0.05,
        "connect_timeout_s": 3,
    }
    base.update(kw)
    return MqttConfig(**base)


@pytest.mark.mqtt
async def test_password_from_file_connects(auth_broker: Broker, tmp_path: Path) -> None:
    secret = tmp_path / "mqtt.pw"
    secret.write_text(PASSWORD + "\n")
    cfg = _cfg(auth_broker.port, username="alice", password_file=secret)
    async with MqttPublisher(cfg, EventBus(), ["cam1"]) as pub:
        await wait_until(lambda: pub.connected, what="connected with the right password")
    assert pub.stats.auth_failures == 0


@pytest.mark.mqtt
@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_wrong_password_clear_error_no_secret_no_tight_loop(
    auth_broker: Broker,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    protocol: str,
) -> None:
    monkeypatch.setenv("TEST_MQTT_PASSWORD", WRONG)
    cfg = _cfg(
        auth_broker.port,
        username="alice",
        password_env="TEST_MQTT_PASSWORD",
        auth_retry_s=30,
        protocol=protocol,
    )
    caplog.set_level(logging.DEBUG, logger="streamer")
    async with MqttPublisher(cfg, EventBus(), ["cam1"]) as pub:
        await wait_until(lambda: pub.stats.auth_failures == 1, what="refused login")
        # Observation window: with reconnect_max_s=0.05 a tight loop would retry ~20
        # times here; the auth delay is 30 s, so there must be no second attempt.
        await wait_until(lambda: "not authorised" in auth_broker.log_text(), what="broker log")
        await asyncio.sleep(1.0)
        assert pub.stats.connect_attempts == 1
        assert not pub.connected
    err = pub.stats.last_error
    assert "refused the login of user 'alice'" in err
    assert "TEST_MQTT_PASSWORD" in err
    assert WRONG not in err
    assert WRONG not in caplog.text and PASSWORD not in caplog.text
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "refused the login" in errors[0].getMessage()
    assert auth_broker.count_in_log("not authorised") == 1


async def test_missing_password_env_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_MQTT_UNSET", raising=False)
    cfg = _cfg(1, username="alice", password_env="TEST_MQTT_UNSET")
    with pytest.raises(ConfigError, match="TEST_MQTT_UNSET is not set"):
        async with MqttPublisher(cfg, EventBus(), []):
            pass


# ------------------------------------------------------------------------------ TLS


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _new_key_and_request(d: Path, name: str, *how: str) -> None:
    """An EC P-256 key ``name.key`` and, per ``how``, a self-signed cert or a CSR."""
    curve = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", *curve, "-keyout", f"{name}.key", *how, "-subj", f"/CN={name}", cwd=d)


def _make_ca(d: Path, name: str) -> None:
    _new_key_and_request(d, name, "-x509", "-out", f"{name}.pem", "-days", "2")


def _make_leaf(d: Path, name: str, ca: str, san: str | None) -> None:
    _new_key_and_request(d, name, "-out", f"{name}.csr")
    ext = d / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\n" if san else "basicConstraints=CA:FALSE\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        f"{ca}.pem",
        "-CAkey",
        f"{ca}.key",
        "-CAcreateserial",
        "-out",
        f"{name}.pem",
        "-days",
        "2",
        "-extfile",
        str(ext),
        cwd=d,
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trusted CA with a server and a client certificate, and an unrelated CA."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl command-line tool not installed")
    d = tmp_path_factory.mktemp("pki")
    _make_ca(d, "ca")
    _make_ca(d, "other_ca")
    _make_leaf(d, "server", "ca", "IP:127.0.0.1,DNS:localhost")
    _make_leaf(d, "client", "ca", None)
    return d


@pytest.fixture
def tls_broker(make_broker: Callable[..., Broker], pki: Path) -> Broker:
    return make_broker(
        f"cafile {pki / 'ca.pem'}\ncertfile {pki / 'server.pem'}\n"
        f"keyfile {pki / 'server.key'}\nrequire_certificate true\n"
    )


@pytest.mark.mqtt
async def test_tls_with_ca_and_client_certificate(tls_broker: Broker, pki: Path) -> None:
    tls = {
        "ca_file": pki / "ca.pem",
        "cert_file": pki / "client.pem",
        "key_file": pki / "client.key",
    }
    bus = EventBus()
    async with MqttPublisher(_cfg(tls_broker.port, tls=tls), bus, ["cam1"]) as pub:
        await wait_until(lambda: pub.connected, what="TLS connection")
        bus.publish_nowait(make_status("cam1", "online"))
        await wait_until(lambda: pub.stats.published["status"] == 1, what="status over TLS")
    assert pub.stats.tls_failures == 0


@pytest.mark.mqtt
async def test_tls_untrusted_ca_clear_error_no_plaintext(
    tls_broker: Broker, pki: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tls = {
        "ca_file": pki / "other_ca.pem",
        "cert_file": pki / "client.pem",
        "key_file": pki / "client.key",
    }
    cfg = _cfg(tls_broker.port, tls=tls, auth_retry_s=30)
    async with MqttPublisher(cfg, EventBus(), ["cam1"]) as pub:
        await wait_until(lambda: pub.stats.tls_failures == 1, what="TLS failure")
    assert "certificate verification failed" in pub.stats.last_error
    assert "not falling back to plaintext" in pub.stats.last_error
    assert pub.stats.connect_attempts == 1 and pub.stats.connections == 0
    assert "New client connected" not in tls_broker.log_text()


@pytest.mark.mqtt
async def test_tls_against_plaintext_listener_never_speaks_mqtt_in_clear(
    make_broker: Callable[..., Broker], pki: Path
) -> None:
    plain = make_broker()  # a plaintext listener where TLS was configured
    cfg = _cfg(plain.port, tls={"ca_file": pki / "ca.pem"}, auth_retry_s=30)
    async with MqttPublisher(cfg, EventBus(), ["cam1"]) as pub:
        # mosquitto resets a TLS hello on a plaintext port: a network-style failure,
        # retried with backoff, and always again in TLS.
        await wait_until(lambda: pub.stats.connect_attempts >= 3, what="TLS retries")
    assert "(TLS)" in pub.stats.last_error
    assert pub.stats.connections == 0
    assert "New client connected" not in plain.log_text()
    async with Collector(plain.host, plain.port, "sec/#") as col:
        await wait_until(lambda: "New client connected" in plain.log_text(), what="collector")
        assert col.messages == []  # nothing (no retained state) was ever published
