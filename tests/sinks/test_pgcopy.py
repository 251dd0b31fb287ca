"""encode_copy_binary against a reference built row by row with struct; no server needed,
except for the round trip marked `integration`, which skips when the stack is not there."""

from __future__ import annotations

import json
import math
import shlex
import struct
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pytest
from psycopg.conninfo import make_conninfo

from sinks.pgcopy import PG_TYPES, arrow_type, encode_copy_binary

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
ENV_FILE = Path(__file__).resolve().parents[2] / ".stack" / "env"

REFERENCE: dict[str, Callable[[Any], bytes]] = {
    "text": lambda v: v.encode(),
    "int16": lambda v: struct.pack(">h", v),
    "int32": lambda v: struct.pack(">i", v),
    "int64": lambda v: struct.pack(">q", v),
    "float32": lambda v: struct.pack(">f", v),
    "float64": lambda v: struct.pack(">d", v),
    "bool": lambda v: struct.pack(">?", v),
    "timestamp": lambda v: struct.pack(">q", (v - PG_EPOCH) // timedelta(microseconds=1)),
    "date": lambda v: struct.pack(">i", (v - date(2000, 1, 1)).days),
    "uuid": lambda v: uuid.UUID(v).bytes,
    "json": lambda v: b"\x01" + v.encode(),
}


def reference(batch: pa.RecordBatch, col_types: Sequence[str]) -> bytes:
    """The COPY stream of `batch`, one Python value at a time."""
    out = [HEADER]
    columns = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
    for row in range(batch.num_rows):
        out.append(struct.pack(">h", batch.num_columns))
        for values, col_type in zip(columns, col_types, strict=True):
            if values[row] is None:
                out.append(struct.pack(">i", -1))
            else:
                payload = REFERENCE[col_type](values[row])
                out.append(struct.pack(">i", len(payload)) + payload)
    out.append(TRAILER)
    return b"".join(out)


def ts(
    year: int, month: int, day: int, h: int = 0, m: int = 0, s: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, h, m, s, us, tzinfo=UTC)


U1 = "0f8fad5b-d9cb-469f-a165-70867728950e"
U2 = "7C9E6679-7425-40DE-944B-E07FC1F90AE7"
VALUES: dict[str, list[Any]] = {
    "text": ["event", "", None, "héllo wörld ✓ 日本 🚀", "x" * 1000, "a\tb\nc\\d"],
    "int16": [0, 1, -1, 2**15 - 1, -(2**15), None],
    "int32": [0, -1, 2**31 - 1, -(2**31), None, 123456],
    "int64": [0, -1, 2**63 - 1, -(2**63), None, 10**12],
    "float32": [0.0, -0.0, 1.5, math.nan, math.inf, -math.inf, None, 3.4e38, 1e-45],
    "float64": [0.0, -0.0, 0.1, math.nan, math.inf, -math.inf, None, 1.8e308, 5e-324],
    "bool": [True, False, None, True, False, False, True, True, False],
    "timestamp": [
        ts(2000, 1, 1),
        ts(1999, 12, 31, 23, 59, 59, 999999),
        ts(1970, 1, 1),
        ts(1900, 2, 28, 1, 2, 3, 4),
        None,
        ts(2024, 5, 1, 12, 30, 45, 123456),
        ts(1, 1, 1),
        ts(9999, 12, 31, 23, 59, 59, 999999),
    ],
    "date": [
        date(2000, 1, 1),
        date(1999, 12, 31),
        date(1970, 1, 1),
        None,
        date(1, 1, 1),
        date(9999, 12, 31),
        date(2024, 2, 29),
    ],
    "uuid": [U1, U2, None, str(uuid.UUID(int=0)), str(uuid.UUID(int=2**128 - 1)), U1],
    "json": ['{"a": 1}', "[]", None, '"ü ✓"', '{"nested": {"x": [1, 2.5, null]}}', "{}"],
}


def one_column(col_type: str, values: list[Any], *, large: bool = False) -> pa.RecordBatch:
    arrow = arrow_type(col_type)
    if large and arrow == pa.string():
        arrow = pa.large_string()
    return pa.RecordBatch.from_arrays([pa.array(values, type=arrow)], names=["c"])


def mixed_batch(rows: int, seed: int = 1) -> tuple[pa.RecordBatch, list[str]]:
    """Every type, cycling through VALUES at different phases, with extra random nulls."""
    rng = np.random.default_rng(seed)
    col_types = list(VALUES)
    arrays = []
    for i, col_type in enumerate(col_types):
        pool = VALUES[col_type]
        values = [pool[(r * (i + 1) + i) % len(pool)] for r in range(rows)]
        values = [None if rng.random() < 0.1 else v for v in values]
        arrays.append(pa.array(values, type=arrow_type(col_type)))
    names = [f"c_{t}" for t in col_types]
    return pa.RecordBatch.from_arrays(arrays, names=names), col_types


def test_public_names() -> None:
    import sinks.pgcopy

    assert sorted(sinks.pgcopy.__all__) == ["PG_TYPES", "arrow_type", "encode_copy_binary"]
    assert set(PG_TYPES) == set(VALUES)
    with pytest.raises(ValueError, match="unknown column type 'money'"):
        arrow_type("money")


@pytest.mark.parametrize("col_type", [pytest.param(t, id=t) for t in VALUES])
def test_each_type_matches_reference(col_type: str) -> None:
    batch = one_column(col_type, VALUES[col_type])
    assert encode_copy_binary(batch, [col_type]) == reference(batch, [col_type])


@pytest.mark.parametrize("col_type", [pytest.param(t, id=t) for t in VALUES])
def test_each_type_without_nulls(col_type: str) -> None:
    batch = one_column(col_type, [v for v in VALUES[col_type] if v is not None])
    assert encode_copy_binary(batch, [col_type]) == reference(batch, [col_type])


@pytest.mark.parametrize("col_type", [pytest.param(t, id=t) for t in VALUES])
def test_all_null_column(col_type: str) -> None:
    batch = one_column(col_type, [None, None, None])
    expected = HEADER + (struct.pack(">hi", 1, -1) * 3) + TRAILER
    assert encode_copy_binary(batch, [col_type]) == expected


@pytest.mark.parametrize("col_type", [pytest.param(t, id=t) for t in ("text", "uuid", "json")])
def test_large_string_columns(col_type: str) -> None:
    batch = one_column(col_type, VALUES[col_type], large=True)
    assert encode_copy_binary(batch, [col_type]) == reference(batch, [col_type])


def test_known_bytes_of_one_row() -> None:
    """Pinned by hand, so the reference itself is checked once."""
    batch = pa.RecordBatch.from_arrays(
        [pa.array([7], pa.int32()), pa.array(["hé"]), pa.array([None], pa.int64())],
        names=["a", "b", "c"],
    )
    expected = (
        b"PGCOPY\n\xff\r\n\x00\x00\x00\x00\x00\x00\x00\x00\x00"
        + b"\x00\x03"
        + b"\x00\x00\x00\x04\x00\x00\x00\x07"
        + b"\x00\x00\x00\x03h\xc3\xa9"
        + b"\xff\xff\xff\xff"
        + b"\xff\xff"
    )
    assert encode_copy_binary(batch, ["int32", "text", "int64"]) == expected


def test_mixed_batch_matches_reference() -> None:
    batch, col_types = mixed_batch(300)
    assert encode_copy_binary(batch, col_types) == reference(batch, col_types)


@pytest.mark.parametrize(
    ("offset", "length"),
    [
        pytest.param(3, 5, id="3+5"),
        pytest.param(1, 9, id="odd-offset"),
        pytest.param(8, 16, id="byte-aligned"),
        pytest.param(13, 1, id="one-row"),
        pytest.param(40, 0, id="empty-slice"),
        pytest.param(30, 20, id="to-the-end"),
    ],
)
def test_sliced_batch(offset: int, length: int) -> None:
    batch, col_types = mixed_batch(50)
    sliced = batch.slice(offset, length)
    assert encode_copy_binary(sliced, col_types) == reference(sliced, col_types)


@pytest.mark.parametrize(
    "col_types",
    [pytest.param([], id="no-columns"), pytest.param(list(VALUES), id="all-types")],
)
def test_empty_batch(col_types: list[str]) -> None:
    schema = pa.schema([(f"c{i}", arrow_type(t)) for i, t in enumerate(col_types)])
    batch = pa.RecordBatch.from_pylist([], schema=schema)
    assert encode_copy_binary(batch, col_types) == HEADER + TRAILER


def test_null_slot_that_spans_bytes() -> None:
    """Arrow lets a null string slot cover bytes; they must not leak into the stream."""
    offsets = np.array([0, 2, 5, 5 + 36, 41 + 36], dtype=np.int32)
    data = b"ab" + b"XYZ" + U1.encode() + U2.encode()
    validity = np.packbits(np.array([1, 0, 1, 0], dtype=bool), bitorder="little")
    arr = pa.Array.from_buffers(
        pa.string(), 4, [pa.py_buffer(validity), pa.py_buffer(offsets), pa.py_buffer(data)]
    )
    for col_type in ("text", "json"):
        batch = pa.RecordBatch.from_arrays([arr], names=["c"])
        assert encode_copy_binary(batch, [col_type]) == reference(batch, [col_type])
    uuids = arr.slice(2, 2)
    batch = pa.RecordBatch.from_arrays([uuids], names=["c"])
    assert encode_copy_binary(batch, ["uuid"]) == reference(batch, ["uuid"])


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param("0f8fad5b-d9cb-469f-a165-70867728950", id="short"),
        pytest.param("0f8fad5b-d9cb-469f-a165-70867728950e0", id="long"),
        pytest.param("0f8fad5b-d9cb-469f-a165-70867728950g", id="non-hex"),
        pytest.param("0f8fad5bd9cb-469f-a165-70867728950e-", id="dash-moved"),
        pytest.param("0f8fad5b0d9cb0469f0a165070867728950e", id="no-dashes-36"),
        pytest.param("0f8fad5bd9cb469fa16570867728950e", id="hex-only-32"),
        pytest.param("{0f8fad5b-d9cb-469f-a165-70867728950e}", id="braces"),
        pytest.param("0f8fad5b-d9cb-469f-a165-70867728950é", id="non-ascii"),
        pytest.param("", id="empty"),
    ],
)
def test_rejects_a_malformed_uuid(bad: str) -> None:
    batch = pa.RecordBatch.from_arrays([pa.array([U1, None, bad])], names=["event_id"])
    with pytest.raises(ValueError, match=r"column 'event_id': row 2 is not a canonical"):
        encode_copy_binary(batch, ["uuid"])


@pytest.mark.parametrize(
    ("col_type", "arrow", "values"),
    [
        pytest.param("int64", pa.int32(), [1], id="narrower-int"),
        pytest.param("timestamp", pa.timestamp("ms", tz="UTC"), [1], id="ms-timestamp"),
        pytest.param("text", pa.binary(), [b"x"], id="binary-as-text"),
        pytest.param("date", pa.date64(), [0], id="date64"),
    ],
)
def test_rejects_a_column_of_another_arrow_type(
    col_type: str, arrow: pa.DataType, values: list[Any]
) -> None:
    batch = pa.RecordBatch.from_arrays([pa.array(values, arrow)], names=["c"])
    with pytest.raises(TypeError, match=f"column 'c' \\({col_type}\\) must be Arrow"):
        encode_copy_binary(batch, [col_type])


def test_rejects_a_timestamp_out_of_range() -> None:
    arr = pa.array([0, -(2**63)], type=pa.int64()).cast(arrow_type("timestamp"))
    batch = pa.RecordBatch.from_arrays([arr], names=["ts"])
    with pytest.raises(ValueError, match="column 'ts': a value is too far in the past"):
        encode_copy_binary(batch, ["timestamp"])


def test_rejects_a_wrong_number_of_types() -> None:
    batch = one_column("text", ["a"])
    with pytest.raises(ValueError, match="2 column types for a batch of 1"):
        encode_copy_binary(batch, ["text", "text"])
    with pytest.raises(ValueError, match="unknown column type"):
        encode_copy_binary(batch, ["varchar"])


# --- round trip through a real server ---------------------------------------------------


def read_env_file(path: Path) -> dict[str, str]:
    """`export K=V [K2=V2 ...]` lines of a shell file."""
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["export"]:
            env |= dict(w.split("=", 1) for w in words[1:] if "=" in w)
    return env


@pytest.fixture
def pg_connection() -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    if not ENV_FILE.exists():
        pytest.skip(f"no local stack: {ENV_FILE} does not exist (run `make stack-up`)")
    env = read_env_file(ENV_FILE)
    keys = {"PGHOST": "host", "PGPORT": "port", "PGUSER": "user", "PGPASSWORD": "password"}
    keys |= {"PGDATABASE": "dbname"}
    conninfo = make_conninfo(**{arg: env[key] for key, arg in keys.items() if key in env})
    try:
        conn = psycopg.connect(conninfo, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.skip(f"cannot connect to PostgreSQL from {ENV_FILE}: {exc}")
    with conn:
        yield conn


def same(expected: Any, got: Any, col_type: str) -> bool:
    if expected is None or got is None:
        return expected is got
    if col_type == "uuid":
        return bool(uuid.UUID(expected) == got)
    if col_type == "json":
        return bool(json.loads(expected) == got)
    if isinstance(expected, float) and math.isnan(expected):
        return math.isnan(float(got))
    return bool(expected == got)


@pytest.mark.integration
def test_round_trip_through_postgres(pg_connection: psycopg.Connection[tuple[Any, ...]]) -> None:
    batch, col_types = mixed_batch(200)
    batch = batch.slice(7, 150)  # a slice, so offsets and bitmaps do not start at 0
    order = pa.array(range(batch.num_rows), pa.int64())
    batch = pa.RecordBatch.from_arrays([order, *batch.columns], names=["ord", *batch.schema.names])
    col_types = ["int64", *col_types]
    columns = ", ".join(
        f"{name} {PG_TYPES[t]}" for name, t in zip(batch.schema.names, col_types, strict=True)
    )
    with pg_connection.cursor() as cur:
        cur.execute(f"CREATE TEMP TABLE pgcopy_round_trip ({columns})")
        with cur.copy("COPY pgcopy_round_trip FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(encode_copy_binary(batch, col_types))
        # Binary results: a text real is rounded to its shortest decimal (1e-45).
        cur.execute("SELECT * FROM pgcopy_round_trip ORDER BY ord", binary=True)
        rows = cur.fetchall()
    assert len(rows) == batch.num_rows
    for i, col_type in enumerate(col_types):
        expected = batch.column(i).to_pylist()
        got = [row[i] for row in rows]
        bad = [r for r in range(len(rows)) if not same(expected[r], got[r], col_type)]
        assert not bad, (
            f"{batch.schema.names[i]} row {bad[0]}: {expected[bad[0]]!r} {got[bad[0]]!r}"
        )


def test_a_table_of_chunks_encodes_as_its_rows_in_one_stream() -> None:
    batch, col_types = mixed_batch(50)
    table = pa.Table.from_batches([batch.slice(0, 7), batch.slice(7, 0), batch.slice(7)])
    assert len(table.to_batches()) == 3
    assert encode_copy_binary(table, col_types) == encode_copy_binary(batch, col_types)


def test_an_empty_table_is_header_and_trailer_and_still_type_checked() -> None:
    batch, col_types = mixed_batch(3)
    empty = pa.Table.from_batches([], schema=batch.schema)
    assert encode_copy_binary(empty, col_types) == HEADER + TRAILER
    with pytest.raises(TypeError):
        encode_copy_binary(empty, ["int16", *col_types[1:]])
