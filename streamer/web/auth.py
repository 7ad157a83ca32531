"""Who may talk to the web server: loopback by default, a token anywhere else.

A loopback server answers only requests naming a loopback host (a page of another site
resolved to 127.0.0.1 by DNS rebinding sends its own name: 403). Any other server
requires the token from the environment, as ``Authorization: Bearer TOKEN`` or as the
session cookie ``/login?token=TOKEN`` sets (an HMAC of the token, never the token).
Every response carries the security headers (CSP, no sniffing, no framing, no store).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from streamer.web.config import WebConfig, is_loopback

logger = logging.getLogger(__name__)

COOKIE = "streamer_session"
SESSION_LABEL = b"streamer-web-session/1"
OPEN_PATHS = ("/healthz", "/login")  # answered without the token
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

    def __init__(self, cfg: WebConfig) -> None:
        self.cfg = cfg
        self._token = cfg.token() if not cfg.loopback else None
        self._session = (
            hmac.new(self._token.encode(), SESSION_LABEL, hashlib.sha256).hexdigest()
            if self._token
            else None
        )

    @web.middleware
    async def guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The middleware: refuse what may not go on, add the security headers."""
        refusal = self.refuse(request)
        if refusal is not None:
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
        """Whether ``request`` carries the token or the session cookie."""
        assert self._token is not None and self._session is not None
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given = auth[len("Bearer ") :].strip().encode()
            return hmac.compare_digest(given, self._token.encode())
        cookie = request.cookies.get(COOKIE)
        if cookie is not None:
            return hmac.compare_digest(cookie.encode(), self._session.encode())
        return False

    async def login(self, request: web.Request) -> web.StreamResponse:
        """``/login?token=...``: sets the session cookie, then back to the page."""
        if self._token is None:
            return web.Response(status=303, headers={"Location": "/"})
        given = request.query.get("token", "")
        if not hmac.compare_digest(given.encode(), self._token.encode()):
            return web.Response(status=401, text="wrong token\n")
        resp = web.Response(status=303, headers={"Location": "/"})
        assert self._session is not None
        resp.set_cookie(COOKIE, self._session, httponly=True, samesite="Strict", path="/")
        return resp
