"""PostgresCopySink: binary COPY of each batch plus its next offset, in one transaction.

Exactly-once: the offsets table row of (table, topic, partition) is locked (``FOR UPDATE``)
inside the same transaction as the COPY, rows below its ``next_offset`` are skipped, and the
row is advanced before the commit. A replay, a zombie writer after a rebalance, or a crash
at any point therefore leaves every row stored once.

Poison rows (a check constraint, a value Postgres refuses) make the COPY fail as a whole;
the batch is then split in halves under savepoints until the refused rows stand alone.
They go to the dead-letter callback (acknowledged) before the commit; the rest is loaded.
"""

from __future__ import annotations

import contextlib
import logging
import time

import psycopg
import pyarrow as pa
from psycopg import errors as pgerr

from batcher.crashpoints import crash_point
from batcher.errors import FatalError, SchemaMismatch, SinkUnavailable
from batcher.schema import RouteSchema, quote_table
from sinks.base import Batch, DeadLetterFn, RejectedRow, TopicPartition
from sinks.pgcopy import encode_copy_binary

log = logging.getLogger("sinks.postgres")

# Errors that say "this data", not "this server": split the batch and dead-letter the rows.
_POISON = (pgerr.DataError, pgerr.IntegrityError)
_REASONS: dict[type[Exception], str] = {
    pgerr.CheckViolation: "pg_check_violation",
    pgerr.NotNullViolation: "pg_not_null_violation",
    pgerr.UniqueViolation: "pg_unique_violation",
    pgerr.ForeignKeyViolation: "pg_foreign_key_violation",
}


def _reason(exc: Exception) -> str:
    for cls, label in _REASONS.items():
        if isinstance(exc, cls):
            return label
    return "pg_rejected"


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


class PostgresCopySink:
    """One route's table; one connection, used from one worker thread."""

    def __init__(
        self,
        table: str,
        schema: RouteSchema,
        conninfo: str,
        password: str | None,
        offsets_table: str = "batcher_offsets",
        connect_timeout_s: float = 10,
    ) -> None:
        self.name = "postgres"
        self.table = table
        self.schema = schema
        self._conninfo = conninfo
        self._password = password
        self._offsets_table = quote_table(offsets_table)
        self._connect_timeout = max(1, int(connect_timeout_s))
        self._types = schema.col_types()
        self._copy_sql = f"COPY {quote_table(table)} FROM STDIN (FORMAT BINARY)"
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None

    # -- connection -------------------------------------------------------------------
    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        self._drop_connection()
        try:
            conn = psycopg.connect(
                self._conninfo,
                password=self._password,
                connect_timeout=self._connect_timeout,
                application_name="batcher",
                # autocommit: every `with conn.transaction()` is then a real BEGIN/COMMIT,
                # never a savepoint inside a transaction some earlier query left open.
                autocommit=True,
            )
        except psycopg.OperationalError as exc:
            raise SinkUnavailable(self.name, _first_line(exc)) from exc
        self._conn = conn
        return conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
        self._conn = None

    def _unavailable(self, exc: Exception) -> SinkUnavailable:
        self._drop_connection()
        return SinkUnavailable(self.name, _first_line(exc))

    # -- contract ---------------------------------------------------------------------
    def setup(self) -> None:
        """Create the offsets table and the target table if missing; check it if present."""
        conn = self._connect()
        try:
            with conn.transaction():
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {self._offsets_table} ("
                    " target text NOT NULL, topic text NOT NULL, partition integer NOT NULL,"
                    " next_offset bigint NOT NULL, updated_at timestamptz NOT NULL DEFAULT now(),"
                    " PRIMARY KEY (target, topic, partition))"
                )
                found = self._table_columns(conn)
                if not found:
                    conn.execute(self.schema.create_table_sql(self.table))
                    log.info("created table %s", self.table, extra={"table": self.table})
        except psycopg.OperationalError as exc:
            raise self._unavailable(exc) from exc
        except psycopg.Error as exc:
            raise FatalError(f"postgres setup of {self.table} failed: {_first_line(exc)}") from exc
        if found:
            problems = self.schema.check_columns(found)
            if problems:
                raise SchemaMismatch(
                    f"table {self.table} does not match the route's columns: "
                    + "; ".join(problems)
                    + " (alter the table, or fix the route's columns in the config)"
                )

    def _table_columns(
        self, conn: psycopg.Connection[tuple[object, ...]]
    ) -> list[tuple[str, str, bool]]:
        schema_name, _, table_name = self.table.rpartition(".")
        rows = conn.execute(
            "SELECT column_name, data_type, is_nullable = 'YES' FROM information_schema.columns"
            " WHERE table_schema = coalesce(nullif(%s, ''), current_schema())"
            " AND table_name = %s ORDER BY ordinal_position",
            (schema_name, table_name),
        ).fetchall()
        return [(str(n), str(t), bool(nl)) for n, t, nl in rows]

    def check(self) -> list[str]:
        """Problems with the target table (empty if it matches or does not exist yet)."""
        conn = self._connect()
        try:
            found = self._table_columns(conn)
        except psycopg.OperationalError as exc:
            raise self._unavailable(exc) from exc
        return self.schema.check_columns(found) if found else []

    def durable_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        conn = self._connect()
        try:
            rows = conn.execute(
                f"SELECT topic, partition, next_offset FROM {self._offsets_table}"
                " WHERE target = %s",
                (self.table,),
            ).fetchall()
        except psycopg.errors.UndefinedTable:
            return {}
        except psycopg.OperationalError as exc:
            raise self._unavailable(exc) from exc
        wanted = set(tps)
        out = {TopicPartition(str(t), int(p)): int(n) for t, p, n in rows}  # type: ignore[call-overload]
        return {tp: off for tp, off in out.items() if tp in wanted}

    def recover(self, tps: list[TopicPartition]) -> None:
        """Nothing to do: a transaction is all or nothing."""

    def write(self, batch: Batch, dead_letter: DeadLetterFn) -> int:
        t0 = time.monotonic()
        conn = self._connect()
        try:
            with conn.transaction():
                durable = self._lock_offset(conn, batch.tp)
                if batch.next_offset <= durable:
                    return 0
                todo = batch.from_offset(durable)
                rejected = self._copy_isolating(conn, todo.records, todo.offsets)
                if rejected:
                    dead_letter(batch.tp, rejected)
                conn.execute(
                    f"UPDATE {self._offsets_table} SET next_offset = %s, updated_at = now()"
                    " WHERE target = %s AND topic = %s AND partition = %s",
                    (batch.next_offset, self.table, batch.tp.topic, batch.tp.partition),
                )
                crash_point("after_copy_before_pg_commit")
            crash_point("after_pg_commit")
        except psycopg.OperationalError as exc:
            raise self._unavailable(exc) from exc
        except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn) as exc:
            raise SchemaMismatch(f"{self.table}: {_first_line(exc)}") from exc
        except psycopg.InterfaceError as exc:
            raise self._unavailable(exc) from exc
        rows = todo.num_rows - len(rejected)
        log.info(
            "postgres flush %s offsets %d..%d rows=%d rejected=%d in %.3fs",
            batch.tp,
            todo.first_offset,
            batch.next_offset - 1,
            rows,
            len(rejected),
            time.monotonic() - t0,
            extra={
                "sink": self.name,
                "topic": batch.tp.topic,
                "partition": batch.tp.partition,
                "first_offset": todo.first_offset,
                "last_offset": batch.next_offset - 1,
                "rows": rows,
            },
        )
        return rows

    def _lock_offset(self, conn: psycopg.Connection[tuple[object, ...]], tp: TopicPartition) -> int:
        key = (self.table, tp.topic, tp.partition)
        conn.execute(
            f"INSERT INTO {self._offsets_table} (target, topic, partition, next_offset)"
            " VALUES (%s, %s, %s, 0) ON CONFLICT DO NOTHING",
            key,
        )
        row = conn.execute(
            f"SELECT next_offset FROM {self._offsets_table}"
            " WHERE target = %s AND topic = %s AND partition = %s FOR UPDATE",
            key,
        ).fetchone()
        assert row is not None
        return int(str(row[0]))

    def _copy(self, conn: psycopg.Connection[tuple[object, ...]], records: pa.Table) -> None:
        data = encode_copy_binary(records, self._types)
        with conn.cursor().copy(self._copy_sql) as copy:
            copy.write(data)

    def _copy_isolating(
        self,
        conn: psycopg.Connection[tuple[object, ...]],
        records: pa.Table,
        offsets: pa.Array,
    ) -> list[RejectedRow]:
        """COPY ``records`` under a savepoint; on a poison error, bisect to the bad rows."""
        if records.num_rows == 0:
            return []
        try:
            with conn.transaction():
                self._copy(conn, records)
            return []
        except _POISON as exc:
            if records.num_rows == 1:
                return [RejectedRow(int(offsets[0].as_py()), _reason(exc), _first_line(exc))]
        half = records.num_rows // 2
        return self._copy_isolating(
            conn, records.slice(0, half), offsets.slice(0, half)
        ) + self._copy_isolating(conn, records.slice(half), offsets.slice(half))

    def close(self) -> None:
        self._drop_connection()
