"""The exception hierarchy of the analyzer.

Every error the package raises on purpose derives from :class:`StreamerError`, so the CLI
can print one clean line (``str(err)``) and exit non-zero without a traceback::

    StreamerError
    ├── ConfigError            bad YAML / unknown key / bad value (names key and line)
    ├── MediaError             a video or image that cannot be opened or decoded
    │   └── SourceError        a live source failed (open timeout, stall, refused)
    ├── ModelError             a model that cannot be loaded or run
    │   ├── ModelMissingError  not in the store; message holds the fetch command
    │   └── WeightsError       a weights file that does not match the network
    ├── StoreError             fetch / checksum / cache failures
    │   └── ChecksumError      sha256 mismatch or truncated download
    ├── PublishError           MQTT / sink failures (auth, TLS)
    └── DescriberError         LLM provider failures (timeout, bad answer)

Library errors are translated at the boundary with ``raise ... from err``.
"""

from __future__ import annotations


class StreamerError(Exception):
    """Base of every error the analyzer raises on purpose."""


class ConfigError(StreamerError):
    """A configuration file or value is invalid."""


class MediaError(StreamerError):
    """A media file or stream cannot be opened or decoded."""


class SourceError(MediaError):
    """A live source failed (unreachable, stalled, refused)."""


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


class PublishError(StreamerError):
    """A sink (MQTT broker, file) refused or failed."""


class DescriberError(StreamerError):
    """An LLM provider failed or answered something unusable."""
