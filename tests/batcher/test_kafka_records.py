"""The fast kafka-python record reader gives exactly what kafka-python's own reader gives.

Batches are built with kafka-python's own MemoryRecordsBuilder; both readers run on the same
bytes and must yield equal ConsumerRecords and leave the same fetch state behind.
"""

from __future__ import annotations

import struct
from typing import Any

import kafka
import kafka.errors
import pytest
from kafka.consumer.fetcher import Fetcher
from kafka.record import MemoryRecords, MemoryRecordsBuilder
from kafka.record.util import calc_crc32c
from kafka.serializer import Deserializer
from kafka.structs import TopicPartition

from batcher import kafka_records

TP = TopicPartition("events", 3)
NONE, GZIP, SNAPPY, LZ4, ZSTD = 0, 1, 2, 3, 4


def build(
    rows: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]],
    magic: int = 2,
    compression: int = NONE,
    offset: int = 0,
    skip_every: int = 0,
) -> bytes:
    builder = MemoryRecordsBuilder(magic, compression, batch_size=10 << 20, offset=offset)
    for i, (key, value, headers) in enumerate(rows):
        if skip_every and i and i % skip_every == 0:
            builder.skip(2)  # a compaction gap
        assert builder.append(1_700_000_000_000 + i * 7 - 50, key, value, headers) is not None
    builder.close()
    return bytes(builder.buffer())


def rows(n: int) -> list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]]:
    out: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]] = []
    for i in range(n):
        key = None if i % 5 == 0 else str(i * 7919).encode()
        value: bytes | None = b'{"i": %d, "pad": "%s"}' % (i, b"x" * (i * 13 % 300))
        if i % 11 == 3:
            value = None  # a tombstone
        elif i % 11 == 4:
            value = b""
        headers: list[tuple[str, bytes | None]] = []
        if i % 7 == 2:
            headers = [("trace", b"abc"), ("empty", None), ("é", b"\x00" * 200)]
        out.append((key, value, headers))
    return out


def read(reader: Any, data: bytes, **options: Any) -> tuple[list[Any], tuple[int, int, int]]:
    deserializers = options.pop("deserializers", (None, None))
    part = Fetcher.PartitionRecords(0, TP, MemoryRecords(data), *deserializers, **options)
    out = list(reader(part, TP, MemoryRecords(data), *deserializers))
    return out, (part.next_fetch_offset, part.records_read, part.bytes_read)


def same(data: bytes, **options: Any) -> list[Any]:
    stock = read(kafka_records.stock_unpack_records(), data, **dict(options))
    fast = read(kafka_records._unpack_records, data, **dict(options))
    assert fast == stock
    return fast[0]


@pytest.mark.parametrize(
    "compression",
    [
        pytest.param(NONE, id="none"),
        pytest.param(GZIP, id="gzip"),
        pytest.param(SNAPPY, id="snappy"),
        pytest.param(LZ4, id="lz4"),
        pytest.param(ZSTD, id="zstd"),
    ],
)
def test_v2_batches_read_the_same(compression: int) -> None:
    from kafka import codec

    available = {NONE: True, GZIP: True, SNAPPY: codec.has_snappy(), LZ4: codec.has_lz4()}
    if not available.get(compression, codec.has_zstd()):
        pytest.skip("codec not installed")
    records = same(build(rows(300), compression=compression))
    assert len(records) == 300
    assert records[3].value is None and records[4].value == b"" and records[0].key is None
    assert records[2].headers == [("trace", b"abc"), ("empty", None), ("é", b"\x00" * 200)]


def test_several_batches_with_compaction_gaps_read_the_same() -> None:
    data = build(rows(40), skip_every=9) + build(rows(25), offset=200) + build(rows(1), offset=900)
    records = same(data)
    assert [r.offset for r in records][-2:] == [224, 900]


def test_large_values_and_keys_use_multi_byte_varints() -> None:
    big = [(b"k" * 70_000, b"v" * 3_000_000, [("h" * 300, b"x" * 20_000)])]
    [record] = same(build(big))
    assert len(record.key) == 70_000 and len(record.value) == 3_000_000


def test_legacy_message_format_keeps_kafka_pythons_loop() -> None:
    plain = [(key, value, []) for key, value, _ in rows(20)]  # v0/v1 have no headers
    assert len(same(build(plain, magic=1))) == 20


def test_log_append_time_takes_the_batch_timestamp() -> None:
    data = bytearray(build(rows(5)))
    attrs_at = 21  # baseOffset 8, length 4, leaderEpoch 4, magic 1, crc 4
    (attrs,) = struct.unpack_from(">h", data, attrs_at)
    struct.pack_into(">h", data, attrs_at, attrs | 0x08)
    struct.pack_into(">I", data, 17, calc_crc32c(memoryview(data)[attrs_at:]))
    records = same(bytes(data))
    assert {r.timestamp_type for r in records} == {1}
    assert len({r.timestamp for r in records}) == 1


def test_deserializers_are_applied_to_key_and_value() -> None:
    class Upper(Deserializer):  # type: ignore[misc]
        def deserialize(self, topic: str, headers: Any, data: bytes | None) -> Any:
            return None if data is None else (topic, data.upper())

    records = same(build(rows(12)), deserializers=(Upper(), Upper()))
    assert records[1].key == ("events", b"7919") and records[1].serialized_key_size == 4


def test_a_truncated_batch_is_a_corrupt_record_for_both() -> None:
    data = bytearray(build(rows(10)))
    data[61] ^= 0x7F  # inside the first record's varints
    for reader in (kafka_records.stock_unpack_records(), kafka_records._unpack_records):
        with pytest.raises(kafka.errors.CorruptRecordError):
            read(reader, bytes(data), check_crcs=False)


def test_install_is_idempotent_and_only_for_supported_versions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cls = Fetcher.PartitionRecords
    monkeypatch.setattr(cls, "_unpack_records", kafka_records.stock_unpack_records())
    monkeypatch.delattr(cls, kafka_records._MARK, raising=False)
    monkeypatch.setattr(kafka, "__version__", "9.9.9")
    assert kafka_records.install() is False and not kafka_records.installed()
    monkeypatch.setattr(kafka, "__version__", "3.0.12")
    assert kafka_records.install() is True and kafka_records.install() is True
    assert cls._unpack_records is kafka_records._unpack_records
