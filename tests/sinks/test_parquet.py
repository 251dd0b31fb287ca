"""sinks.parquet without a server: file names, the split by UTC event date, Parquet bytes."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sinks.parquet import (
    UNKNOWN_DATE,
    FileName,
    check_compression,
    dictionary_columns,
    encode_parquet,
    split_by_date,
)

SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("user_id", pa.int64()),
        ("payload", pa.string()),
    ]
)


def events(times: list[datetime | None], schema: pa.Schema = SCHEMA) -> pa.RecordBatch:
    n = len(times)
    return pa.RecordBatch.from_arrays(
        [
            pa.array([f"e{i}" for i in range(n)], pa.string()),
            pa.array(times, schema.field("ts").type),
            pa.array(range(n), pa.int64()),
            pa.array([f"payload {i}" for i in range(n)], pa.string()),
        ],
        schema=schema,
    )


def ids(batch: pa.RecordBatch) -> list[str]:
    return [str(v) for v in batch.column("event_id").to_pylist()]


MIDNIGHT = datetime(2024, 5, 2, tzinfo=UTC)


# -- names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text"),
    [
        pytest.param(
            FileName("events", 3, 0, 0),
            "events+3+0000000000000000000+0000000000000000000.parquet",
            id="zero",
        ),
        pytest.param(
            FileName("a.b-c_d", 12, 41, 1_000_000),
            "a.b-c_d+12+0000000000000000041+0000000000001000000.parquet",
            id="dots-dashes",
        ),
        pytest.param(
            FileName("t", 0, 2**63 - 2, 2**63 - 1),
            "t+0+9223372036854775806+9223372036854775807.parquet",
            id="int64-max",
        ),
    ],
)
def test_file_name_round_trip(name: FileName, text: str) -> None:
    assert name.filename == text
    assert FileName.from_filename(text) == name
    assert FileName.from_stem(text.removesuffix(".parquet")) == name
    assert name.next_offset == name.last + 1


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("_SUCCESS", id="marker"),
        pytest.param("events+3+0000000000000000000+0000000000000000009", id="no-suffix"),
        pytest.param("events+3+0000000000000000000+0000000000000000009.crc", id="other-suffix"),
        pytest.param("events+3+0+9.parquet", id="not-padded"),
        pytest.param("events+x+0000000000000000000+0000000000000000009.parquet", id="partition"),
        pytest.param("ev ents+3+0000000000000000000+0000000000000000009.parquet", id="space"),
        pytest.param("events+3+0000000000000000009+0000000000000000000.parquet", id="reversed"),
    ],
)
def test_foreign_file_names_are_not_parsed(text: str) -> None:
    assert FileName.from_filename(text) is None


def test_names_sort_by_offset() -> None:
    names = [FileName("t", 1, first, first + 9) for first in (100, 9, 10_000)]
    assert sorted(n.filename for n in names) == [n.filename for n in sorted(names)]


@pytest.mark.parametrize(
    ("first", "last"),
    [pytest.param(5, 4, id="reversed"), pytest.param(-1, 3, id="negative")],
)
def test_bad_ranges_are_refused(first: int, last: int) -> None:
    with pytest.raises(ValueError, match="bad offset range"):
        FileName("t", 0, first, last)


# -- split by event date -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("times", "expected"),
    [
        pytest.param(
            [MIDNIGHT - timedelta(microseconds=1), MIDNIGHT, MIDNIGHT + timedelta(hours=23)],
            [("2024-05-01", ["e0"]), ("2024-05-02", ["e1", "e2"])],
            id="around-midnight",
        ),
        pytest.param(
            [MIDNIGHT, None, MIDNIGHT - timedelta(days=1), None],
            [("2024-05-01", ["e2"]), ("2024-05-02", ["e0"]), (UNKNOWN_DATE, ["e1", "e3"])],
            id="nulls-last",
        ),
        pytest.param([None, None], [(UNKNOWN_DATE, ["e0", "e1"])], id="all-null"),
        pytest.param(
            [datetime(1969, 12, 31, 23, tzinfo=UTC)], [("1969-12-31", ["e0"])], id="before-epoch"
        ),
        pytest.param([], [], id="empty"),
    ],
)
def test_split_by_utc_date(
    times: list[datetime | None], expected: list[tuple[str, list[str]]]
) -> None:
    parts = split_by_date(events(times), "ts")
    assert [(date, ids(rows)) for date, rows in parts] == expected


def test_split_uses_the_utc_date_of_a_zoned_column() -> None:
    paris = SCHEMA.set(1, pa.field("ts", pa.timestamp("us", tz="Europe/Paris")))
    # 23:30 UTC on May 1st is already May 2nd in Paris; the partition is the UTC date.
    late = datetime(2024, 5, 1, 23, 30, tzinfo=UTC)
    (date, _), *rest = split_by_date(events([late], paris), "ts")
    assert (date, rest) == ("2024-05-01", [])


def test_undated_route_is_one_part() -> None:
    batch = events([MIDNIGHT, None])
    assert split_by_date(batch, None) == [(None, batch)]


@pytest.mark.parametrize(
    ("column", "error"),
    [pytest.param("missing", KeyError, id="missing"), pytest.param("user_id", TypeError, id="int")],
)
def test_split_refuses_a_bad_event_time_column(column: str, error: type[Exception]) -> None:
    with pytest.raises(error, match=column):
        split_by_date(events([MIDNIGHT]), column)


# -- Parquet bytes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("compression", "level"),
    [
        pytest.param("zstd", None, id="zstd"),
        pytest.param("zstd", 9, id="zstd-9"),
        pytest.param("snappy", None, id="snappy"),
        pytest.param("none", None, id="none"),
    ],
)
def test_parquet_round_trip(compression: str, level: int | None) -> None:
    batch = events([MIDNIGHT, None, MIDNIGHT + timedelta(microseconds=7)])
    data = encode_parquet(batch, compression, level)
    parquet = pq.ParquetFile(io.BytesIO(data))
    assert parquet.read().to_batches() == [batch]
    assert parquet.metadata.num_row_groups == 1
    column = parquet.metadata.row_group(0).column(1)
    assert column.compression.lower() == ("uncompressed" if compression == "none" else compression)
    ts = parquet.schema.column(1).logical_type
    logical = json.loads(ts.to_json())
    assert (logical["Type"], logical["isAdjustedToUTC"], logical["timeUnit"]) == (
        "Timestamp",
        True,
        "microseconds",
    )
    assert str(parquet.schema.column(0).logical_type) == "String"


def test_empty_batch_encodes_the_schema_only() -> None:
    table = pq.read_table(io.BytesIO(encode_parquet(events([]))))
    assert table.num_rows == 0
    assert table.schema == SCHEMA


def test_nanoseconds_that_would_be_truncated_raise() -> None:
    ns = SCHEMA.set(1, pa.field("ts", pa.timestamp("ns", tz="UTC")))
    batch = pa.RecordBatch.from_arrays(
        [pa.array(["e0"]), pa.array([1], ns.field("ts").type), pa.array([1]), pa.array(["p"])],
        schema=ns,
    )
    with pytest.raises(pa.ArrowInvalid, match="would lose data"):
        encode_parquet(batch)


@pytest.mark.parametrize(
    ("compression", "level", "message"),
    [
        pytest.param("bogus", None, "not available", id="unknown"),
        pytest.param("snappy", 3, "takes no compression_level", id="no-levels"),
        pytest.param("zstd", 99, r"must be in \[", id="out-of-range"),
        pytest.param("none", 1, "takes no compression_level", id="none-with-level"),
    ],
)
def test_check_compression_names_the_problem(
    compression: str, level: int | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        check_compression(compression, level)


@pytest.mark.parametrize(
    ("compression", "level"),
    [pytest.param("zstd", None, id="zstd"), pytest.param("gzip", 9, id="gzip-9")],
)
def test_check_compression_accepts(compression: str, level: int | None) -> None:
    check_compression(compression, level)


def test_event_times_keep_their_instant() -> None:
    tz = timezone(timedelta(hours=2))
    batch = events([datetime(2024, 5, 2, 1, 0, tzinfo=tz)])
    back = pq.read_table(io.BytesIO(encode_parquet(batch))).column("ts").to_pylist()
    assert back == [datetime(2024, 5, 1, 23, 0, tzinfo=UTC)]


def test_one_day_is_one_part_without_a_copy() -> None:
    batch = events([MIDNIGHT, MIDNIGHT + timedelta(hours=5)])
    [(date, rows)] = split_by_date(batch, "ts")
    assert date == "2024-05-02" and rows is batch


def test_dictionary_only_where_values_repeat() -> None:
    n = 2000
    table = pa.table(
        {
            "event_id": [f"id-{i}" for i in range(n)],
            "event_type": [f"type-{i % 20}" for i in range(n)],
            "user_id": list(range(n)),
            "country": ["FR", "DE", None, "US"] * (n // 4),
        }
    )
    assert dictionary_columns(table) == ["event_type", "country"]
    parquet = pq.ParquetFile(io.BytesIO(encode_parquet(table)))
    encodings = {
        parquet.metadata.row_group(0).column(i).path_in_schema: set(
            parquet.metadata.row_group(0).column(i).encodings
        )
        for i in range(4)
    }
    assert "RLE_DICTIONARY" in encodings["event_type"]
    assert "RLE_DICTIONARY" not in encodings["event_id"]
    assert "RLE_DICTIONARY" not in encodings["user_id"]
    assert pq.read_table(io.BytesIO(encode_parquet(table))) == table
