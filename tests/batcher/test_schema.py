"""RouteSchema: validation, Arrow schema, CREATE TABLE and the check of an existing table."""

from __future__ import annotations

import pyarrow as pa
import pytest

from batcher.errors import ConfigError
from batcher.schema import ColumnSpec, RouteSchema, quote_ident, quote_table

COLUMNS = (
    ColumnSpec("event_id", "uuid", nullable=False),
    ColumnSpec("ts", "timestamp", nullable=False),
    ColumnSpec("user_id", "int64", nullable=False),
    ColumnSpec("amount", "float64"),
    ColumnSpec("payload", "json"),
)

# What information_schema.columns says about a table created from COLUMNS.
FOUND = [
    ("event_id", "uuid", False),
    ("ts", "timestamp with time zone", False),
    ("user_id", "bigint", False),
    ("amount", "double precision", True),
    ("payload", "jsonb", True),
]


def test_arrow_schema_honours_nullability() -> None:
    schema = RouteSchema(COLUMNS, event_time="ts")
    assert schema.arrow_schema() == pa.schema(
        [
            pa.field("event_id", pa.string(), nullable=False),
            pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
            pa.field("user_id", pa.int64(), nullable=False),
            pa.field("amount", pa.float64()),
            pa.field("payload", pa.string()),
        ]
    )
    assert schema.col_types() == ["uuid", "timestamp", "int64", "float64", "json"]
    assert schema.all_columns() == COLUMNS


def test_keep_mode_appends_a_nullable_json_column() -> None:
    schema = RouteSchema(COLUMNS, event_time=None, unknown_fields="keep", keep_column="rest")
    assert schema.all_columns()[-1] == ColumnSpec("rest", "json", nullable=True)
    assert schema.arrow_schema().field("rest").type == pa.string()
    assert schema.col_types()[-1] == "json"


def test_a_list_of_columns_becomes_a_tuple() -> None:
    schema = RouteSchema(list(COLUMNS), event_time=None)  # type: ignore[arg-type]
    assert schema.columns == COLUMNS


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"columns": ()}, "at least one column", id="no_columns"),
        pytest.param(
            {"columns": (ColumnSpec("a", "text"), ColumnSpec("a", "int64"))},
            "'a' is declared twice",
            id="duplicate",
        ),
        pytest.param(
            {"columns": (ColumnSpec("a", "varchar"),)}, "unknown type 'varchar'", id="bad_type"
        ),
        pytest.param({"columns": (ColumnSpec("", "text"),)}, "non-empty", id="empty_name"),
        pytest.param({"columns": (ColumnSpec("a\x00", "text"),)}, "NUL", id="nul_in_name"),
        pytest.param(
            {"columns": (ColumnSpec("x" * 64, "text"),)}, "longer than Postgres", id="long_name"
        ),
        pytest.param({"event_time": "nope"}, "event_time 'nope' is not", id="event_time_absent"),
        pytest.param(
            {"event_time": "user_id"}, "must be a timestamp column, not int64", id="event_time_type"
        ),
        pytest.param(
            {"unknown_fields": "keep", "keep_column": "amount"},
            "keep_column 'amount' clashes",
            id="keep_clash",
        ),
        pytest.param({"unknown_fields": "drop"}, "unknown_fields must be one of", id="bad_mode"),
    ],
)
def test_invalid_schema_names_the_problem(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"columns": COLUMNS, "event_time": None, **kwargs}
    with pytest.raises(ConfigError, match=message):
        RouteSchema(**args)  # type: ignore[arg-type]


def test_keep_column_may_share_a_name_when_not_keeping() -> None:
    RouteSchema((ColumnSpec("extra", "text"),), event_time=None, unknown_fields="ignore")


def test_create_table_sql() -> None:
    schema = RouteSchema(
        (ColumnSpec('we"ird', "text", nullable=False), ColumnSpec("ts", "timestamp")),
        event_time="ts",
        unknown_fields="keep",
    )
    assert schema.create_table_sql("ingest.events") == (
        'CREATE TABLE IF NOT EXISTS "ingest"."events" (\n'
        '    "we""ird" text NOT NULL,\n'
        '    "ts" timestamptz,\n'
        '    "extra" jsonb\n'
        ")"
    )


@pytest.mark.parametrize(
    ("name", "quoted"),
    [
        pytest.param("events", '"events"', id="plain"),
        pytest.param("Events", '"Events"', id="case_kept"),
        pytest.param('a"b', '"a""b"', id="quote"),
        pytest.param("s.t", '"s"."t"', id="schema_qualified"),
    ],
)
def test_quote_table(name: str, quoted: str) -> None:
    assert quote_table(name) == quoted


@pytest.mark.parametrize("name", ["", "a..b", ".b", "a.", "a.b.c"])
def test_quote_table_refuses_malformed_names(name: str) -> None:
    with pytest.raises(ConfigError):
        quote_table(name)


def test_quote_ident_refuses_nul() -> None:
    assert quote_ident("x y") == '"x y"'
    with pytest.raises(ConfigError):
        quote_ident("a\x00b")


@pytest.mark.parametrize(
    ("found", "problems"),
    [
        pytest.param(FOUND, [], id="match"),
        pytest.param([*FOUND, ("note", "text", True)], [], id="extra_nullable_column_is_fine"),
        pytest.param([(n, t, True) for n, t, _ in FOUND], [], id="table_nullable_where_we_are_not"),
        pytest.param(FOUND[1:], ["column 'event_id' is missing from the table"], id="missing"),
        pytest.param(
            [*FOUND[:4], ("payload", "json", True)],
            ["column 'payload' is json in the table, expected jsonb"],
            id="wrong_type",
        ),
        pytest.param(
            [*FOUND[:3], ("amount", "double precision", False), FOUND[4]],
            ["column 'amount' is NOT NULL in the table but declared nullable"],
            id="table_not_null",
        ),
        pytest.param(
            [*FOUND, ("id", "bigint", False)],
            ["table column 'id' is NOT NULL but not declared (the COPY would fail)"],
            id="extra_not_null_column",
        ),
    ],
)
def test_check_columns(found: list[tuple[str, str, bool]], problems: list[str]) -> None:
    assert RouteSchema(COLUMNS, event_time="ts").check_columns(found) == problems


def test_check_columns_covers_the_keep_column_and_every_type() -> None:
    types = ["text", "int16", "int32", "int64", "float32", "float64", "bool"]
    types += ["timestamp", "date", "uuid", "json"]
    schema = RouteSchema(
        tuple(ColumnSpec(t, t) for t in types), event_time=None, unknown_fields="keep"
    )
    pg = ["text", "smallint", "integer", "bigint", "real", "double precision", "boolean"]
    pg += ["timestamp with time zone", "date", "uuid", "jsonb"]
    found = [(t, p, True) for t, p in zip(types, pg, strict=True)]
    assert schema.check_columns(found) == ["column 'extra' is missing from the table"]
    assert schema.check_columns([*found, ("extra", "jsonb", True)]) == []
