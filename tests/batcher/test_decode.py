"""RecordDecoder: good rows to Arrow in order with their offsets; every bad record labelled."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import msgspec
import pyarrow as pa
import pytest

from batcher.decode import REASONS, Decoded, RecordDecoder, Reject
from batcher.schema import ColumnSpec, RouteSchema, UnknownFields
from ingest import synthetic
from sinks.pgcopy import encode_copy_binary

COLUMNS = (
    ColumnSpec("id", "uuid", nullable=False),
    ColumnSpec("ts", "timestamp", nullable=False),
    ColumnSpec("n", "int64", nullable=False),
    ColumnSpec("small", "int16"),
    ColumnSpec("mid", "int32"),
    ColumnSpec("ratio", "float32"),
    ColumnSpec("amount", "float64"),
    ColumnSpec("flag", "bool"),
    ColumnSpec("day", "date"),
    ColumnSpec("event-type", "text", nullable=False),  # not an identifier: still a column
    ColumnSpec("note", "text"),
    ColumnSpec("payload", "json"),
    ColumnSpec("doc", "json", nullable=False),
    ColumnSpec("at", "timestamp"),
    ColumnSpec("ref", "uuid"),
)
SCHEMA = RouteSchema(COLUMNS, event_time="ts")
UUID = "0b0c3bde-6a3f-4f3e-9a52-6d1f2b3c4d5e"
GOOD: dict[str, Any] = {
    "id": UUID,
    "ts": "2024-05-01T12:00:00.123456Z",
    "n": 7,
    "small": 1,
    "mid": 2,
    "ratio": 0.5,
    "amount": 1.25,
    "flag": True,
    "day": "2024-05-01",
    "event-type": "click",
    "note": "hi",
    "payload": {"a": [1, 2]},
    "doc": {"k": "v"},
    "at": "2024-05-01T12:00:00Z",
    "ref": UUID,
}
GOOD_ROW: dict[str, Any] = {
    **GOOD,
    "ts": datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC),
    "day": date(2024, 5, 1),
    "payload": '{"a":[1,2]}',
    "doc": '{"k":"v"}',
    "at": datetime(2024, 5, 1, 12, tzinfo=UTC),
}
DROP = object()


def record(**changes: Any) -> bytes:
    """GOOD with some fields changed (``DROP``: removed), as JSON bytes."""
    fields = dict(GOOD)
    for name, value in changes.items():
        name = name.replace("_", "-") if name == "event_type" else name
        if value is DROP:
            del fields[name]
        else:
            fields[name] = value
    return msgspec.json.encode(fields)


def decode(
    values: Sequence[bytes | None], schema: RouteSchema = SCHEMA, max_record_bytes: int = 1 << 20
) -> Decoded:
    decoded = RecordDecoder(schema, max_record_bytes).decode(values, range(100, 100 + len(values)))
    assert decoded.records.schema == schema.arrow_schema()
    assert decoded.offsets.type == pa.int64()
    assert len(decoded.offsets) == decoded.records.num_rows
    return decoded


def rows(decoded: Decoded) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = decoded.records.to_pylist()
    for row in result:  # Arrow gives a ZoneInfo("UTC"); compare as plain UTC datetimes
        for name, value in row.items():
            if isinstance(value, datetime):
                row[name] = value.astimezone(UTC)
    return result


def test_good_record() -> None:
    value = record()
    decoded = decode([value])
    assert rows(decoded) == [GOOD_ROW]
    assert decoded.offsets.to_pylist() == [100]
    assert decoded.rejects == []
    assert decoded.value_bytes == len(value)


def test_empty_input_gives_an_empty_batch_with_the_schema() -> None:
    decoded = decode([])
    assert decoded.records.num_rows == 0
    assert decoded.rejects == [] and decoded.value_bytes == 0


BIG = 2**63
BAD_CASES = [
    pytest.param(None, "empty", "tombstone", id="empty-none"),
    pytest.param(b"", "empty", "empty", id="empty-bytes"),
    pytest.param(record(note="x" * 600), "too_large", "above max_record_bytes", id="too_large"),
    pytest.param(
        record(note="<>").replace(b"<>", b"M\xfc\x80"), "invalid_utf8", "byte", id="utf8-text"
    ),
    pytest.param(
        record(payload={"x": "<>"}).replace(b"<>", b"\xff"),
        "invalid_utf8",
        "`payload`",
        id="utf8-inside-json-column",
    ),
    pytest.param(record()[:-5], "invalid_json", "truncated", id="invalid_json-truncated"),
    pytest.param(record() + b" x", "invalid_json", "trailing", id="invalid_json-trailing"),
    pytest.param(b'{"n": NaN}', "invalid_json", "malformed", id="invalid_json-nan"),
    pytest.param(b'{"a": "', "invalid_json", "truncated", id="invalid_json-open_string"),
    pytest.param(b"[1, 2]", "not_object", "got `array`", id="not_object-array"),
    pytest.param(b"42", "not_object", "got `int`", id="not_object-int"),
    pytest.param(b"null", "not_object", "got `null`", id="not_object-null"),
    pytest.param(record(n=DROP), "missing_column", "`n`", id="missing_column"),
    pytest.param(record(doc=DROP), "missing_column", "`doc`", id="missing_column-json"),
    pytest.param(record(n=None), "null_value", "`$.n`", id="null_value-int"),
    pytest.param(record(event_type=None), "null_value", "`$.event-type`", id="null_value-text"),
    pytest.param(record(ts=None), "null_value", "`$.ts`", id="null_value-timestamp"),
    pytest.param(record(doc=None), "null_value", "`$.doc`", id="null_value-json"),
    pytest.param(record(n="7"), "wrong_type", "`$.n`", id="wrong_type-str_for_int"),
    pytest.param(record(n=7.5), "wrong_type", "`$.n`", id="wrong_type-float_for_int"),
    pytest.param(record(flag=1), "wrong_type", "`$.flag`", id="wrong_type-int_for_bool"),
    pytest.param(record(note=5), "wrong_type", "`$.note`", id="wrong_type-int_for_text"),
    pytest.param(record(amount="1.5"), "wrong_type", "`$.amount`", id="wrong_type-str_for_float"),
    pytest.param(record(ratio=1e39), "wrong_type", "`$.ratio`", id="wrong_type-float32_range"),
    pytest.param(record(n=BIG), "int_overflow", "`$.n`", id="int_overflow-int64_high"),
    pytest.param(record(n=-BIG - 1), "int_overflow", "`$.n`", id="int_overflow-int64_low"),
    pytest.param(record(n=2**70), "int_overflow", "`$.n`", id="int_overflow-huge"),
    pytest.param(record(small=2**15), "int_overflow", "`$.small`", id="int_overflow-int16"),
    pytest.param(record(mid=-(2**31) - 1), "int_overflow", "`$.mid`", id="int_overflow-int32"),
    pytest.param(record(ts="yesterday"), "bad_timestamp", "`ts`", id="bad_timestamp-text"),
    pytest.param(record(ts=1714564800), "bad_timestamp", "`$.ts`", id="bad_timestamp-number"),
    pytest.param(
        record(ts="2024-02-30T00:00:00Z"), "bad_timestamp", "`ts`", id="bad_timestamp-feb30"
    ),
    pytest.param(record(at="2024-05-01T25:00Z"), "bad_timestamp", "`at`", id="bad_timestamp-hour"),
    pytest.param(record(day="2024-13-01"), "bad_timestamp", "`$.day`", id="bad_timestamp-date"),
    pytest.param(record(id="xyz"), "bad_uuid", "`id`", id="bad_uuid-short"),
    pytest.param(record(id=UUID.replace("-", "")), "bad_uuid", "`id`", id="bad_uuid-no_dashes"),
    pytest.param(record(id=UUID[:-1] + "g"), "bad_uuid", "`id`", id="bad_uuid-not_hex"),
    pytest.param(record(ref=UUID[:8] + "x" + UUID[9:]), "bad_uuid", "`ref`", id="bad_uuid-dash"),
    pytest.param(record(id=5), "bad_uuid", "`$.id`", id="bad_uuid-number"),
    pytest.param(record(note="a\x00b"), "bad_text", "`note`", id="bad_text"),
    pytest.param(record(event_type="\x00"), "bad_text", "`event-type`", id="bad_text-required"),
    pytest.param(record(doc={"k": "a\x00"}), "bad_text", "`doc`", id="bad_text-json_value"),
    pytest.param(record(payload={"\x00": 1}), "bad_text", "`payload`", id="bad_text-json_key"),
]


@pytest.mark.parametrize(("value", "reason", "in_message"), BAD_CASES)
def test_bad_record_is_rejected_and_its_neighbours_kept(
    value: bytes | None, reason: str, in_message: str
) -> None:
    good = record()
    decoded = decode([good, value, good], max_record_bytes=500)
    assert [(r.offset, r.reason) for r in decoded.rejects] == [(101, reason)]
    assert in_message in decoded.rejects[0].message
    assert decoded.offsets.to_pylist() == [100, 102]
    assert rows(decoded) == [GOOD_ROW, GOOD_ROW]
    assert decoded.value_bytes == 2 * len(good)


def test_every_reason_is_tested() -> None:
    tested = {case.values[1] for case in BAD_CASES} | {"unknown_field"}
    assert tested == set(REASONS)


def test_unknown_field_rejected_when_asked() -> None:
    schema = RouteSchema(COLUMNS, event_time="ts", unknown_fields="reject")
    decoded = decode([record(), record(surprise=1)], schema)
    assert decoded.rejects == [
        Reject(101, "unknown_field", "Object contains unknown field `surprise`")
    ]
    assert decoded.records.num_rows == 1


def test_unknown_fields_ignored_by_default() -> None:
    decoded = decode([record(surprise={"deep": [1]})])
    assert rows(decoded) == [GOOD_ROW] and decoded.rejects == []


def test_unknown_fields_kept_as_a_json_object() -> None:
    schema = RouteSchema(COLUMNS, event_time="ts", unknown_fields="keep", keep_column="extra")
    values = [record(surprise={"deep": [1, 2]}, other="ü"), record()]
    decoded = decode(values, schema)
    assert decoded.rejects == []
    assert decoded.records.column("extra").to_pylist() == [
        '{"surprise":{"deep":[1,2]},"other":"ü"}',
        None,
    ]
    assert rows(decoded)[1] == {**GOOD_ROW, "extra": None}


def test_kept_fields_are_checked_like_a_json_column() -> None:
    schema = RouteSchema(COLUMNS, event_time="ts", unknown_fields="keep")
    decoded = decode([record(surprise="\x00"), record()], schema)
    assert [(r.offset, r.reason) for r in decoded.rejects] == [(100, "bad_text")]
    assert "`extra`" in decoded.rejects[0].message


@pytest.mark.parametrize("mode", ["ignore", "keep", "reject"])
def test_unknown_field_modes_on_a_clean_record(mode: UnknownFields) -> None:
    decoded = decode([record()], RouteSchema(COLUMNS, event_time="ts", unknown_fields=mode))
    assert decoded.records.num_rows == 1 and decoded.rejects == []


def test_nullable_columns_absent_or_null_are_null() -> None:
    nullable = [c.name for c in COLUMNS if c.nullable]
    absent = record(**dict.fromkeys(nullable, DROP))
    null = record(**dict.fromkeys(nullable, None))
    decoded = decode([absent, null])
    assert decoded.rejects == []
    for row in rows(decoded):
        assert all(row[name] is None for name in nullable)
        assert row["n"] == 7
    assert decoded.records.column("payload").null_count == 2


def test_json_column_keeps_the_raw_text() -> None:
    raw = b'{"doc": {"z": 1,  "a": "\\u00e9\\\\u0000"}, '  # spacing and escapes kept as sent
    value = raw + record(doc=DROP)[1:]
    decoded = decode([value])
    assert decoded.rejects == []
    assert decoded.records.column("doc").to_pylist() == ['{"z": 1,  "a": "\\u00e9\\\\u0000"}']


def test_json_scalars_and_null_text() -> None:
    values = [record(payload=v) for v in (1, "null", [None], True, "a")]
    decoded = decode(values)
    assert decoded.records.column("payload").to_pylist() == ["1", '"null"', "[null]", "true", '"a"']


@pytest.mark.parametrize(
    ("n", "small", "mid"),
    [
        pytest.param(2**63 - 1, 2**15 - 1, 2**31 - 1, id="max"),
        pytest.param(-(2**63), -(2**15), -(2**31), id="min"),
    ],
)
def test_int_bounds_are_inclusive(n: int, small: int, mid: int) -> None:
    decoded = decode([record(n=n, small=small, mid=mid)])
    assert decoded.rejects == []
    row = rows(decoded)[0]
    assert (row["n"], row["small"], row["mid"]) == (n, small, mid)


NOON = datetime(2024, 5, 1, 12, tzinfo=UTC)
TIMESTAMPS = [
    pytest.param("2024-05-01T12:00:00Z", NOON, id="z"),
    pytest.param("2024-05-01T14:00:00+02:00", NOON, id="offset"),
    pytest.param("2024-05-01T07:30:00-04:30", NOON, id="negative_offset"),
    pytest.param("2024-05-01T12:00:00", NOON, id="naive_is_utc"),
    pytest.param("2024-05-01 12:00:00Z", NOON, id="space"),
    pytest.param("2024-05-01t12:00:00z", NOON, id="lowercase"),
    pytest.param("2024-05-01T12:00Z", NOON, id="no_seconds"),
    pytest.param("2024-05-01T14:00:00+0200", NOON, id="offset_without_colon"),
    pytest.param(
        "2024-05-01T12:00:00.000001Z", NOON + timedelta(microseconds=1), id="microseconds"
    ),
    pytest.param("2024-05-01T12:00:00.5", NOON + timedelta(milliseconds=500), id="naive_fraction"),
]


@pytest.mark.parametrize(("text", "expected"), TIMESTAMPS)
@pytest.mark.parametrize("neighbour", ["good", "naive", "bad"])
def test_timestamps_end_in_utc_whatever_the_neighbours(
    text: str, expected: datetime, neighbour: str
) -> None:
    """A row's timestamp does not depend on its batch (the bulk cast or the row-by-row path)."""
    other = {"good": GOOD["ts"], "naive": "2024-05-01T12:00:00", "bad": "soon"}[neighbour]
    decoded = decode([record(ts=text, at=text), record(ts=other)])
    assert rows(decoded)[0]["ts"] == expected
    assert rows(decoded)[0]["at"] == expected
    assert decoded.records.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert len(decoded.rejects) == (neighbour == "bad")


def test_uuid_in_either_case_and_nullable_uuid() -> None:
    decoded = decode([record(id=UUID.upper(), ref=None), record(ref=DROP)])
    assert decoded.rejects == []
    assert decoded.records.column("id").to_pylist() == [UUID.upper(), UUID]
    assert decoded.records.column("ref").to_pylist() == [None, None]


def test_mixed_batch_keeps_good_rows_in_order() -> None:
    values = [
        record(n=1),
        b"{",
        record(n=2),
        record(n=3, ts="later"),
        None,
        record(n=4),
        record(n=5, id="nope", note="\x00"),  # two problems: the first column's is reported
        record(n=6),
    ]
    decoded = decode(values)
    assert decoded.records.column("n").to_pylist() == [1, 2, 4, 6]
    assert decoded.offsets.to_pylist() == [100, 102, 105, 107]
    assert [(r.offset, r.reason) for r in decoded.rejects] == [
        (101, "invalid_json"),
        (103, "bad_timestamp"),
        (104, "empty"),
        (106, "bad_uuid"),
    ]
    assert decoded.value_bytes == sum(len(values[i] or b"") for i in (0, 2, 5, 7))


def test_all_bad_gives_an_empty_batch() -> None:
    decoded = decode([b"", b"[]", record(id="x")])
    assert decoded.records.num_rows == 0 and len(decoded.offsets) == 0
    assert [r.reason for r in decoded.rejects] == ["empty", "not_object", "bad_uuid"]
    assert decoded.value_bytes == 0


def test_values_and_offsets_must_match() -> None:
    with pytest.raises(ValueError, match="2 values but 1 offsets"):
        RecordDecoder(SCHEMA).decode([b"{}", b"{}"], [1])


def test_decoded_batch_encodes_as_binary_copy() -> None:
    decoded = decode([record(), record(**{c.name: None for c in COLUMNS if c.nullable})])
    assert encode_copy_binary(decoded.records, SCHEMA.col_types()).startswith(b"PGCOPY\n")


DEMO = RouteSchema(
    columns=(
        ColumnSpec("event_id", "uuid", nullable=False),
        ColumnSpec("ts", "timestamp", nullable=False),
        ColumnSpec("user_id", "int64", nullable=False),
        ColumnSpec("event_type", "text", nullable=False),
        ColumnSpec("amount", "float64"),
        ColumnSpec("country", "text"),
        ColumnSpec("payload", "json"),
    ),
    event_time="ts",
)
# ingest.synthetic's names for its bad kinds, where they differ from our reasons.
SYNTHETIC_REASONS = {"missing_required": "missing_column", "null_in_non_null": "null_value"}


@pytest.mark.parametrize("kind", list(synthetic.BAD_KINDS))
def test_synthetic_bad_kinds(kind: str) -> None:
    rng = random.Random(kind)
    bad = synthetic.make_bad(rng, kind=kind)
    good = msgspec.json.encode(synthetic.make_event(rng))
    decoded = decode([good, bad, good], DEMO)
    assert [r.reason for r in decoded.rejects] == [SYNTHETIC_REASONS.get(kind, kind)]
    assert decoded.records.num_rows == 2


def test_synthetic_stream_with_bad_records() -> None:
    now = datetime(2024, 5, 1, tzinfo=UTC)
    values = [v for _, v in synthetic.records(2_000, bad_ratio=0.1, seed=3, now=now)]
    decoded = decode(values, DEMO)
    assert decoded.records.num_rows + len(decoded.rejects) == len(values)
    assert 100 < len(decoded.rejects) < 300
    good = [msgspec.json.decode(values[o - 100]) for o in decoded.offsets.to_pylist()]
    assert decoded.records.column("user_id").to_pylist() == [g["user_id"] for g in good]
    assert decoded.records.column("payload").to_pylist() == [
        msgspec.json.encode(g["payload"]).decode() for g in good
    ]
