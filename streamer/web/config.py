"""Config of the web sink: dashboard, JSON state, Prometheus metrics and health checks."""

from __future__ import annotations

import ipaddress
import os

from pydantic import Field, field_validator, model_validator

from streamer.config_base import StrictModel

LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})
MIN_TOKEN_CHARS = 16  # shorter tokens are refused: guessable over a network


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
    session_hours: float = Field(
        12.0,
        gt=0,
        le=24 * 365,
        description="lifetime of a session cookie set by /login (hours); /logout ends it",
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="a connection must send a complete request head within this many "
        "seconds of opening, or it is closed (slow clients cannot hold connections)",
    )
    keepalive_timeout_s: float = Field(
        15.0,
        gt=0,
        le=3600,
        description="an idle keep-alive connection is closed after this many seconds "
        "without a complete new request",
    )
    max_connections: int = Field(
        256,
        ge=1,
        le=65536,
        description="connections open at once; at the cap, the oldest one open for a "
        "second without a complete request head is closed for a new one, else the new "
        "one is refused at once (503)",
    )

    @field_validator("host")
    @classmethod
    def _plain_host(cls, host: str) -> str:
        """``[::1]`` (bracketed, as in URLs) is ``::1``; a host never carries a port."""
        inner = host[1:-1] if host.startswith("[") and host.endswith("]") else None
        if inner is not None or ":" in host:
            try:
                return str(ipaddress.IPv6Address(inner if inner is not None else host))
            except ValueError:
                raise ValueError(
                    f"{host!r} is not an address to bind: give a name, an IPv4 address or "
                    "an IPv6 address (with or without brackets), and the port as `port:`"
                ) from None
        if "[" in host or "]" in host:
            raise ValueError(f"{host!r}: brackets are only for a whole IPv6 address")
        return host

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def token(self) -> str | None:
        """The access token from the environment, or None when unset or empty."""
        value = os.environ.get(self.token_env, "")
        return value or None

    @model_validator(mode="after")
    def _token_off_loopback(self) -> WebConfig:
        if not self.enabled or self.loopback:
            return self
        token = self.token()
        if token is None:
            raise ValueError(
                f"host {self.host!r} is not loopback: set the access token in the "
                f"environment variable {self.token_env} (or bind 127.0.0.1)"
            )
        # Never the token itself in the message: only what is wrong with it.
        if not token.strip():
            raise ValueError(f"the access token in {self.token_env} is only whitespace")
        if token != token.strip():
            raise ValueError(
                f"the access token in {self.token_env} starts or ends with whitespace "
                "(no client could send it in a header)"
            )
        if len(token) < MIN_TOKEN_CHARS:
            raise ValueError(
                f"the access token in {self.token_env} has {len(token)} characters; use "
                f"at least {MIN_TOKEN_CHARS} (e.g. `openssl rand -hex 24`)"
            )
        return self
