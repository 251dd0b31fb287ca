"""Partition buffers: per-sink cursors, release only when every sink is durable."""

from __future__ import annotations

import pyarrow as pa

from batcher.buffer import PartitionBuffer
from sinks.base import TopicPartition

TP = TopicPartition("t", 0)


def rows(offsets: list[int]) -> tuple[pa.RecordBatch, pa.Array]:
    batch = pa.RecordBatch.from_pydict({"id": pa.array(offsets, pa.int64())})
    return batch, pa.array(offsets, pa.int64())


def make(start: int = 0, **durable: int) -> PartitionBuffer:
    return PartitionBuffer(TP, start, durable or {"pg": start, "hdfs": start}, None)


def test_each_sink_takes_from_its_own_cursor() -> None:
    buf = make()
    buf.append(*rows([0, 1, 2]), next_offset=3, now=1.0)
    pg = buf.take("pg")
    assert pg is not None and pg.offsets.to_pylist() == [0, 1, 2] and pg.next_offset == 3
    assert buf.take("pg") is None  # in flight: nothing new
    buf.append(*rows([3, 5]), next_offset=6, now=2.0)  # offset 4 was dead-lettered
    pg2 = buf.take("pg")
    assert pg2 is not None and pg2.first_offset == 3 and pg2.offsets.to_pylist() == [3, 5]
    hdfs = buf.take("hdfs")
    assert hdfs is not None and hdfs.offsets.to_pylist() == [0, 1, 2, 3, 5]


def test_chunks_are_released_only_when_every_sink_is_durable() -> None:
    buf = make()
    buf.append(*rows([0, 1]), next_offset=2, now=1.0)
    before = buf.nbytes
    buf.take("pg")
    assert buf.durable("pg", 2) == 0  # hdfs still needs them
    assert buf.nbytes == before
    buf.take("hdfs")
    assert buf.durable("hdfs", 2) == before
    assert buf.nbytes == 0 and buf.min_durable() == 2


def test_failed_write_is_handed_over_again() -> None:
    buf = make()
    buf.append(*rows([0, 1]), next_offset=2, now=1.0)
    assert buf.take("pg") is not None
    assert buf.inflight("pg")
    buf.failed("pg")
    again = buf.take("pg")
    assert again is not None and again.offsets.to_pylist() == [0, 1]


def test_sink_ahead_of_the_seek_position_gets_only_newer_rows() -> None:
    buf = make(start=0, pg=2, hdfs=0)
    buf.append(*rows([0, 1, 2, 3]), next_offset=4, now=1.0)
    pg = buf.take("pg")
    assert pg is not None and pg.offsets.to_pylist() == [2, 3] and pg.first_offset == 2


def test_pending_reports_rows_bytes_and_oldest() -> None:
    buf = make()
    assert buf.pending("pg") == (0, 0, None)
    buf.append(*rows([0]), next_offset=1, now=7.0)
    buf.append(*rows([]), next_offset=3, now=8.0)  # all dead-lettered: still pending
    n, nbytes, oldest = buf.pending("pg")
    assert (n, oldest) == (1, 7.0) and nbytes > 0


def test_take_hands_the_chunks_over_without_copying_them() -> None:
    buf = make()
    first, _ = rows([0, 1])
    buf.append(first, pa.array([0, 1], pa.int64()), next_offset=2, now=1.0)
    buf.append(*rows([2, 3, 4]), next_offset=5, now=2.0)
    batch = buf.take("pg")
    assert batch is not None and len(batch.records.to_batches()) == 2
    assert batch.records.column("id").to_pylist() == [0, 1, 2, 3, 4]
    # The first chunk's values are the buffer's own memory, not a copy.
    taken = batch.records.column("id").chunk(0).buffers()[1]
    assert taken.address == first.column(0).buffers()[1].address
