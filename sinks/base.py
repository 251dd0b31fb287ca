"""The one contract every sink implements.

A sink stores batches of one topic-partition and is the truth about what it has stored:
``durable_offsets`` reads, from the sink's own storage, the next offset it expects per
topic-partition. ``write`` must be atomic per call (all rows and the new offset, or nothing)
and must skip rows whose offset is below what it already holds, so a replay never
duplicates. Errors are translated into ``batcher.errors`` (retryable / poison / fatal).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa


@dataclass(frozen=True, order=True)
class TopicPartition:
    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]"


@dataclass(frozen=True)
class Batch:
    """Decoded rows of one topic-partition covering Kafka offsets [first_offset, next_offset).

    ``offsets`` holds each row's Kafka offset (ascending); offsets in the range without a row
    were dead-lettered or were not data (transaction markers, compaction gaps).
    """

    tp: TopicPartition
    # A Table: the buffer hands its chunks over as they are (no copy); a RecordBatch given
    # here becomes a one-chunk Table.
    records: pa.Table
    offsets: pa.Array  # int64, one per row
    first_offset: int
    next_offset: int
    event_time_column: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.records, pa.RecordBatch):
            object.__setattr__(self, "records", pa.Table.from_batches([self.records]))
        if len(self.offsets) != self.records.num_rows:
            raise ValueError("one offset per row is required")
        if self.next_offset < self.first_offset:
            raise ValueError("next_offset < first_offset")

    @property
    def num_rows(self) -> int:
        return int(self.records.num_rows)

    def from_offset(self, offset: int) -> Batch:
        """The part of this batch at or after ``offset`` (what a sink does not hold yet)."""
        if offset <= self.first_offset:
            return self
        import pyarrow.compute as pc

        start: int = pc.sum(pc.less(self.offsets, offset)).as_py() or 0
        return Batch(
            tp=self.tp,
            records=self.records.slice(start),
            offsets=self.offsets.slice(start),
            first_offset=min(offset, self.next_offset),
            next_offset=self.next_offset,
            event_time_column=self.event_time_column,
        )


@dataclass(frozen=True)
class RejectedRow:
    """A row the sink refused (poison), bound for the dead-letter topic."""

    offset: int
    reason: str  # short stable label, e.g. "pg_check_violation"
    message: str


# Called by a sink with the rows it refused, BEFORE it commits the batch; returns only once
# the dead-letter topic has acknowledged them (so a crash cannot lose a rejected row).
DeadLetterFn = Callable[[TopicPartition, list[RejectedRow]], None]


class Sink(Protocol):
    """What the batcher needs from a sink. Implementations: PostgresCopySink, HdfsParquetSink."""

    name: str

    def setup(self) -> None:
        """Connect; create or check the target (table, directory). FatalError on mismatch."""

    def durable_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Next offset the sink expects per partition, from its own storage (absent = nothing)."""
        ...

    def recover(self, tps: list[TopicPartition]) -> None:
        """Finish or discard a half-done write left by a crash (called on assignment)."""

    def write(self, batch: Batch, dead_letter: DeadLetterFn) -> int:
        """Store the rows of ``batch`` not yet held, atomically with ``batch.next_offset``.

        Rows the sink refuses go to ``dead_letter`` before the commit. Returns the number of
        rows written. Raises SinkUnavailable (retry later) or FatalError.
        """
        ...

    def close(self) -> None: ...
