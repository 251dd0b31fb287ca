"""A faster record reader for kafka-python's fetcher: the default backend's wall.

kafka-python 3.0 turns each fetched v2 record batch into records one at a time: a
``DefaultRecord`` per record, built by ``_read_msg`` with a function call per varint and a
property lookup per header field, then a ``ConsumerRecord`` built from that. In make bench
this costs about 13 µs of CPU per record, more than the whole rest of the daemon.

``install()`` replaces ``Fetcher.PartitionRecords._unpack_records`` with the same batch-level
logic (CRC check, aborted transactions, control batches, the next fetch offset, the drain)
and, for v2 batches, one fused loop that reads the varints inline (a one-byte varint without
a call) and builds the ``ConsumerRecord`` directly, with the same fields, the same checks
(record length, header count, unconsumed bytes) and the same errors. One- and two-byte
varints (every length under 8 KiB) are decoded without a call. Older message formats
(v0/v1) keep kafka-python's own loop.

This reaches into kafka-python's internals, so it is installed only for the versions it was
written and tested against (``SUPPORTED``); any other version keeps the stock reader and
says so once. ``tests/batcher/test_kafka_records.py`` compares both readers record for record
on batches built by kafka-python's own builder (compressed, with headers, null keys and
values, log-append time, control and aborted batches).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, Final

import kafka
import kafka.errors as errors
from kafka.consumer.fetcher import ConsumerRecord, Fetcher, IsolationLevel
from kafka.record.util import decode_varint

__all__ = ["SUPPORTED", "install", "installed", "uninstall"]

log = logging.getLogger("batcher.consumer")

SUPPORTED: Final = ("3.0.",)  # kafka-python versions whose fetcher this matches
_MARK: Final = "_bulk_ingest_fast_reader"


def installed() -> bool:

    return bool(getattr(Fetcher.PartitionRecords, _MARK, False))


def install() -> bool:
    """Swap in the fast reader (idempotent). False, with one log line, when this kafka-python
    is not a version it supports: the stock reader stays."""

    if installed():
        return True
    version = str(kafka.__version__)
    cls = Fetcher.PartitionRecords
    if not version.startswith(SUPPORTED) or not hasattr(cls, "_unpack_records"):
        log.info(
            "kafka-python %s: its own record reader (the fast one supports %s)",
            version,
            ", ".join(f"{v}x" for v in SUPPORTED),
        )
        return False
    cls._unpack_records = _unpack_records
    setattr(cls, _MARK, True)
    log.info("kafka-python %s: fetched records are read by batcher/kafka_records.py", version)
    return True


def uninstall() -> None:
    """Put kafka-python's own reader back (the bench compares both in one process)."""
    cls = Fetcher.PartitionRecords
    if installed():
        cls._unpack_records = _STOCK
        delattr(cls, _MARK)


def stock_unpack_records() -> Callable[..., Iterator[Any]]:
    """kafka-python's own ``_unpack_records`` (for the comparison tests and the bench)."""
    return _STOCK


def _capture_stock() -> Callable[..., Iterator[Any]]:
    return Fetcher.PartitionRecords._unpack_records  # type: ignore[no-any-return]


_STOCK: Final = _capture_stock()


def _unpack_records(
    self: Any, tp: Any, records: Any, key_deserializer: Any, value_deserializer: Any
) -> Iterator[Any]:
    """kafka-python 3.0's ``PartitionRecords._unpack_records``, with ``_v2_records`` for the
    records of a v2 batch. Runs as a method of ``PartitionRecords`` (``self``)."""

    try:
        batch = records.next_batch()
        last_batch = None
        while batch is not None:
            last_batch = batch
            if self.check_crcs and not batch.validate_crc():
                raise errors.CorruptRecordError(
                    f"Record batch for partition {self.topic_partition} at offset "
                    f"{batch.base_offset} failed crc check"
                )
            if batch.magic == 2:
                self.leader_epoch = batch.leader_epoch
                if (
                    self.isolation_level == IsolationLevel.READ_COMMITTED
                    and batch.has_producer_id()
                ):
                    self._consume_aborted_transactions_up_to(batch.last_offset)
                    producer_id = batch.producer_id
                    if self._contains_abort_marker(batch):
                        self.aborted_producer_ids.discard(producer_id)
                    elif self._is_batch_aborted(batch):
                        self.next_fetch_offset = batch.next_offset
                        batch = records.next_batch()
                        continue
                if batch.is_control_batch:
                    self.next_fetch_offset = batch.next_offset
                    batch = records.next_batch()
                    continue
                yield from _v2_records(self, tp, batch, key_deserializer, value_deserializer)
            else:
                for record in batch:
                    if self.check_crcs and not record.validate_crc():
                        raise errors.CorruptRecordError(
                            f"Record for partition {self.topic_partition} at offset "
                            f"{record.offset} failed crc check"
                        )
                    key, value, headers = record.key, record.value, record.headers
                    self.records_read += 1
                    self.bytes_read += record.size_in_bytes
                    self.next_fetch_offset = record.offset + 1
                    yield ConsumerRecord(
                        tp.topic,
                        tp.partition,
                        self.leader_epoch,
                        record.offset,
                        record.timestamp,
                        record.timestamp_type,
                        self._deserialize(key_deserializer, tp.topic, headers, key),
                        self._deserialize(value_deserializer, tp.topic, headers, value),
                        headers,
                        record.checksum,
                        len(key) if key is not None else -1,
                        len(value) if value is not None else -1,
                        _header_size(headers),
                    )
            batch = records.next_batch()
        else:
            # v2 keeps the last offset of a batch even when compaction removed its record:
            # fetch from after it, or the same batch would be fetched again and again.
            if last_batch and last_batch.magic == 2:
                self.next_fetch_offset = last_batch.next_offset
            self.drain()
    except StopIteration:
        log.exception("StopIteration raised unpacking messageset")
        raise RuntimeError("StopIteration raised unpacking messageset") from None


def _header_size(headers: list[tuple[str, bytes | None]]) -> int:
    if not headers:
        return -1
    return sum(len(k.encode("utf-8")) + (len(v) if v is not None else 0) for k, v in headers)


def _v2_records(
    self: Any, tp: Any, batch: Any, key_deserializer: Any, value_deserializer: Any
) -> Iterator[Any]:
    """The records of one v2 batch (DefaultRecordBatch) as ConsumerRecords.

    Record => Length Attributes TimestampDelta OffsetDelta Key Value [Header], all lengths and
    deltas zigzag varints; Key and Value are -1 for null.
    """

    batch._maybe_uncompress()
    buf = batch._buffer
    pos = batch._pos
    base_offset = batch.base_offset
    timestamp_type = batch.timestamp_type
    first_timestamp = batch.first_timestamp
    append_time = batch.max_timestamp if timestamp_type == batch.LOG_APPEND_TIME else None
    topic, partition, epoch = tp.topic, tp.partition, self.leader_epoch
    deserialize = self._deserialize
    new_record = tuple.__new__  # ConsumerRecord(...) without the namedtuple's own __new__
    view = memoryview(buf)
    try:
        for _ in range(batch._num_records):
            try:
                b = buf[pos]
                if b < 0x80:
                    length, pos = (b >> 1) ^ -(b & 1), pos + 1
                elif buf[pos + 1] < 0x80:
                    b = (b & 0x7F) | (buf[pos + 1] << 7)
                    length, pos = (b >> 1) ^ -(b & 1), pos + 2
                else:
                    length, pos = decode_varint(buf, pos)
                start = pos
                if buf[pos] < 0x80:  # attributes: unused
                    pos += 1
                else:
                    pos = decode_varint(buf, pos)[1]
                b = buf[pos]
                if b < 0x80:
                    ts_delta, pos = (b >> 1) ^ -(b & 1), pos + 1
                elif buf[pos + 1] < 0x80:
                    b = (b & 0x7F) | (buf[pos + 1] << 7)
                    ts_delta, pos = (b >> 1) ^ -(b & 1), pos + 2
                else:
                    ts_delta, pos = decode_varint(buf, pos)
                b = buf[pos]
                if b < 0x80:
                    offset_delta, pos = (b >> 1) ^ -(b & 1), pos + 1
                elif buf[pos + 1] < 0x80:
                    b = (b & 0x7F) | (buf[pos + 1] << 7)
                    offset_delta, pos = (b >> 1) ^ -(b & 1), pos + 2
                else:
                    offset_delta, pos = decode_varint(buf, pos)
                b = buf[pos]
                if b < 0x80:
                    key_len, pos = (b >> 1) ^ -(b & 1), pos + 1
                elif buf[pos + 1] < 0x80:
                    b = (b & 0x7F) | (buf[pos + 1] << 7)
                    key_len, pos = (b >> 1) ^ -(b & 1), pos + 2
                else:
                    key_len, pos = decode_varint(buf, pos)
                if key_len >= 0:
                    key: bytes | None = bytes(view[pos : pos + key_len])
                    pos += key_len
                else:
                    key = None
                b = buf[pos]
                if b < 0x80:
                    value_len, pos = (b >> 1) ^ -(b & 1), pos + 1
                elif buf[pos + 1] < 0x80:
                    b = (b & 0x7F) | (buf[pos + 1] << 7)
                    value_len, pos = (b >> 1) ^ -(b & 1), pos + 2
                else:
                    value_len, pos = decode_varint(buf, pos)
                if value_len >= 0:
                    value: bytes | None = bytes(view[pos : pos + value_len])
                    pos += value_len
                else:
                    value = None
                if buf[pos] == 0:
                    headers: list[tuple[str, bytes | None]] = []
                    pos += 1
                else:
                    headers, pos = _headers(buf, view, pos)
            except (ValueError, IndexError) as err:
                raise errors.CorruptRecordError(
                    f"Found invalid record structure: {err!r}"
                ) from None
            if pos - start != length:
                raise errors.CorruptRecordError(
                    f"Invalid record size: expected to read {length} bytes in record payload, "
                    f"but instead read {pos - start}"
                )
            offset = base_offset + offset_delta
            self.records_read += 1
            self.bytes_read += length
            self.next_fetch_offset = offset + 1
            yield new_record(
                ConsumerRecord,
                (
                    topic,
                    partition,
                    epoch,
                    offset,
                    first_timestamp + ts_delta if append_time is None else append_time,
                    timestamp_type,
                    key
                    if key_deserializer is None
                    else deserialize(key_deserializer, topic, headers, key),
                    value
                    if value_deserializer is None
                    else deserialize(value_deserializer, topic, headers, value),
                    headers,
                    None,
                    -1 if key is None else key_len,
                    -1 if value is None else value_len,
                    _header_size(headers) if headers else -1,
                ),
            )
        if pos != len(buf):
            raise errors.CorruptRecordError(
                f"{len(buf) - pos} unconsumed bytes after all records consumed"
            )
    finally:
        view.release()


def _headers(
    buf: bytearray, view: memoryview, pos: int
) -> tuple[list[tuple[str, bytes | None]], int]:

    count, pos = decode_varint(buf, pos)
    if count < 0:
        raise errors.CorruptRecordError(f"Found invalid number of record headers {count}")
    headers: list[tuple[str, bytes | None]] = []
    for _ in range(count):
        key_len, pos = decode_varint(buf, pos)
        if key_len < 0:
            raise errors.CorruptRecordError(f"Invalid negative header key size {key_len}")
        key = bytes(view[pos : pos + key_len]).decode("utf-8")
        pos += key_len
        value_len, pos = decode_varint(buf, pos)
        if value_len >= 0:
            value: bytes | None = bytes(view[pos : pos + value_len])
            pos += value_len
        else:
            value = None
        headers.append((key, value))
    return headers, pos
