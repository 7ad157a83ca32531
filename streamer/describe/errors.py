"""Failures of an LLM provider, all :class:`streamer.errors.DescriberError`::

    DescriberError
    ├── ProviderUnavailableError   server down / connection refused / model file absent
    ├── ProviderTimeoutError       no complete answer within timeout_s
    ├── ProviderResponseError      HTTP error status or an error in the stream
    └── InvalidAnswerError         blank, non-JSON or schema-breaking answer

    ConfigError
    └── DatasetError               a labelled evaluation file that cannot be used

The describer treats the first three as transport failures (counted, throttled) and
retries an invalid answer once.
"""

from __future__ import annotations

from streamer.errors import ConfigError, DescriberError


class ProviderUnavailableError(DescriberError):
    """The provider cannot be reached or loaded."""


class ProviderTimeoutError(DescriberError):
    """A request ran past its hard timeout."""


class ProviderResponseError(DescriberError):
    """The provider answered with an error."""


class InvalidAnswerError(DescriberError):
    """The answer is blank, not JSON, or does not match the schema."""


class DatasetError(ConfigError):
    """An evaluation dataset cannot be read or has a bad row (names file and line)."""
