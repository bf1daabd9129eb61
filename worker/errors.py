"""The one exception tree, shaped by what the caller does next.

::

    SyncError
    ├── ConfigError              fatal at start-up: one line per problem, naming the variable
    ├── RecordError              reject the record: it goes to the DLQ with its stage
    │   ├── DecodeError          bytes are none of the three encodings (stage DECODE)
    │   └── ValidationError      decoded, but breaks a rule of CONTRACT section 1 (stage VALIDATE)
    ├── TransientError           retry later with backoff; `retry_after` honoured when given
    ├── AuthError                re-authenticate (HTTP 401, session error in a 200 body), then retry
    ├── FileRejectedError        InMobi refused the file (400, 413): split it, or DLQ a lone row
    ├── UnknownSegmentError      InMobi does not know the segment (404)
    └── FatalError               stop the worker (bad credentials that stay bad, broken invariants)

Third-party exceptions (confluent_kafka, aiohttp) are translated into this tree inside their
adapter and never leave it.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "ConfigError",
    "DecodeError",
    "FatalError",
    "FileRejectedError",
    "RecordError",
    "SyncError",
    "TransientError",
    "UnknownSegmentError",
    "ValidationError",
]


class SyncError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(SyncError):
    """Configuration is invalid; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class RecordError(SyncError):
    """A record cannot be synced and goes to the dead-letter topic."""


class DecodeError(RecordError):
    """The value is none of: Confluent-framed Avro, plain Avro, JSON."""


class ValidationError(RecordError):
    """The value decoded but breaks a rule (bad UUID, zero IDFA, bad segment name...)."""


class TransientError(SyncError):
    """Worth retrying later: 429, 5xx, timeouts, connection resets."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class AuthError(SyncError):
    """The session is missing, expired or revoked: generate a new one, then retry."""


class FileRejectedError(SyncError):
    """InMobi rejected an upload file as a whole (400 bad file or IDs, 413 too large)."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class UnknownSegmentError(SyncError):
    """InMobi answered 404 for a segment ID."""


class FatalError(SyncError):
    """Nothing the worker can do by itself: stop, commit nothing further, exit non-zero."""
