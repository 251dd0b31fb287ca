"""The hot path: Kafka JSON values -> one Arrow RecordBatch of the good rows, plus the rejects.

Pure: no I/O, no clock. Each bad record becomes a ``Reject`` with a stable ``reason`` (a metric
label and a dead-letter header, see ``REASONS``) and a short message naming the column.

How it is fast (measured with bench/decode.py; ../shared/PERFORMANCE.md has the stage limits):

- Each route gets a ``msgspec.Struct`` type built for its columns, so msgspec validates types,
  int ranges, required fields and unknown fields in C while it parses. Timestamps and uuids
  are decoded as ``str`` and checked a whole column at a time with Arrow/numpy: typed
  ``datetime`` fields cost 0.5-0.7 µs a row more (decode, then ``pa.array`` of datetimes) than the
  string column and one Arrow cast. json columns are ``msgspec.Raw``: the record's own bytes,
  never re-encoded, joined into one string column with computed offsets.
- Records are decoded one by one with ``map`` over a reused decoder, not joined into one JSON
  array as a single document: the join ran at 0.7M rows/s against 1.2M (copying the batch
  into a fresh buffer cost more than the per-call overhead it saves), and a record that is not
  one complete JSON value (``{"a": "``) could otherwise merge with its neighbour. Only when that
  ``map`` raises does a per-record loop run, to find and label the bad records.
- Columns come out of the structs with one list comprehension per column (generated code:
  ``operator.attrgetter`` was 40% slower), then one ``pa.array`` call each.

msgspec does not check UTF-8 inside ``Raw`` values, so json columns are checked here (cheaply:
``bytes.isascii`` over the joined column first).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import compress
from operator import attrgetter
from typing import Annotated, Any, Final, cast

import msgspec
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from batcher.errors import BadRecord
from batcher.schema import ColumnSpec, RouteSchema
from sinks.pgcopy import arrow_type

__all__ = ["REASONS", "Decoded", "RecordDecoder", "Reject"]

# Every reason a record can be rejected for, in the order the checks run.
REASONS: Final = (
    "empty",  # no value (a tombstone) or a zero-length one
    "too_large",  # longer than max_record_bytes
    "invalid_utf8",
    "invalid_json",
    "not_object",  # valid JSON, but not an object
    "missing_column",  # a column that is not nullable is absent
    "null_value",  # null in a column that is not nullable
    "wrong_type",
    "int_overflow",  # outside the range of the column's integer type
    "bad_timestamp",  # not a string, or not ISO-8601 (also for date columns)
    "bad_uuid",  # not a string, or not a canonical 8-4-4-4-12 hex uuid
    "unknown_field",  # a field that is not a column, when unknown_fields == "reject"
    "bad_text",  # a NUL character, which Postgres text and jsonb refuse
)

I64 = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]
Problems = dict[int, tuple[str, str]]  # row -> (reason, message); the first problem wins

_FLOAT32_MAX: Final = float(np.finfo(np.float32).max)
_FIELD_TYPES: Final[dict[str, Any]] = {
    "text": str,
    "int16": Annotated[int, msgspec.Meta(ge=-(2**15), le=2**15 - 1)],
    "int32": Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)],
    "int64": Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)],
    # Arrow would quietly turn a larger value into infinity.
    "float32": Annotated[float, msgspec.Meta(ge=-_FLOAT32_MAX, le=_FLOAT32_MAX)],
    "float64": float,
    "bool": bool,
    "timestamp": str,  # parsed a column at a time, see _timestamps
    "date": dt.date,
    "uuid": str,  # checked a column at a time, see _uuids
    "json": msgspec.Raw,
}
_INT_TYPES: Final = frozenset({"int16", "int32", "int64"})
_TIMESTAMP: Final = pa.timestamp("us", tz="UTC")
# What Arrow's string -> timestamp cast surely reads (its parser also takes a few more forms).
_ISO_STRICT: Final = (
    r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[T ]([01]\d|2[0-3]):[0-5]\d:[0-5]\d"
    r"(\.\d{1,6})?(Z|[+-]\d\d:\d\d)$"
)
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND: Final = dt.timedelta(microseconds=1)
_UUID_LEN: Final = 36
_UUID_DASHES: Final = np.array([8, 13, 18, 23], dtype=np.intp)
_UUID_DIGITS: Final = np.setdiff1d(np.arange(_UUID_LEN), _UUID_DASHES)
_NULL: Final = np.frombuffer(b"null", dtype=np.uint8)
_STRING_MAX: Final = 2**31 - 1  # an Arrow string array's int32 offsets


@dataclass(frozen=True)
class Reject:
    """A record set aside: its Kafka offset, a stable reason label and a short message."""

    offset: int
    reason: str
    message: str


@dataclass(frozen=True)
class Decoded:
    """The good rows of a poll batch (in input order) with their offsets, and the rejects."""

    records: pa.RecordBatch
    offsets: pa.Array  # int64, one per row, ascending
    rejects: list[Reject]
    value_bytes: int  # the size of the good rows' values


class RecordDecoder:
    """Decodes the values of one route's records; build one per route and reuse it."""

    def __init__(self, schema: RouteSchema, max_record_bytes: int = 1_048_576) -> None:
        self._schema = schema
        self._max_bytes = max_record_bytes
        self._arrow_schema = schema.arrow_schema()
        self._columns = {col.name: col for col in schema.columns}
        self._decode_one: Callable[[Any], Any] = msgspec.json.Decoder(_record_struct(schema)).decode
        self._split = _column_splitter(len(schema.columns))
        self._decode_fields = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode

    def decode(self, values: Sequence[bytes | None], offsets: Sequence[int]) -> Decoded:
        """The good rows of ``values`` (Kafka record values at ``offsets``) and the rejects."""
        if len(values) != len(offsets):
            raise ValueError(f"{len(values)} values but {len(offsets)} offsets")
        rejects: list[Reject] = []
        try:
            sizes = list(map(len, cast(Sequence[bytes], values)))
        except TypeError:  # a None value (a tombstone)
            sizes = [0 if value is None else len(value) for value in values]
        records, bad = self._decode_records(values, offsets, max(sizes, default=0), rejects)
        if bad:
            kept = np.ones(len(values), dtype=np.bool_)
            kept[bad] = False
            values, offsets = list(compress(values, kept)), list(compress(offsets, kept))
            sizes = list(compress(sizes, kept))
        good = cast(Sequence[bytes], values)  # no None is left
        arrays, problems = self._arrays(records, good)
        batch = pa.RecordBatch.from_arrays(arrays, schema=self._arrow_schema)
        row_offsets = pa.array(offsets, pa.int64())
        value_bytes = sum(sizes)
        if problems:
            keep = np.ones(len(good), dtype=np.bool_)
            keep[list(problems)] = False
            batch, row_offsets = batch.filter(keep), row_offsets.filter(keep)
            for row, (reason, message) in problems.items():
                rejects.append(Reject(offsets[row], reason, message))
                value_bytes -= sizes[row]
            rejects.sort(key=attrgetter("offset"))
        return Decoded(batch, row_offsets, rejects, value_bytes)

    # -- records -> structs --------------------------------------------------------------

    def _decode_records(
        self,
        values: Sequence[bytes | None],
        offsets: Sequence[int],
        largest: int,
        rejects: list[Reject],
    ) -> tuple[list[Any], list[int]]:
        """The structs of the good values, and the positions of the bad ones (rejected);
        ``largest`` is the size of the largest value.

        ``map`` decodes in C until a value raises; ``list.extend`` keeps what came before,
        so the bad value is the next position: it is labelled and the same iterator goes on.
        """
        inputs: Iterable[bytes | None] = values
        if largest > self._max_bytes:  # decoding None fails, and _decode_record says why
            limit = self._max_bytes
            inputs = [v if v is not None and len(v) <= limit else None for v in values]
        records: list[Any] = []
        bad: list[int] = []
        pending = iter(inputs)
        while True:
            try:
                records.extend(map(self._decode_one, pending))
                return records, bad
            except (TypeError, msgspec.DecodeError):
                at = len(records) + len(bad)
            try:
                records.append(self._decode_record(values[at]))
            except BadRecord as exc:
                bad.append(at)
                rejects.append(Reject(offsets[at], exc.reason, exc.message))

    def _decode_record(self, value: bytes | None) -> Any:
        """One value as this route's struct; raises BadRecord. The column-wide checks
        (timestamp, uuid, NUL, UTF-8 inside json) are not made here."""
        if not value:
            raise BadRecord("empty", "no value (a tombstone)" if value is None else "empty value")
        if len(value) > self._max_bytes:
            raise BadRecord(
                "too_large", f"{len(value)} bytes, above max_record_bytes {self._max_bytes}"
            )
        try:
            return self._decode_one(value)
        except msgspec.ValidationError as exc:
            raise BadRecord(*self._classify(str(exc))) from None
        except msgspec.DecodeError as exc:
            if "UTF-8" not in str(exc):
                raise BadRecord("invalid_json", str(exc)) from None
            try:
                value.decode()
            except UnicodeDecodeError as utf8:
                raise BadRecord("invalid_utf8", f"not UTF-8 at byte {utf8.start}") from None
            raise BadRecord("invalid_utf8", str(exc)) from None

    def _classify(self, message: str) -> tuple[str, str]:
        """The reason for msgspec's validation message, e.g. "Expected `int`, got `str` - at
        `$.user_id`" (which already names the column)."""
        if message.startswith("Object missing required field"):
            return "missing_column", message
        if message.startswith("Object contains unknown field"):
            return "unknown_field", message
        _, at, path = message.rpartition(" - at `$.")
        col = self._columns.get(path[:-1]) if at else None
        if col is None:
            reason = "not_object" if message.startswith("Expected `object`") else "wrong_type"
            return reason, message
        out_of_range = "<=" in message or ">=" in message or "out of range" in message
        if col.type in _INT_TYPES and out_of_range:
            return "int_overflow", message
        if col.type in ("timestamp", "uuid"):  # decoded as str: say what the str must be
            message = message.replace("`str", f"`{col.type} string", 1)
        if "got `null`" in message:
            return "null_value", message
        if col.type in ("timestamp", "date"):
            return "bad_timestamp", message
        if col.type == "uuid":
            return "bad_uuid", message
        return "wrong_type", message

    # -- structs -> Arrow ------------------------------------------------------------------

    def _arrays(
        self, records: list[Any], values: Sequence[bytes]
    ) -> tuple[list[pa.Array], Problems]:
        """One Arrow array per column, and the rows the column-wide checks refuse."""
        problems: Problems = {}
        arrays: list[pa.Array] = []
        for col, items in zip(self._schema.columns, self._split(records), strict=True):
            array, found = _BUILDERS[col.type](col, items)
            arrays.append(array)
            for row, problem in found.items():
                problems.setdefault(row, problem)
        if self._schema.unknown_fields == "keep":
            keep = ColumnSpec(self._schema.keep_column, "json")
            array, found = _json(keep, self._extras(values))
            arrays.append(array)
            for row, problem in found.items():
                problems.setdefault(row, problem)
        return arrays, problems

    def _extras(self, values: Sequence[bytes]) -> list[bytes | None]:
        """Each record's fields that are not columns, as a JSON object (None: there are none).
        A second parse of every record; "keep" routes pay for it."""
        known = self._columns
        out: list[bytes | None] = []
        for value in values:
            fields = self._decode_fields(value)
            extra = {name: raw for name, raw in fields.items() if name not in known}
            out.append(msgspec.json.encode(extra) if extra else None)
        return out


def _record_struct(schema: RouteSchema) -> type[msgspec.Struct]:
    """A Struct type for the route: attributes f0, f1, ... encoded as the column names (so any
    column name works); required where not nullable, else defaulting to None."""
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for i, col in enumerate(schema.columns):
        field_type = _FIELD_TYPES[col.type]
        if not col.nullable:
            fields.append((f"f{i}", field_type))
        elif col.type == "json":  # `Raw | None` would accept only null; see _json for null
            fields.append((f"f{i}", field_type, None))
        else:
            fields.append((f"f{i}", field_type | None, None))
    return msgspec.defstruct(
        "Record",
        fields,
        rename={f"f{i}": col.name for i, col in enumerate(schema.columns)},
        kw_only=True,  # required fields may follow optional ones
        forbid_unknown_fields=schema.unknown_fields == "reject",
        gc=False,  # its fields never hold containers, so it cannot be part of a cycle
    )


def _column_splitter(count: int) -> Callable[[list[Any]], tuple[list[Any], ...]]:
    """A function returning ``([r.f0 for r in records], [r.f1 ...], ...)``. Generated (as
    dataclasses generate their methods) from our own attribute names only."""
    lists = "".join(f"[r.f{i} for r in records], " for i in range(count))
    namespace: dict[str, Any] = {}
    exec(f"def split(records):\n    return ({lists})\n", namespace)
    split: Callable[[list[Any]], tuple[list[Any], ...]] = namespace["split"]
    return split


# -- one builder per column type: python values -> (Arrow array, problems) ---------------


def _plain(col: ColumnSpec, items: list[Any]) -> tuple[pa.Array, Problems]:
    """Numbers, bools, dates: msgspec has checked them already."""
    return pa.array(items, arrow_type(col.type)), {}


def _text(col: ColumnSpec, items: list[Any]) -> tuple[pa.Array, Problems]:
    array = pa.array(items, pa.string())
    rows = _rows_with_nul(array)
    return array, {int(row): _nul_problem(col, "text") for row in rows}


def _uuids(col: ColumnSpec, items: list[Any]) -> tuple[pa.Array, Problems]:
    array = pa.array(items, pa.string())
    problems = {
        int(row): ("bad_uuid", f"column `{col.name}`: not a uuid: {items[row]!r:.50}")
        for row in _bad_uuid_rows(array)
    }
    return array, problems


def _timestamps(col: ColumnSpec, items: list[Any]) -> tuple[pa.Array, Problems]:
    """ISO-8601 strings -> UTC microseconds. One Arrow cast when it reads every row; otherwise
    Arrow reads the rows that are surely its format and the rest go one by one to msgspec
    (naive = UTC, lowercase t/z, 7+ fraction digits) and then to Arrow, so whether a row is
    accepted never depends on its neighbours."""
    strings = pa.array(items, pa.string())
    try:
        return pc.cast(strings, _TIMESTAMP), {}
    except pa.ArrowInvalid:
        pass
    valid: Mask = np.array(strings.is_valid().to_numpy(zero_copy_only=False))
    matched = pc.match_substring_regex(strings, _ISO_STRICT).fill_null(False)
    strict: Mask = np.array(matched.to_numpy(zero_copy_only=False))
    try:
        bulk = pc.cast(pc.if_else(matched, strings, pa.scalar(None, pa.string())), _TIMESTAMP)
        micros: I64 = np.array(bulk.cast(pa.int64()).fill_null(0).to_numpy())
    except pa.ArrowInvalid:  # e.g. February 30th
        strict[:] = False
        micros = np.zeros(len(items), dtype=np.int64)
    problems: Problems = {}
    for row in np.flatnonzero(valid & ~strict):
        parsed = _parse_timestamp(items[row])
        if parsed is None:
            message = f"column `{col.name}`: not an ISO-8601 timestamp: {items[row]!r:.50}"
            problems[int(row)] = ("bad_timestamp", message)
            valid[row] = False
        else:
            micros[row] = parsed
    return pa.array(micros, _TIMESTAMP, mask=~valid), problems


def _parse_timestamp(text: str) -> int | None:
    """Microseconds since the epoch, or None when neither msgspec nor Arrow reads ``text``."""
    try:
        moment = msgspec.convert(text, dt.datetime)
    except msgspec.ValidationError:
        if not text[:4].isdigit():  # Arrow cannot read it either; its error costs ~90 µs
            return None
        try:
            value: int = pc.cast(pa.array([text]), _TIMESTAMP).cast(pa.int64())[0].as_py()
        except pa.ArrowInvalid:
            return None
        return value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return (moment - _EPOCH) // _MICROSECOND


def _json(col: ColumnSpec, items: list[Any]) -> tuple[pa.Array, Problems]:
    """Raw JSON texts (or None when absent) joined into one string array. A JSON null is SQL
    NULL in a nullable column and a reject otherwise."""
    n = len(items)
    absent: Mask | None = None
    try:
        lengths = np.fromiter(map(len, items), dtype=np.int64, count=n)
    except TypeError:  # an absent field (None)
        absent = np.fromiter((item is None for item in items), dtype=np.bool_, count=n)
        items = [b"" if item is None else item for item in items]
        lengths = np.fromiter(map(len, items), dtype=np.int64, count=n)
    data = b"".join(items)
    if len(data) > _STRING_MAX:
        raise ValueError(f"column {col.name!r}: over 2 GiB of JSON in one batch")
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    nulls = _json_nulls(data, offsets, lengths)
    if absent is not None:
        nulls |= absent
    problems: Problems = {}
    if not col.nullable:
        message = f"Expected a JSON value, got `null` - at `$.{col.name}`"
        problems.update((int(row), ("null_value", message)) for row in np.flatnonzero(nulls))
    for row in _rows_not_utf8(data, offsets):
        problems.setdefault(row, ("invalid_utf8", f"column `{col.name}`: JSON is not UTF-8"))
    if b"\\" in data and b"\\u0000" in data:  # memchr first: 10x faster when no "\\"
        for row in _rows_with_nul_escape(data, offsets):
            problems.setdefault(row, _nul_problem(col, "jsonb"))
    validity = None
    null_count = int(np.count_nonzero(nulls))
    if null_count:
        validity = pa.py_buffer(np.packbits(~nulls, bitorder="little"))
    buffers = [validity, pa.py_buffer(offsets), pa.py_buffer(data)]
    return pa.Array.from_buffers(pa.string(), n, buffers, null_count=null_count), problems


_BUILDERS: Final[dict[str, Callable[[ColumnSpec, list[Any]], tuple[pa.Array, Problems]]]] = {
    "text": _text,
    "int16": _plain,
    "int32": _plain,
    "int64": _plain,
    "float32": _plain,
    "float64": _plain,
    "bool": _plain,
    "timestamp": _timestamps,
    "date": _plain,
    "uuid": _uuids,
    "json": _json,
}


# -- column-wide checks -------------------------------------------------------------------


def _string_parts(array: pa.Array) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.uint8]]:
    """The offsets and bytes of a string array built here (so not a slice)."""
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int32, count=len(array) + 1)
    data = array.buffers()[2]
    if data is None or offsets[-1] == 0:
        return offsets, np.empty(0, dtype=np.uint8)
    return offsets, np.frombuffer(data, dtype=np.uint8, count=int(offsets[-1]))


def _rows_of(positions: I64, offsets: npt.NDArray[np.int32]) -> I64:
    """The rows holding these byte positions, each once, ascending."""
    return np.unique(np.searchsorted(offsets, positions, side="right") - 1)


def _rows_with_nul(array: pa.Array) -> I64:
    if len(array) == 0:
        return np.empty(0, dtype=np.int64)
    offsets, data = _string_parts(array)
    return _rows_of(np.flatnonzero(data == 0), offsets)


def _nul_problem(col: ColumnSpec, pg_type: str) -> tuple[str, str]:
    return (
        "bad_text",
        f"column `{col.name}`: holds a NUL character (\\u0000), which {pg_type} refuses",
    )


def _bad_uuid_rows(array: pa.Array) -> I64:
    """Rows that are not null and not a canonical text uuid (either case of hex digits)."""
    n = len(array)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    offsets, _ = _string_parts(array)
    sized: Mask = np.diff(offsets) == _UUID_LEN
    bad: Mask = array.is_valid().to_numpy(zero_copy_only=False) & ~sized
    sized_rows = np.flatnonzero(sized)
    if sized_rows.size:
        packed, data = _string_parts(array.filter(sized) if sized_rows.size < n else array)
        text = data[packed[0] :].reshape(sized_rows.size, _UUID_LEN)
        chars = text[:, _UUID_DIGITS]
        # uint8 wraps, so one compare checks each range: 0-9, then a-f / A-F.
        not_hex = ((chars - ord("0")) > 9) & (((chars | 0x20) - ord("a")) > 5)
        wrong = not_hex.any(axis=1) | (text[:, _UUID_DASHES] != ord("-")).any(axis=1)
        bad[sized_rows[wrong]] = True
    return np.flatnonzero(bad)


def _json_nulls(data: bytes, offsets: npt.NDArray[np.int32], lengths: I64) -> Mask:
    """Rows whose JSON text is ``null``."""
    nulls = np.zeros(len(lengths), dtype=np.bool_)
    short = np.flatnonzero(lengths == len(_NULL))
    if short.size:
        text = np.frombuffer(data, dtype=np.uint8)[offsets[short, None] + np.arange(len(_NULL))]
        nulls[short[(text == _NULL).all(axis=1)]] = True
    return nulls


def _rows_not_utf8(data: bytes, offsets: npt.NDArray[np.int32]) -> list[int]:
    """Rows that are not valid UTF-8 (msgspec does not check inside a Raw value)."""
    if data.isascii():
        return []
    high = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) >= 0x80)
    bad: list[int] = []
    for row in _rows_of(high, offsets).tolist():
        try:
            data[offsets[row] : offsets[row + 1]].decode()
        except UnicodeDecodeError:
            bad.append(row)
    return bad


def _rows_with_nul_escape(data: bytes, offsets: npt.NDArray[np.int32]) -> list[int]:
    """Rows whose JSON holds a NUL character (``\\u0000``, not an escaped backslash before
    "u0000"), which jsonb refuses."""
    positions: list[int] = []
    at = data.find(b"\\u0000")
    while at >= 0:
        positions.append(at)
        at = data.find(b"\\u0000", at + 1)
    bad: list[int] = []
    for row in _rows_of(np.array(positions, dtype=np.int64), offsets).tolist():
        try:
            decoded = msgspec.json.decode(data[offsets[row] : offsets[row + 1]])
        except msgspec.DecodeError:  # not UTF-8: rejected for that already
            continue
        if _holds_nul(decoded):
            bad.append(row)
    return bad


def _holds_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False
