"""Config of the web sink: dashboard, JSON state, Prometheus metrics and health checks."""

from __future__ import annotations

import ipaddress
import os

from pydantic import Field, model_validator

from streamer.config_base import StrictModel

LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class WebConfig(StrictModel):
    """The web server: ``/`` dashboard, ``/events``, ``/api/state``, ``/metrics``, health.

    Bound to loopback by default. Any other host requires a token from the environment
    (never a literal in YAML); the config is refused when it is not set.
    """

    enabled: bool = Field(True, description="serve the dashboard, metrics and health endpoints")
    host: str = Field(
        "127.0.0.1",
        min_length=1,
        description="address to bind; anything but loopback requires the token",
    )
    port: int = Field(8080, ge=0, le=65535, description="TCP port (0 picks a free one)")
    token_env: str = Field(
        "STREAMER_WEB_TOKEN",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="environment variable holding the access token (bearer header, or a "
        "cookie set by /login?token=...); required when host is not loopback",
    )
    preview: bool = Field(
        False,
        description="serve the latest annotated frame of each camera as a JPEG (rate "
        "limited); off, no pixel of video is ever served",
    )

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def token(self) -> str | None:
        """The access token from the environment, or None when unset or empty."""
        value = os.environ.get(self.token_env, "")
        return value or None

    @model_validator(mode="after")
    def _token_off_loopback(self) -> WebConfig:
        if self.enabled and not self.loopback and self.token() is None:
            raise ValueError(
                f"host {self.host!r} is not loopback: set the access token in the "
                f"environment variable {self.token_env} (or bind 127.0.0.1)"
            )
        return self
