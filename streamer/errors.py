"""The one exception tree of the analyzer.

Every exception the package defines derives from :class:`StreamerError`, so the CLI can
print one clean line (``str(err)``) and exit non-zero without a traceback, and a caller
can catch the whole package's errors in one clause. All of them are defined here::

    StreamerError
    ├── ConfigError                bad YAML / unknown key / bad value (names key and line)
    │   ├── ConfigFieldError       a validator's complaint about one key below it (its line)
    │   ├── DatasetError           a labelled evaluation file that cannot be used
    │   └── RecordError            a recorded JSONL line that cannot be used (file:line)
    ├── MediaError                 a video or image that cannot be opened or decoded
    │   ├── SourceError            a live source failed (open timeout, stall, refused)
    │   ├── SessionEnded           a decode session ended for a reason (may be retried)
    │   └── ReadError              the demuxer failed mid-stream (damaged, truncated)
    ├── ModelError                 a model that cannot be loaded or run
    │   ├── ModelMissingError      not in the store; the message holds the fetch command
    │   └── WeightsError           a weights file that does not match the network
    ├── StoreError                 fetch / checksum / cache failures
    │   └── ChecksumError          sha256 mismatch or truncated download
    ├── HandOffError               the hand-offs between stages
    │   ├── MailboxClosed          a frame mailbox is closed and empty (end of frames)
    │   └── BusFullError           a lossless subscriber is full and the caller cannot wait
    ├── PublishError               MQTT / sink failures (auth, TLS)
    │   ├── InboundError           an inbound MQTT payload was rejected (also a ValueError)
    │   └── OutputError            an output file refused or failed (names the path given)
    ├── DescriberError             LLM provider failures
    │   ├── ProviderUnavailableError   server down / connection refused / model file absent
    │   ├── ProviderTimeoutError       no complete answer within timeout_s
    │   ├── ProviderResponseError      HTTP error status or an error in the stream
    │   └── InvalidAnswerError         blank, non-JSON or schema-breaking answer
    ├── ClusterError               the Ray cluster cannot be reached or run the cameras
    └── HistoryError               the history database: unreadable, not a history
        ├── HistoryVersionError    its schema is newer than this streamer's (names both)
        └── HistoryQueryError      a bad query: a time, a range, an unknown camera (exit 2)

Library errors are translated at the boundary with ``raise ... from err``. A test
(``tests/core/test_errors.py``) imports every module of the package and checks that each
exception class it defines is drawn above and derives from :class:`StreamerError`.
"""

from __future__ import annotations


class StreamerError(Exception):
    """Base of every error the analyzer raises on purpose."""


class ConfigError(StreamerError):
    """A configuration file or value is invalid."""


class ConfigFieldError(ConfigError, ValueError):
    """Raised in a config model's validator about one key below that model, so the
    message names that key's YAML line (a duplicate rule name at the duplicate, not at
    ``episodes:``).

    Attributes:
        at: the key's path below the model, e.g. ``("rules", 2, "name")``.
    """

    def __init__(self, message: str, at: tuple[str | int, ...]) -> None:
        super().__init__(message)
        self.at = at


class DatasetError(ConfigError):
    """An evaluation dataset cannot be read or has a bad row (names file and line)."""


class RecordError(ConfigError):
    """A recorded JSONL (``streamer plot``, ``streamer episodes``) has a line that cannot
    be used: not JSON, a bad field, time running backwards (names file and line)."""


class MediaError(StreamerError):
    """A media file or stream cannot be opened or decoded."""


class SourceError(MediaError):
    """A live source failed (unreachable, stalled, refused)."""


class SessionEnded(MediaError):
    """A decode session ended for a reason the caller reports (and may retry).

    Attributes:
        stall: the session ended because the stream stopped delivering packets.
    """

    def __init__(self, reason: str, *, stall: bool = False) -> None:
        super().__init__(reason)
        self.stall = stall


class ReadError(MediaError):
    """The demuxer failed mid-stream (damaged or truncated container).

    Attributes:
        t: media seconds of the last packet read before the failure.
    """

    def __init__(self, t: float, err: Exception) -> None:
        super().__init__(f"cannot read past {t:.2f} s: {err}")
        self.t = t


class ModelError(StreamerError):
    """A model cannot be loaded or run."""


class ModelMissingError(ModelError):
    """A model is not in the local store; the message says how to fetch it."""


class WeightsError(ModelError):
    """A weights file does not match the network it is loaded into."""


class StoreError(StreamerError):
    """The model store could not fetch, verify or cache an artifact."""


class ChecksumError(StoreError):
    """An artifact's sha256 does not match the manifest (or it is truncated)."""


class HandOffError(StreamerError):
    """A hand-off between two stages (frame mailbox, event bus) refused an item."""


class MailboxClosed(HandOffError):
    """Raised by :meth:`streamer.sources.mailbox.Mailbox.get` once it is closed and empty."""


class BusFullError(HandOffError):
    """:meth:`streamer.bus.EventBus.publish_nowait` met a lossless subscriber at its hard
    cap: the message was queued for no one. A caller that can wait uses ``await
    bus.publish(msg)`` instead, which waits for room."""


class PublishError(StreamerError):
    """A sink (MQTT broker, file) refused or failed."""


class InboundError(PublishError, ValueError):
    """An inbound MQTT payload was rejected (not UTF-8, too large, not JSON, invalid)."""


class OutputError(PublishError):
    """An output file (``--out``, ``--annotate``, ``plot -o``) is refused before the work
    (it is an input, a directory, not writable) or failed to be written (full disk);
    the message names the path as the user gave it (see :mod:`streamer.output`)."""


class DescriberError(StreamerError):
    """An LLM provider failed or answered something unusable."""


class ProviderUnavailableError(DescriberError):
    """The provider cannot be reached or loaded."""


class ProviderTimeoutError(DescriberError):
    """A request ran past its hard timeout."""


class ProviderResponseError(DescriberError):
    """The provider answered with an error."""


class InvalidAnswerError(DescriberError):
    """The answer is blank, not JSON, or does not match the schema."""


class ClusterError(StreamerError):
    """The cluster cannot be reached or cannot run the cameras (names the camera)."""


class HistoryError(StreamerError):
    """The history database cannot be used (names the database and why), or a history
    query is bad (an unknown camera, a range that ends before it starts)."""


class HistoryVersionError(HistoryError):
    """The history database's schema is newer than this streamer's: refused, not touched.

    Attributes:
        found: the database's schema version.
        supported: the newest version this streamer knows.
    """

    def __init__(self, where: str, found: int, supported: int) -> None:
        super().__init__(
            f"{where}: the history's schema version {found} is newer than this streamer's "
            f"({supported}): upgrade streamer, or point `history` at another database"
        )
        self.found = found
        self.supported = supported


class HistoryQueryError(HistoryError):
    """A history query that cannot be answered as asked: a bad time, a range that ends
    before it starts, an unknown camera (``streamer history`` exits 2; the API says 400)."""
