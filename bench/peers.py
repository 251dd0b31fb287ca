"""Peers on the same topic and the same table shape, each run as a subprocess:

- ``naive``: what one writes first. kafka-python in a consumer group, ``json.loads`` to
  dicts, ``executemany`` INSERT (psycopg 3) per 10k rows, commit to Postgres, then commit
  the Kafka offsets.
- ``quix``: Quix Streams (``quixstreams``) with its community ``PostgreSQLSink``, as its
  documentation shows it: a JSON topic, ``sdf.sink(sink)``, default checkpointing (every
  5 s: the sink's batch is written, then offsets are committed). The table is created by us
  with the batcher's column types; ``include_metadata=False`` so no ``__key`` / ``timestamp``
  columns are added and ``schema_auto_update=False`` so it does not ALTER it.

Each runs until all N rows are in its table (see ``RowProbe``: Kafka commits as the cheap
lower bound, then ``count(*)``) or its time budget runs out, in which case the rate is
extrapolated from the rows it had stored by then.

Run one peer by hand: ``python -m bench.peers naive --topic T --table bench.t --group g``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
import uuid
from contextlib import suppress
from pathlib import Path
from types import FrameType
from typing import Any

from batcher.schema import quote_table
from bench.child import Child
from bench.common import (
    COLUMN_NAMES,
    PG_SCHEMA,
    SCHEMA,
    Result,
    ServerCpu,
    Stack,
    apply_server_cpu,
    log,
)
from bench.endtoend import CommitProbe
from bench.preload import Preloaded

NAIVE_BATCH = 10_000
LABELS = {
    "naive": "peer: naive (json.loads + executemany)",
    "quix": "peer: Quix Streams PostgreSQLSink",
}


# -- the peers themselves (run in the subprocess) ---------------------------------------


def _stopper() -> list[bool]:
    stop = [False]

    def handler(signum: int, frame: FrameType | None) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def run_naive(stack: Stack, topic: str, table: str, group: str) -> None:
    import psycopg
    from kafka import KafkaConsumer
    from psycopg.types.json import Jsonb

    stop = _stopper()
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=stack.bootstrap,
        group_id=group,
        client_id="bench-naive",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=NAIVE_BATCH,
    )
    columns = ", ".join(COLUMN_NAMES)
    marks = ", ".join(["%s"] * len(COLUMN_NAMES))
    insert = f"INSERT INTO {quote_table(table)} ({columns}) VALUES ({marks})"
    pending: list[tuple[Any, ...]] = []
    with psycopg.connect(stack.conninfo(), password=stack.pg_password) as conn:
        while not stop[0]:
            polled = consumer.poll(timeout_ms=200, max_records=NAIVE_BATCH)
            for records in polled.values():
                for record in records:
                    e = json.loads(record.value)
                    pending.append(
                        (
                            e["event_id"],
                            e["ts"],
                            e["user_id"],
                            e["event_type"],
                            e.get("amount"),
                            e.get("country"),
                            Jsonb(e.get("payload")),
                        )
                    )
            if len(pending) >= NAIVE_BATCH or (pending and not polled):
                with conn.cursor() as cur:
                    cur.executemany(insert, pending)
                conn.commit()
                consumer.commit()
                pending.clear()
    consumer.close()


def run_quix(stack: Stack, topic: str, table: str, group: str, state_dir: str) -> None:
    from quixstreams import Application
    from quixstreams.sinks.community.postgresql import PostgreSQLSink

    schema_name, _, table_name = table.rpartition(".")
    app = Application(
        broker_address=stack.bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        state_dir=state_dir,
        loglevel="WARNING",
    )
    sink = PostgreSQLSink(
        host=stack.pg_host,
        port=stack.pg_port,
        dbname=stack.pg_database,
        user=stack.pg_user,
        password=stack.pg_password,
        table_name=table_name,
        schema_name=schema_name or "public",
        schema_auto_update=False,
        include_metadata=False,
    )
    sdf = app.dataframe(app.topic(topic, value_deserializer="json"))
    sdf.sink(sink)
    app.run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__)
    parser.add_argument("peer", choices=["naive", "quix"])
    parser.add_argument("--topic", required=True)
    parser.add_argument("--table", required=True, help="schema.table, created beforehand")
    parser.add_argument("--group", required=True)
    parser.add_argument("--state-dir", default=None, help="Quix's state directory")
    args = parser.parse_args(argv)
    stack = Stack.load()
    if args.peer == "naive":
        run_naive(stack, args.topic, args.table, args.group)
    else:
        run_quix(
            stack,
            args.topic,
            args.table,
            args.group,
            args.state_dir or tempfile.mkdtemp(prefix="bench-quix-"),
        )
    return 0


# -- measuring them (in the bench process) ----------------------------------------------


class RowProbe:
    """Rows in the peer's table, cheaply.

    ``count(*)`` over a million rows costs the server ~0.1 s of CPU, and polled every 0.2 s
    it would take a third of a core away from the peer on a 2-core machine. Both peers
    commit their Kafka offsets only after their rows are committed in Postgres, so until
    the group's commits cover ``near`` of the topic (or the budget is nearly spent) progress
    is read from those commits, a lower bound of the rows stored; from then on it is
    ``count(*)``, and the run ends when that reaches N. The backend of this connection is
    left out of the server CPU."""

    def __init__(
        self, stack: Stack, table: str, commits: CommitProbe, budget_s: float, near: float = 0.95
    ) -> None:
        self._conn = stack.connect()
        row = self._conn.execute("SELECT pg_backend_pid()").fetchone()
        self.backend = int(row[0]) if row else -1
        self._sql = f"SELECT count(*) FROM {quote_table(table)}"
        self._commits = commits
        self._near = near * commits.total
        self._switch_at = time.perf_counter() + budget_s - 3.0
        self.counting = False
        self.counts = 0

    def progress(self) -> int:
        if not self.counting:
            committed = self._commits.committed()
            if committed < self._near and time.perf_counter() < self._switch_at:
                return committed
            self.counting = True
        return self.count()

    def count(self) -> int:
        row = self._conn.execute(self._sql).fetchone()
        self.counts += 1
        return int(row[0]) if row else 0

    def exclude(self) -> set[int]:
        return {self.backend}

    def close(self) -> None:
        self._conn.close()
        self._commits.close()


def run_peer(
    name: str,
    stack: Stack,
    data: Preloaded,
    servers: ServerCpu,
    run_id: str,
    budget_s: float,
    workdir: Path,
    keep: bool,
) -> Result:
    table = f"{PG_SCHEMA}.peer_{name}_{run_id}"
    group = f"bench_{name}_{uuid.uuid4().hex[:8]}"
    with stack.connect() as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {PG_SCHEMA}")
        conn.execute(SCHEMA.create_table_sql(table))
    argv = ["bench.peers", name, "--topic", data.topic, "--table", table, "--group", group]
    if name == "quix":
        argv += ["--state-dir", str(workdir / "quix-state")]
    child = Child.python(argv, stack.child_env(), workdir / f"peer-{name}.log")
    probe = RowProbe(stack, table, CommitProbe(stack, data.topic, group), budget_s)
    try:
        outcome = child.watch(probe.progress, data.events, budget_s, servers, exclude=probe.exclude)
        stored = probe.count()
    finally:
        probe.close()
        if child.alive():
            child.stop()
    rows = outcome.progress
    result = Result(
        name,
        "peer",
        LABELS[name],
        rows,
        outcome.seconds,
        int(data.value_bytes * rows / max(data.events, 1)),
        client_cpu_s=outcome.cpu_s,
        peak_rss_bytes=outcome.peak_rss,
    )
    apply_server_cpu(result, outcome.servers)
    result.extra = {
        "count_queries": probe.counts,
        "table": table,
        "group": group,
        "rows_after_stop": stored,
        "log": str(child.log_path),
    }
    if outcome.exited is not None:
        result.ok = False
        result.note = f"exited with {outcome.exited} after {rows} rows: " + _last_error(child)
    elif not outcome.done:
        result.extrapolated = True
        result.note = (
            f"capped at {budget_s:.0f} s: {rows:,} of {data.events:,} rows stored; "
            "rate extrapolated from them"
        )
    if not keep:
        with suppress(Exception), stack.connect() as conn:
            conn.execute(f"DROP TABLE IF EXISTS {quote_table(table)}")
    return result


def _last_error(child: Child) -> str:
    lines = [ln.strip() for ln in child.log_tail(40).splitlines() if ln.strip()]
    for line in reversed(lines):
        if "Error" in line or "Exception" in line:
            return line[:300]
    return lines[-1][:300] if lines else "no output"


def run(
    stack: Stack,
    data: Preloaded,
    servers: ServerCpu,
    run_id: str,
    only: set[str],
    budget_s: float,
    keep: bool = False,
) -> list[Result]:
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{run_id}-peers-"))
    results: list[Result] = []
    for name in ("naive", "quix"):
        if name not in only:
            continue
        log(f"{LABELS[name]} (budget {budget_s:.0f} s)")
        try:
            result = run_peer(name, stack, data, servers, run_id, budget_s, workdir, keep)
        except Exception as exc:  # report and keep going, as the brief asks
            result = Result(
                name,
                "peer",
                LABELS[name],
                0,
                0.0,
                0,
                ok=False,
                note=f"could not run: {type(exc).__name__}: {exc}",
            )
        log(
            f"  {result.events_per_s:,.0f} events/s ({result.events:,} rows in "
            f"{result.seconds:.1f} s)" + (f"  NOTE: {result.note}" if result.note else "")
        )
        results.append(result)
    return results


if __name__ == "__main__":
    sys.exit(main())
