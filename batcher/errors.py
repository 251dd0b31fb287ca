"""The batcher's error tree. Every driver error is translated into one of these at one seam.

BatcherError
 ├── RetryableError        the world is briefly wrong: wait, back off, try again
 │    └── SinkUnavailable  connection refused/reset, timeout, server shutting down
 ├── PoisonError           this data is wrong: set it aside (dead-letter), go on
 │    ├── BadRecord        a record failed to decode or validate (reason + message)
 │    └── RejectedRows     the sink refused rows (constraint, type); split to find them
 └── FatalError            nothing will work until a human acts: stop with a clear message
      ├── ConfigError      a config key is missing or wrong (names the key and the fix)
      ├── SchemaMismatch   the sink's table/dir disagrees with the declared columns
      └── InputTooBroken   bad-record ratio or run above the configured limit
"""

from __future__ import annotations


class BatcherError(Exception):
    """Base of every error the batcher raises on purpose."""


class RetryableError(BatcherError):
    """Transient: retry with backoff; nothing is committed meanwhile."""


class SinkUnavailable(RetryableError):
    def __init__(self, sink: str, detail: str) -> None:
        super().__init__(f"{sink} unavailable: {detail}")
        self.sink = sink
        self.detail = detail


class PoisonError(BatcherError):
    """The data itself is bad; retrying cannot help."""


class BadRecord(PoisonError):
    """A record that cannot be decoded or validated against its route's columns."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason  # a short stable label: metrics and DLQ header
        self.message = message


class RejectedRows(PoisonError):
    """The sink refused at least one row of a batch (check constraint, bad value)."""

    def __init__(self, sink: str, detail: str) -> None:
        super().__init__(f"{sink} rejected rows: {detail}")
        self.sink = sink
        self.detail = detail


class FatalError(BatcherError):
    """Stop the daemon; a human must act."""


class ConfigError(FatalError):
    pass


class SchemaMismatch(FatalError):
    pass


class InputTooBroken(FatalError):
    pass
