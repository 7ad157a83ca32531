"""Remove credentials from URLs (and from any text that contains URLs) before logging.

FFmpeg error messages quote the URL they failed on, credentials included, so every
string that may hold a camera URL goes through :func:`redact` before it reaches a log
line, a status ``detail`` or an exception message::

    >>> redact("rtsp://admin:hunter2@10.0.0.7:554/stream1")
    'rtsp://***@10.0.0.7:554/stream1'
    >>> redact("Connection refused: 'rtsp://admin:pw@cam/x?token=abc'")
    "Connection refused: 'rtsp://***@cam/x?token=***'"
"""

from __future__ import annotations

import re

# scheme://userinfo@ ; greedy, so a raw '@' inside the password is covered too.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/\s'\"]*@)")
# Query parameters that commonly carry secrets in camera URLs.
_SECRET_PARAMS = re.compile(
    r"(?P<key>[?&;](?:password|passwd|pwd|pass|token|access_token|auth|key|apikey|api_key|"
    r"secret|signature|sig|user|username)=)(?P<value>[^&;\s'\"#]*)",
    re.IGNORECASE,
)

REDACTED = "***"


def redact(text: object) -> str:
    """Return ``str(text)`` with URL credentials and secret query values replaced by ``***``.

    Works on bare URLs and on free text (error messages) that quote URLs. Text without
    credentials is returned unchanged.

    Args:
        text: a URL, a message or an exception.

    Returns:
        The redacted string.
    """
    s = str(text)
    s = _USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", s)
    return _SECRET_PARAMS.sub(lambda m: f"{m.group('key')}{REDACTED}", s)
