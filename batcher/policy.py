"""When to flush: pure decisions from ``now`` and a buffer's pending rows, bytes and age."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Trigger(enum.Enum):
    """Why a flush happened (the ``cause`` label of batcher_flush_triggers_total)."""

    ROWS = "rows"
    BYTES = "bytes"
    AGE = "age"
    MEMORY = "memory"
    REBALANCE = "rebalance"
    SHUTDOWN = "shutdown"


@dataclass(frozen=True)
class FlushPolicy:
    """A sink's triggers. Postgres wants small, frequent flushes; HDFS large files."""

    max_rows: int
    max_bytes: int
    max_age_s: float

    def due(self, now: float, rows: int, nbytes: int, oldest: float | None) -> Trigger | None:
        """The trigger that fires for a pending buffer, or None. ``oldest`` is the receive
        time (same clock as ``now``) of the oldest record not yet flushed to this sink."""
        if rows == 0 and oldest is None:
            return None
        if rows >= self.max_rows:
            return Trigger.ROWS
        if nbytes >= self.max_bytes:
            return Trigger.BYTES
        if oldest is not None and now - oldest >= self.max_age_s:
            return Trigger.AGE
        return None


@dataclass
class Backoff:
    """Exponential backoff with full jitter; ``rand`` is injected so tests need no sleeps."""

    initial_s: float
    max_s: float
    attempts: int = 0

    def next_delay(self, rand: float) -> float:
        """Delay before the next attempt; ``rand`` in [0, 1)."""
        cap: float = min(self.max_s, self.initial_s * 2.0**self.attempts)
        self.attempts += 1
        return cap / 2 + rand * cap / 2  # half fixed, half jitter: never a zero wait

    def reset(self) -> None:
        self.attempts = 0


@dataclass
class BadInputGuard:
    """Stops a daemon that is draining a clearly broken topic into the dead-letter topic.

    Trips when the bad ratio over the last ``window`` records exceeds ``max_ratio`` (checked
    once the window is full), or after ``max_consecutive`` bad records in a row.
    """

    max_ratio: float
    window: int
    max_consecutive: int
    _seen: int = 0
    _bad: int = 0
    _consecutive: int = 0

    def observe(self, good: int, bad: int, trailing_bad: int) -> str | None:
        """Account a decoded batch (``trailing_bad``: bad records after its last good one);
        returns why the limit tripped, or None."""
        self._consecutive = self._consecutive + bad if good == 0 else trailing_bad
        self._seen += good + bad
        self._bad += bad
        if self._consecutive >= self.max_consecutive:
            return f"{self._consecutive} consecutive bad records (limit {self.max_consecutive})"
        if self._seen >= self.window:
            ratio = self._bad / self._seen
            self._seen = self._bad = 0
            if ratio > self.max_ratio:
                return f"bad-record ratio {ratio:.2f} over the window (limit {self.max_ratio})"
        return None
