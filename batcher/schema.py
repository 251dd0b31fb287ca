"""A route's columns: what each record must hold, and the table and Arrow schema it becomes.

A ``RouteSchema`` is checked once, when it is built, and raises ``ConfigError`` naming the
problem. It then answers, without I/O, everything the other stages ask about the columns:
the Arrow schema of a decoded batch, the type names ``sinks.pgcopy.encode_copy_binary``
needs, the ``CREATE TABLE`` of the Postgres sink, and whether an existing table (as
``information_schema.columns`` describes it) can take the rows.

The column type vocabulary is ``sinks.pgcopy.PG_TYPES``: one place says what a type is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal, get_args

import pyarrow as pa

from batcher.errors import ConfigError
from sinks.pgcopy import PG_TYPES, arrow_type

__all__ = ["ColumnSpec", "RouteSchema", "UnknownFields", "quote_ident", "quote_table"]

UnknownFields = Literal["ignore", "keep", "reject"]

# Postgres silently truncates longer identifiers (NAMEDATALEN - 1), after which the table's
# column names would no longer match ours.
_MAX_IDENT_BYTES: Final = 63
# information_schema.columns.data_type spells some types differently from PG_TYPES.
_INFO_SCHEMA_NAMES: Final[dict[str, str]] = {"timestamptz": "timestamp with time zone"}


@dataclass(frozen=True)
class ColumnSpec:
    """One column: its name, our type name (a key of ``sinks.pgcopy.PG_TYPES``), and whether
    a record may leave it out or set it to null."""

    name: str
    type: str
    nullable: bool = True


@dataclass(frozen=True)
class RouteSchema:
    """The columns of a route, in table order.

    ``unknown_fields`` says what happens to a record's fields that are not columns: dropped
    ("ignore"), kept as a JSON object in the extra json column ``keep_column`` ("keep"), or
    the record is rejected ("reject").
    """

    columns: tuple[ColumnSpec, ...]
    event_time: str | None = None
    unknown_fields: UnknownFields = "ignore"
    keep_column: str = "extra"

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(self.columns))  # a list is fine too
        if not self.columns:
            raise ConfigError("a route needs at least one column")
        seen: set[str] = set()
        for col in self.columns:
            _check_name(col.name, "column")
            if col.name in seen:
                raise ConfigError(f"column {col.name!r} is declared twice")
            seen.add(col.name)
            if col.type not in PG_TYPES:
                known = ", ".join(PG_TYPES)
                raise ConfigError(
                    f"column {col.name!r} has unknown type {col.type!r}; use one of: {known}"
                )
        if self.event_time is not None:
            by_name = {col.name: col for col in self.columns}
            if self.event_time not in by_name:
                raise ConfigError(f"event_time {self.event_time!r} is not one of the columns")
            if by_name[self.event_time].type != "timestamp":
                raise ConfigError(
                    f"event_time {self.event_time!r} must be a timestamp column, "
                    f"not {by_name[self.event_time].type}"
                )
        if self.unknown_fields not in get_args(UnknownFields):
            raise ConfigError(
                f"unknown_fields must be one of {', '.join(get_args(UnknownFields))}, "
                f"not {self.unknown_fields!r}"
            )
        if self.unknown_fields == "keep":
            _check_name(self.keep_column, "keep_column")
            if self.keep_column in seen:
                raise ConfigError(
                    f"keep_column {self.keep_column!r} clashes with a declared column; "
                    "rename one of them"
                )

    def all_columns(self) -> tuple[ColumnSpec, ...]:
        """The declared columns, then the keep column when unknown fields are kept."""
        if self.unknown_fields == "keep":
            return (*self.columns, ColumnSpec(self.keep_column, "json", nullable=True))
        return self.columns

    def arrow_schema(self) -> pa.Schema:
        """The schema of every decoded batch of this route."""
        return pa.schema(
            [pa.field(c.name, arrow_type(c.type), nullable=c.nullable) for c in self.all_columns()]
        )

    def col_types(self) -> list[str]:
        """Our type name of each column, in order (for ``encode_copy_binary``)."""
        return [c.type for c in self.all_columns()]

    def create_table_sql(self, table: str) -> str:
        """``CREATE TABLE IF NOT EXISTS`` for these columns; ``table`` is "schema.name" or
        "name"."""
        lines = [
            f"    {quote_ident(c.name)} {PG_TYPES[c.type]}{'' if c.nullable else ' NOT NULL'}"
            for c in self.all_columns()
        ]
        return f"CREATE TABLE IF NOT EXISTS {quote_table(table)} (\n" + ",\n".join(lines) + "\n)"

    def check_columns(self, found: Sequence[tuple[str, str, bool]]) -> list[str]:
        """What keeps an existing table from taking this route's rows; empty when nothing.

        ``found`` holds ``(column_name, data_type, is_nullable)`` rows of
        ``information_schema.columns``. A table that forbids nulls where we declared none is
        fine; extra table columns are fine when they accept null.
        """
        table = {name: (data_type, nullable) for name, data_type, nullable in found}
        problems: list[str] = []
        for col in self.all_columns():
            if col.name not in table:
                problems.append(f"column {col.name!r} is missing from the table")
                continue
            data_type, nullable = table[col.name]
            expected = _info_schema_type(col.type)
            if data_type != expected:
                problems.append(
                    f"column {col.name!r} is {data_type} in the table, expected {expected}"
                )
            if col.nullable and not nullable:
                problems.append(
                    f"column {col.name!r} is NOT NULL in the table but declared nullable"
                )
        ours = {c.name for c in self.all_columns()}
        problems.extend(
            f"table column {name!r} is NOT NULL but not declared (the COPY would fail)"
            for name, _, nullable in found
            if name not in ours and not nullable
        )
        return problems


def quote_ident(name: str) -> str:
    """``name`` as a Postgres quoted identifier (embedded double quotes doubled)."""
    if not name or "\x00" in name:
        raise ConfigError(f"{name!r} cannot be a Postgres identifier")
    return '"' + name.replace('"', '""') + '"'


def quote_table(name: str) -> str:
    """A table name "schema.table" or "table" with each part quoted."""
    parts = name.split(".")
    if len(parts) > 2 or not all(parts):
        raise ConfigError(f"table {name!r} must be 'table' or 'schema.table'")
    return ".".join(quote_ident(part) for part in parts)


def _check_name(name: str, what: str) -> None:
    if not name or "\x00" in name:
        raise ConfigError(f"{what} name {name!r} must be non-empty and hold no NUL character")
    if len(name.encode()) > _MAX_IDENT_BYTES:
        raise ConfigError(
            f"{what} name {name!r} is longer than Postgres allows ({_MAX_IDENT_BYTES} bytes)"
        )


def _info_schema_type(col_type: str) -> str:
    pg = PG_TYPES[col_type]
    return _INFO_SCHEMA_NAMES.get(pg, pg)
