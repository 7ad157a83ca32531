"""Make untrusted text safe to show on a terminal.

Anything received from the broker may hold terminal escape sequences (``ESC ] 0 ; title
BEL`` retitles a terminal, ``ESC [ 5 m`` blinks) or bidirectional overrides (U+202E shows
text reversed). :func:`safe_text` escapes every control, format (bidi included),
surrogate, private-use and line/paragraph separator character as ``\\xNN``, ``\\uNNNN``
or ``\\UNNNNNNNN``, so what reaches the screen is printable and reads as what was sent.
"""

from __future__ import annotations

import unicodedata
from typing import Any

_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def safe_text(text: str) -> str:
    """``text`` with every non-printing character escaped (see the module docstring)."""
    if text.isprintable():  # fast path; isprintable() is False for all of the above
        return text
    return "".join(
        _escape(ch) if unicodedata.category(ch) in _UNSAFE_CATEGORIES else ch for ch in text
    )


def safe_value(value: Any) -> Any:
    """A copy of a decoded JSON value with every string (keys too) made safe."""
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, dict):
        return {safe_text(str(k)): safe_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [safe_value(v) for v in value]
    return value
