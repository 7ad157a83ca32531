"""Config of the MQTT publisher. Owned by the publish stage.

Secrets never live in YAML: a password comes from an environment variable
(``password_env``) or a file (``password_file``), and is read only when connecting.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from streamer.config_base import StrictModel
from streamer.errors import ConfigError

_TOPIC_LEVEL = r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$"


class MqttTlsConfig(StrictModel):
    """TLS to the broker. When this section is present the client never tries plaintext."""

    ca_file: Path | None = Field(
        None,
        description="PEM file of the CA(s) that signed the broker certificate; "
        "unset: the system trust store",
    )
    cert_file: Path | None = Field(None, description="PEM client certificate (mutual TLS)")
    key_file: Path | None = Field(None, description="PEM private key of the client certificate")
    check_hostname: bool = Field(
        True, description="verify that the broker certificate names `host` (keep on)"
    )

    @model_validator(mode="after")
    def _cert_and_key(self) -> MqttTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls.cert_file and tls.key_file must be given together")
        return self


class HomeAssistantConfig(StrictModel):
    """Home Assistant MQTT discovery (off unless ``enabled``)."""

    enabled: bool = Field(False, description="announce sensors through MQTT discovery")
    discovery_prefix: str = Field(
        "homeassistant",
        pattern=_TOPIC_LEVEL,
        max_length=128,
        description="Home Assistant's discovery prefix",
    )
    status_topic: str = Field(
        "homeassistant/status",
        pattern=_TOPIC_LEVEL,
        max_length=128,
        description="topic where Home Assistant says `online` (discovery is re-announced)",
    )
    node_id: str = Field(
        "streamer",
        pattern=r"^[A-Za-z0-9_-]+$",
        max_length=64,
        description="device id used in unique ids and discovery topics",
    )
    expire_after_s: int = Field(
        30, ge=0, le=86400, description="HA marks a track sensor unavailable after this (0: never)"
    )


class MqttConfig(StrictModel):
    """Publish VA, events, descriptions and camera status to an MQTT broker."""

    host: str = Field("127.0.0.1", min_length=1, description="broker host name or IP")
    port: int = Field(1883, ge=1, le=65535, description="broker TCP port (8883 is usual for TLS)")
    prefix: str = Field(
        "streamer",
        pattern=_TOPIC_LEVEL,
        max_length=128,
        description="topic prefix (no wildcards, no leading or trailing '/')",
    )
    protocol: Literal["3.1.1", "5"] = Field("3.1.1", description="MQTT protocol version")
    client_id: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="MQTT client id; unset: streamer-<host name>-<pid>",
    )
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive interval")
    connect_timeout_s: float = Field(
        10.0, gt=0.0, le=300.0, description="give up one connection attempt after this"
    )
    username: str | None = Field(None, min_length=1, description="user name (not secret)")
    password_env: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="name of the environment variable that holds the password",
    )
    password_file: Path | None = Field(None, description="file whose first line is the password")
    tls: MqttTlsConfig | None = Field(None, description="TLS settings; unset: plaintext TCP")
    va_rate_hz: float = Field(
        5.0, gt=0.0, le=120.0, description="most VA messages per second per track (media time)"
    )
    va_stale_s: float = Field(
        2.0,
        gt=0.0,
        le=3600.0,
        description="VA waiting longer than this for the broker is dropped (counted)",
    )
    max_pending_events: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="events and descriptions held while the broker is away; oldest dropped",
    )
    max_pending_tracks: int = Field(
        256, ge=1, le=100_000, description="tracks whose newest VA is held while disconnected"
    )
    reconnect_min_s: float = Field(0.5, gt=0.0, le=60.0, description="first reconnect delay")
    reconnect_max_s: float = Field(
        30.0, gt=0.0, le=3600.0, description="cap of the exponential reconnect delay"
    )
    auth_retry_s: float = Field(
        60.0,
        gt=0.0,
        le=86400.0,
        description="delay after the broker refuses the credentials or TLS fails",
    )
    homeassistant: HomeAssistantConfig = Field(
        default_factory=HomeAssistantConfig,
        description="Home Assistant discovery",
    )

    @model_validator(mode="after")
    def _credentials(self) -> MqttConfig:
        if self.password_env is not None and self.password_file is not None:
            raise ValueError("give either password_env or password_file, not both")
        has_password = self.password_env is not None or self.password_file is not None
        if self.username is None and has_password:
            raise ValueError("password_env/password_file need a username")
        if self.username is not None and not has_password:
            raise ValueError(
                f"username {self.username!r} needs password_env (an environment variable "
                "name) or password_file; passwords are never written in YAML"
            )
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s must be <= reconnect_max_s")
        return self

    def resolve_password(self) -> str | None:
        """Read the password from its environment variable or file.

        Returns:
            The password, or None when no username is configured.

        Raises:
            ConfigError: the variable is unset or the file cannot be read. The message
                names the variable or file, never the secret.
        """
        if self.password_env is not None:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError(
                    f"mqtt.password_env: environment variable {self.password_env} is not set"
                )
            return value
        if self.password_file is not None:
            try:
                text = self.password_file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as err:
                raise ConfigError(
                    f"mqtt.password_file: cannot read {self.password_file}: "
                    f"{getattr(err, 'strerror', None) or type(err).__name__}"
                ) from err
            lines = text.splitlines()
            return lines[0] if lines else ""
        return None
