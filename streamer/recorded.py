"""Reading a recorded JSONL (``replay --out``, ``run --out``) back: ``streamer plot`` and
``streamer episodes``.

The file is untrusted input. Every line is read within bounds and every record the
commands use (``streamer.va/1`` samples, ``streamer.event/1`` track events) is checked
field by field; whatever is wrong is one :class:`~streamer.errors.RecordError` naming the
file and the line (``va.jsonl:12: t is not a finite number``), never a traceback: not
for a line of 100,000 nested brackets, an integer of 5,000 digits, ``1e400``, ``NaN``,
bytes that are not UTF-8 or a line of a gigabyte.

Media time never runs backwards within a track: a record whose ``t`` is earlier than
the previous record of its track is refused with its line number, unless the reader
sorts first (``--sort``: every record by ``t``; at one ``t`` a track's ``appeared`` event
comes before its samples and its ``lost`` event after them).

Records of other schemas are counted, not used: :attr:`RecordReader.skipped` maps each
schema (``streamer.va/99``, ``streamer.mood/1``, ``(none)``) to how many records of it
were skipped, and :meth:`RecordReader.skipped_line` says so in one line.

    reader = RecordReader(Path("va.jsonl"), want={VA_SCHEMA})
    for line, msg in reader.messages():
        ...
    reader.skipped  # {"streamer.event/1": 2, "streamer.va/99": 12}
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from streamer.errors import RecordError
from streamer.messages import EVENT_SCHEMA, VA_SCHEMA, TrackEvent, TrackEventKind, VASample

logger = logging.getLogger(__name__)

MAX_LINE_BYTES = 1 << 20  # one record; a replay writes a few hundred bytes
MAX_INT = 2**53  # frame numbers and track ids (what a double holds exactly)
MAX_T_S = 1e10  # media time, seconds (about 300 years)
MAX_TEXT = 1000  # characters of a camera or model name
VA_LIMIT = 1.0 + 1e-6  # smoothed valence and arousal are clamped to [-1, 1]
NO_SCHEMA = "(none)"
KNOWN = frozenset({VA_SCHEMA, EVENT_SCHEMA})


# A bad field raises RecordError with the field's problem only; the reader adds the
# file, the line and the schema.
_Bad = RecordError


def _number(rec: dict[str, Any], key: str, *, optional: bool = False) -> float | None:
    x = rec.get(key)
    if x is None and optional:
        return None
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise _Bad(f"{key} must be a number, got {_kind(x)}")
    try:
        value = float(x)
    except OverflowError:
        raise _Bad(f"{key} is not a finite number (too large)") from None
    if not math.isfinite(value):
        raise _Bad(f"{key} is not a finite number ({x!r})")
    return value


def _finite(rec: dict[str, Any], key: str) -> float:
    value = _number(rec, key)
    assert value is not None
    return value


def _integer(rec: dict[str, Any], key: str) -> int:
    x = rec.get(key)
    if isinstance(x, bool) or not isinstance(x, int):
        raise _Bad(f"{key} must be an integer, got {_kind(x)}")
    if not 0 <= x < MAX_INT:
        raise _Bad(f"{key} must be an integer from 0 to 2**53")
    return x


def _text(rec: dict[str, Any], key: str, *, optional: bool = False) -> str | None:
    x = rec.get(key)
    if x is None and optional:
        return None
    if not isinstance(x, str) or not x or len(x) > MAX_TEXT:
        raise _Bad(f"{key} must be a text of 1 to {MAX_TEXT} characters, got {_kind(x)}")
    try:
        x.encode("utf-8")
    except UnicodeEncodeError:
        raise _Bad(f"{key} is not valid text (a lone surrogate)") from None
    return x


def _kind(x: object) -> str:
    if x is None:
        return "nothing"
    if isinstance(x, str):
        return "a text"
    if isinstance(x, bool):
        return "true/false"
    if isinstance(x, list | dict):
        return "a list" if isinstance(x, list) else "an object"
    return type(x).__name__


def _pair(rec: dict[str, Any], key: str, n: int) -> list[float]:
    x = rec.get(key)
    if not isinstance(x, list) or len(x) != n:
        raise _Bad(f"{key} must be a list of {n} numbers, got {_kind(x)}")
    return [_finite({key: v}, key) for v in x]


def _time(rec: dict[str, Any]) -> float:
    t = _finite(rec, "t")
    if abs(t) > MAX_T_S:
        raise _Bad(f"t must be within ±{MAX_T_S:.0e} s, got {t:g}")
    return t


def va_sample(rec: dict[str, Any]) -> VASample:
    """The :class:`VASample` of a ``streamer.va/1`` record, every field checked.

    ``camera``, ``track_id``, ``t``, ``valence`` and ``arousal`` are required; ``frame``,
    ``box``, ``variance`` and the rest may be left out of a hand-made file (0, an empty
    box, a sure sample), but when present they are checked like the others.
    """
    camera = _text(rec, "camera") or ""
    track_id = _integer(rec, "track_id")
    frame = _integer(rec, "frame") if "frame" in rec else 0
    t = _time(rec)
    valence, arousal = _finite(rec, "valence"), _finite(rec, "arousal")
    if abs(valence) > VA_LIMIT or abs(arousal) > VA_LIMIT:
        raise _Bad("valence and arousal must be within [-1, 1]")
    box = _pair(rec, "box", 4) if "box" in rec else [0.0, 0.0, 0.0, 0.0]
    var = _pair(rec, "variance", 2) if "variance" in rec else [0.0, 0.0]
    if min(var) < 0:
        raise _Bad("variance must not be negative")
    return VASample(
        camera=camera,
        frame=frame,
        t=t,
        track_id=track_id,
        box=(box[0], box[1], box[2], box[3]),
        valence=valence,
        arousal=arousal,
        valence_raw=_number(rec, "valence_raw", optional=True),
        arousal_raw=_number(rec, "arousal_raw", optional=True),
        variance=(var[0], var[1]),
        model=_text(rec, "model", optional=True) or "",
        wall_time=_number(rec, "wall_time", optional=True),
    )


def track_event(rec: dict[str, Any]) -> TrackEvent:
    """The :class:`TrackEvent` of a ``streamer.event/1`` record, every field checked."""
    kind = rec.get("event")
    try:
        event = TrackEventKind(kind) if isinstance(kind, str) else None
    except ValueError:
        event = None
    if event is None:
        names = ", ".join(k.value for k in TrackEventKind)
        raise _Bad(f"event must be one of {names}, got {_kind(kind)}")
    return TrackEvent(
        camera=_text(rec, "camera") or "",
        track_id=_integer(rec, "track_id"),
        kind=event,
        frame=_integer(rec, "frame"),
        t=_time(rec),
        wall_time=_number(rec, "wall_time", optional=True),
        duration_s=_number(rec, "duration_s", optional=True),
        reason=_text(rec, "reason", optional=True),
    )


PARSERS: dict[str, Callable[[dict[str, Any]], VASample | TrackEvent]] = {
    VA_SCHEMA: va_sample,
    EVENT_SCHEMA: track_event,
}


def _time_order(item: tuple[int, VASample | TrackEvent]) -> tuple[float, int, int]:
    """``--sort``'s order: by ``t``; at one ``t`` a track appears, then its samples, then
    it is lost; then by line."""
    n, msg = item
    if isinstance(msg, TrackEvent):
        return msg.t, 0 if msg.kind is TrackEventKind.APPEARED else 2, n
    return msg.t, 1, n


class RecordReader:
    """The VA samples and track events of a recorded JSONL, checked (module docstring).

    Args:
        path: the file.
        want: the schemas the command uses (others are counted in :attr:`skipped`).
        sort: order the records by ``t`` instead of refusing time running backwards
            within a track.

    Attributes:
        skipped: per schema, records that were not used.
        lines: lines read (blank ones included).
    """

    def __init__(self, path: Path, want: frozenset[str] = KNOWN, *, sort: bool = False) -> None:
        self.path = path
        self.want = want
        self.sort = sort
        self.skipped: dict[str, int] = {}
        self.lines = 0

    def error(self, n: int, what: str) -> RecordError:
        return RecordError(f"{self.path}:{n}: {what}")

    def records(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """(line number, JSON object) of each non-blank line, within bounds."""
        try:
            fh = self.path.open("rb")
        except FileNotFoundError as err:
            raise RecordError(f"{self.path}: no such file") from err
        except OSError as err:
            raise RecordError(f"{self.path}: cannot read: {err.strerror or err}") from err
        with fh:
            n = 0
            while True:
                try:
                    raw = fh.readline(MAX_LINE_BYTES + 1)
                except OSError as err:
                    raise self.error(n + 1, f"cannot read: {err.strerror or err}") from err
                if not raw:
                    break
                n += 1
                self.lines = n
                if len(raw) > MAX_LINE_BYTES:
                    raise self.error(n, f"line longer than {MAX_LINE_BYTES} bytes")
                if raw.strip():
                    yield n, self._parse(n, raw)

    def _parse(self, n: int, raw: bytes) -> dict[str, Any]:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.error(n, "not UTF-8 text") from None
        try:
            rec = json.loads(text)
        except RecursionError:
            raise self.error(n, "not valid JSON (nested too deeply)") from None
        except json.JSONDecodeError as err:
            raise self.error(n, f"not valid JSON ({err.msg} at column {err.colno})") from None
        except ValueError as err:  # an integer of thousands of digits
            raise self.error(n, f"not valid JSON ({str(err)[:80]})") from None
        if not isinstance(rec, dict):
            raise self.error(n, f"expected a JSON object, got {_kind(rec)}")
        return rec

    def messages(self) -> Iterator[tuple[int, VASample | TrackEvent]]:
        """(line number, message) of every wanted record, in time order per track.

        Raises:
            RecordError: a line is not a JSON object, a wanted record has a bad field,
                or ``t`` runs backwards within a track (without ``sort``).
        """
        items = self._wanted()
        if self.sort:
            yield from sorted(items, key=_time_order)
            return
        last: dict[tuple[str, int], tuple[float, int]] = {}
        for n, msg in items:
            key = (msg.camera, msg.track_id)
            prev = last.get(key)
            if prev is not None and msg.t < prev[0]:
                raise self.error(
                    n,
                    f"t = {msg.t:g} s is earlier than {prev[0]:g} s on line {prev[1]} "
                    f"(camera {msg.camera!r}, track {msg.track_id}): time runs backwards; "
                    "--sort orders the records by t first",
                )
            last[key] = (msg.t, n)
            yield n, msg

    def _wanted(self) -> Iterator[tuple[int, VASample | TrackEvent]]:
        for n, rec in self.records():
            schema = rec.get("schema")
            name = schema if isinstance(schema, str) else NO_SCHEMA
            parse = PARSERS.get(name)
            if parse is None or name not in self.want:
                key = name[:60] if name.isprintable() else repr(name)[:60]
                self.skipped[key] = self.skipped.get(key, 0) + 1
                continue
            try:
                yield n, parse(rec)
            except _Bad as err:
                raise self.error(n, f"a {name} record: {err}") from None

    def skipped_line(self) -> str:
        """``skipped 12 records of schema streamer.va/99, 3 of streamer.mood/1`` or ""."""
        if not self.skipped:
            return ""
        parts = sorted(self.skipped.items(), key=lambda kv: (-kv[1], kv[0]))
        first, *rest = parts
        text = f"{self.path}: skipped {first[1]} record(s) of schema {first[0]}"
        return text + "".join(f", {count} of {schema}" for schema, count in rest)

    def unknown(self) -> dict[str, int]:
        """The skipped records whose schema this version does not know at all."""
        return {s: c for s, c in self.skipped.items() if s not in _ALL_SCHEMAS}


def report_skipped(reader: RecordReader) -> None:
    """Log what ``reader`` skipped: a warning when a schema is unknown to this version
    (``streamer.va/99``: a newer writer), else at info level."""
    line = reader.skipped_line()
    if not line:
        return
    if reader.unknown():
        logger.warning("%s (unknown to this version: %s)", line, ", ".join(reader.unknown()))
    else:
        logger.info("%s", line)


def _all_schemas() -> frozenset[str]:
    from streamer import messages

    return frozenset(
        v for k, v in vars(messages).items() if k.endswith("_SCHEMA") and isinstance(v, str)
    )


_ALL_SCHEMAS = _all_schemas()
