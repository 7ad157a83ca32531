"""Who may talk to the web server: loopback by default, a token anywhere else.

A loopback server answers only requests naming a loopback host (a page of another site
resolved to 127.0.0.1 by DNS rebinding sends its own name: 403). Any other server
requires the token from the environment, as ``Authorization: Bearer TOKEN`` (the scheme
in any case, as RFC 9110 says) or as the session cookie ``/login?token=TOKEN`` sets: its
expiry time, a random nonce and an HMAC of both keyed with the token (never the token).
A session ends after ``web.session_hours`` or at ``/logout``. A refused request's
connection is closed (a client without the token holds no keep-alive connection).
Every response carries the security headers (CSP, no sniffing, no framing, no store).
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from streamer.web.config import WebConfig, is_loopback

logger = logging.getLogger(__name__)

COOKIE = "streamer_session"
SESSION_LABEL = b"streamer-web-session/2"
OPEN_PATHS = ("/healthz", "/login", "/logout")  # answered without the token
MAX_REVOKED = 4096  # sessions ended by /logout remembered until they expire (oldest out)
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Access:
    """The access rules of one web server (see the module docstring).

    Args:
        cfg: the ``web`` config section (its host decides the rules).
    """

    def __init__(self, cfg: WebConfig, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self._token = cfg.token() if not cfg.loopback else None
        self._clock = clock
        self._revoked: collections.OrderedDict[str, int] = collections.OrderedDict()

    @web.middleware
    async def guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The middleware: refuse what may not go on, add the security headers."""
        refusal = self.refuse(request)
        if refusal is not None:
            refusal.force_close()  # no keep-alive connection for a refused client
            resp: web.StreamResponse = refusal
        else:
            try:
                resp = await handler(request)
            except web.HTTPException as exc:
                resp = web.Response(
                    status=exc.status, reason=exc.reason, body=exc.body, headers=exc.headers
                )
        resp.headers.setdefault("Cache-Control", "no-store")
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "no-referrer")
        resp.headers.setdefault("X-Frame-Options", "DENY")
        resp.headers.setdefault("Content-Security-Policy", CSP)
        logger.debug("%s %s -> %s", request.method, request.path, resp.status)
        return resp

    def refuse(self, request: web.Request) -> web.Response | None:
        """A 401/403 response for a request that may not go on, else None."""
        if self.cfg.loopback:
            # DNS rebinding: a page of another site resolved to 127.0.0.1 sends its own
            # host name; only loopback names may talk to a loopback server.
            try:
                host = request.url.host or ""
            except ValueError:
                host = "?"
            if not is_loopback(host):
                return web.Response(status=403, text="forbidden host\n")
            return None
        if request.path in OPEN_PATHS:
            return None
        if self.authorized(request):
            return None
        return web.Response(
            status=401,
            text="unauthorized: send 'Authorization: Bearer TOKEN' or open /login?token=TOKEN\n",
            headers={"WWW-Authenticate": 'Bearer realm="streamer"'},
        )

    def authorized(self, request: web.Request) -> bool:
        """Whether ``request`` carries the token or a live session cookie."""
        assert self._token is not None
        auth = request.headers.get("Authorization", "")
        scheme, _, credentials = auth.strip().partition(" ")
        if scheme.lower() == "bearer":
            return hmac.compare_digest(credentials.strip().encode(), self._token.encode())
        cookie = request.cookies.get(COOKIE)
        return cookie is not None and self.session_valid(cookie)

    # ------------------------------------------------------------------ sessions

    def _mac(self, expires: str, nonce: str) -> str:
        assert self._token is not None
        msg = SESSION_LABEL + b"|" + expires.encode() + b"|" + nonce.encode()
        return hmac.new(self._token.encode(), msg, hashlib.sha256).hexdigest()

    def new_session(self) -> str:
        """A session cookie's value: ``EXPIRES.NONCE.HMAC`` (UNIX seconds, random, hex)."""
        expires = str(int(self._clock() + self.cfg.session_hours * 3600))
        nonce = secrets.token_hex(16)
        return f"{expires}.{nonce}.{self._mac(expires, nonce)}"

    def session_valid(self, value: str) -> bool:
        """Whether ``value`` is a session this server's token made, not expired nor ended."""
        parts = value.split(".")
        if len(parts) != 3 or not parts[0].isascii() or not parts[0].isdigit():
            return False
        expires, nonce, mac = parts
        if not hmac.compare_digest(mac.encode(), self._mac(expires, nonce).encode()):
            return False
        return self._clock() < int(expires) and value not in self._revoked

    def _revoke(self, value: str) -> None:
        now = self._clock()
        for old in [k for k, exp in self._revoked.items() if exp <= now]:
            del self._revoked[old]
        self._revoked[value] = int(value.split(".", 1)[0])
        while len(self._revoked) > MAX_REVOKED:
            self._revoked.popitem(last=False)

    async def login(self, request: web.Request) -> web.StreamResponse:
        """``/login?token=...``: sets the session cookie, then back to the page."""
        if self._token is None:
            return web.Response(status=303, headers={"Location": "/"})
        given = request.query.get("token", "")
        if not hmac.compare_digest(given.encode(), self._token.encode()):
            resp = web.Response(status=401, text="wrong token\n")
            resp.force_close()
            return resp
        resp = web.Response(status=303, headers={"Location": "/"})
        resp.set_cookie(
            COOKIE,
            self.new_session(),
            max_age=round(self.cfg.session_hours * 3600),
            httponly=True,
            samesite="Strict",
            path="/",
        )
        return resp

    async def logout(self, request: web.Request) -> web.StreamResponse:
        """``/logout``: ends the session (here and in the browser)."""
        if self._token is None:
            return web.Response(status=303, headers={"Location": "/"})
        cookie = request.cookies.get(COOKIE)
        if cookie is not None and self.session_valid(cookie):
            self._revoke(cookie)
        resp = web.Response(text="logged out\n")
        resp.del_cookie(COOKIE, path="/")
        return resp
