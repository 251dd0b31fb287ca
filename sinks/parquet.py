"""Arrow -> Parquet bytes, split by event date, and the file names that carry Kafka offsets.

The pure half of the file sinks (``sinks.files``): no I/O, so the format and the naming are
tested without a server. The writer only moves these bytes and renames them.

- ``FileName``: ``<topic>+<partition>+<first:019d>+<last:019d>.parquet``, where first/last are
  the Kafka offsets a flush covers (both inclusive). Zero-padded so that names sort by offset;
  Kafka topic names cannot contain ``+`` (only ``[a-zA-Z0-9._-]``), so the name parses back.
- ``split_by_date``: one part per UTC date of the event-time column (``"2024-05-01"``), rows
  with a null event time under ``"unknown"``; a route without event time is one undated part.
- ``encode_parquet``: one row group per flush, timestamps as ``timestamp[us, UTC]``
  (``isAdjustedToUTC``, what Spark, Hive and DuckDB read as an instant), strings as strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = [
    "PARTITION_KEY",
    "SUFFIX",
    "UNKNOWN_DATE",
    "FileName",
    "check_compression",
    "encode_parquet",
    "split_by_date",
]

# Hive-style directory key: <root>/dt=YYYY-MM-DD/, what Spark, Hive and pyarrow.dataset parse.
PARTITION_KEY: Final = "dt"
# The partition of rows whose event time is null (a string, so the dt column stays a string).
UNKNOWN_DATE: Final = "unknown"
SUFFIX: Final = ".parquet"
# One row group per flush: a flush is bounded by the sink's byte budget, far below this many
# rows, and readers skip whole files by the dt directory, not by row-group statistics.
_ROW_GROUP_ROWS: Final = 1 << 30
_DICTIONARY_SAMPLE_ROWS: Final = 1024
# 19 digits hold any non-negative int64, so every offset pads to the same width.
_OFFSET_DIGITS: Final = 19
_STEM: Final = re.compile(
    r"(?P<topic>[A-Za-z0-9._-]+)\+(?P<partition>\d+)\+(?P<first>\d{19})\+(?P<last>\d{19})"
)
_NO_COMPRESSION: Final = frozenset({"none", "uncompressed"})


@dataclass(frozen=True, order=True)
class FileName:
    """The offsets one flush of one topic-partition covers, [first, last] inclusive."""

    topic: str
    partition: int
    first: int
    last: int

    def __post_init__(self) -> None:
        if not 0 <= self.first <= self.last:
            raise ValueError(f"bad offset range {self.first}..{self.last}")

    @property
    def stem(self) -> str:
        """``topic+partition+first+last``: the name of a flush's _tmp and _staged directory."""
        first = f"{self.first:0{_OFFSET_DIGITS}d}"
        last = f"{self.last:0{_OFFSET_DIGITS}d}"
        return f"{self.topic}+{self.partition}+{first}+{last}"

    @property
    def filename(self) -> str:
        return self.stem + SUFFIX

    @property
    def next_offset(self) -> int:
        return self.last + 1

    @classmethod
    def from_stem(cls, stem: str) -> FileName | None:
        """The offsets in a ``_tmp`` / ``_staged`` directory name; None if it is not ours."""
        match = _STEM.fullmatch(stem)
        if match is None:
            return None
        first, last = int(match["first"]), int(match["last"])
        if first > last:
            return None
        return cls(match["topic"], int(match["partition"]), first, last)

    @classmethod
    def from_filename(cls, filename: str) -> FileName | None:
        """The offsets in a final file's name; None if it is not ours (``_SUCCESS``, a
        ``.crc`` file, a stray upload)."""
        if not filename.endswith(SUFFIX):
            return None
        return cls.from_stem(filename.removesuffix(SUFFIX))


def split_by_date(
    records: pa.Table, event_time_column: str | None
) -> list[tuple[str | None, pa.Table]]:
    """The rows of ``records`` grouped by the UTC date of ``event_time_column``.

    Returns ``[(date, rows)]`` sorted by date with ``UNKNOWN_DATE`` (null event time) last,
    rows keeping their order; ``[(None, records)]`` when there is no event-time column.
    Empty ``records`` give an empty list when dated. Raises TypeError when the column is not
    an Arrow timestamp, KeyError when it is missing.
    """
    if event_time_column is None:
        return [(None, records)]
    index = records.schema.get_field_index(event_time_column)
    if index < 0:
        raise KeyError(f"event time column {event_time_column!r} is not in the batch")
    column = records.column(index)
    if not pa.types.is_timestamp(column.type):
        raise TypeError(
            f"event time column {event_time_column!r} is {column.type}, not a timestamp"
        )
    # Dropping the zone first keeps the UTC instant; a zoned timestamp cast straight to date32
    # would give the date in that zone.
    days = column.cast(pa.timestamp(column.type.unit)).cast(pa.date32())
    if not days.null_count:
        span = pc.min_max(days)
        first, last = span["min"].as_py(), span["max"].as_py()
        if first is not None and first == last:  # one day, the common case: no copy
            return [(first.isoformat(), records)]
    parts: list[tuple[str | None, pa.Table]] = []
    for day in sorted(pc.unique(days).drop_null().to_pylist()):
        parts.append((day.isoformat(), records.filter(pc.equal(days, pa.scalar(day, pa.date32())))))
    if days.null_count:
        parts.append((UNKNOWN_DATE, records.filter(pc.is_null(days))))
    return parts


def check_compression(compression: str, level: int | None) -> None:
    """Raise ValueError naming the problem when Parquet cannot write with this codec/level."""
    if compression.lower() in _NO_COMPRESSION:
        if level is not None:
            raise ValueError(f"compression {compression!r} takes no compression_level")
        return
    try:
        available = pa.Codec.is_available(compression)
    except ValueError:  # a name Arrow does not know at all
        available = False
    if not available:
        raise ValueError(f"compression {compression!r} is not available in this pyarrow")
    if level is not None:
        if not pa.Codec.supports_compression_level(compression):
            raise ValueError(f"compression {compression!r} takes no compression_level")
        low = pa.Codec.minimum_compression_level(compression)
        high = pa.Codec.maximum_compression_level(compression)
        if not low <= level <= high:
            raise ValueError(f"{compression} compression_level must be in [{low}, {high}]")


def dictionary_columns(records: pa.Table) -> list[str]:
    """The columns worth Parquet's dictionary encoding: few distinct values in a sample.

    Arrow tries a dictionary on every column by default and gives up on a column only after
    its dictionary page fills; on uuids, JSON payloads, timestamps and amounts that attempt
    cost about 40% of the encoding time here (make bench) and saved nothing. Columns with
    at most a quarter distinct values among their first rows (an event type, a country) keep
    it: it makes them smaller and faster to scan.
    """
    sample = records.slice(0, _DICTIONARY_SAMPLE_ROWS)
    limit = max(1, sample.num_rows // 4)
    return [
        field.name
        for field, column in zip(sample.schema, sample.columns, strict=True)
        if pc.count_distinct(column, mode="all").as_py() <= limit
    ]


def encode_parquet(
    records: pa.Table, compression: str = "zstd", compression_level: int | None = None
) -> bytes:
    """``records`` (a Table or a RecordBatch) as one Parquet file in memory (schema only when
    it has no rows)."""
    table = records if isinstance(records, pa.Table) else pa.Table.from_batches([records])
    out = pa.BufferOutputStream()
    pq.write_table(
        table,
        out,
        row_group_size=_ROW_GROUP_ROWS,
        compression="none" if compression.lower() in _NO_COMPRESSION else compression,
        compression_level=compression_level,
        use_dictionary=dictionary_columns(table),
        # Microseconds with isAdjustedToUTC: what Spark and DuckDB read as timestamps; a
        # nanosecond value that would lose digits raises rather than truncates silently.
        coerce_timestamps="us",
        allow_truncated_timestamps=False,
    )
    return bytes(out.getvalue().to_pybytes())
