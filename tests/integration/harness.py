"""Run the real batcher daemon as a subprocess against the local stack, and read the sinks.

Every test builds its own config (own topic, schema-qualified table, HDFS directory, group
and metrics port), so tests are independent and can run in any order.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from tests.conftest import REPO

COLUMNS = """columns = [
  { name = "event_id",   type = "uuid",      nullable = false },
  { name = "ts",         type = "timestamp", nullable = false },
  { name = "user_id",    type = "int64",     nullable = false },
  { name = "event_type", type = "text",      nullable = false },
  { name = "amount",     type = "float64" },
  { name = "country",    type = "text" },
  { name = "payload",    type = "json" },
]"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(cond: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    """Poll ``cond`` until truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@dataclass
class Pipeline:
    """One test's topic, table, HDFS dir and config file."""

    env: dict[str, str]
    tmp: Path
    topic: str
    schema: str
    hdfs_dir: str
    pg_flush: str = "{ max_rows = 5000, max_bytes = 16777216, max_age_s = 1 }"
    hdfs_flush: str = "{ max_rows = 20000, max_bytes = 33554432, max_age_s = 2 }"
    extra: str = ""
    group: str = field(default_factory=lambda: f"g_{uuid.uuid4().hex[:8]}")
    port: int = field(default_factory=free_port)
    route_extra: str = ""
    kafka_extra: str = ""
    _kafka: KafkaConsumer | None = None

    @property
    def table(self) -> str:
        return f"{self.schema}.events"

    def conninfo(self) -> str:
        e = self.env
        return f"host={e['PGHOST']} port={e['PGPORT']} user={e['PGUSER']} dbname={e['PGDATABASE']}"

    def write_config(self) -> Path:
        path = self.tmp / f"batcher-{self.group}.toml"
        path.write_text(
            f"""
log_level = "INFO"
{self.extra}
[kafka]
bootstrap_servers = "{self.env["KAFKA_BOOTSTRAP"]}"
group_id = "{self.group}"
session_timeout_ms = 6000
heartbeat_interval_ms = 1000
max_poll_interval_ms = 60000
{self.kafka_extra}
[postgres]
conninfo = "{self.conninfo()}"
flush = {self.pg_flush}
[hdfs]
url = "{self.env["HDFS_URL"]}"
user = "{self.env["HDFS_USER"]}"
flush = {self.hdfs_flush}
[limits]
memory_budget_bytes = 134217728
revoke_budget_s = 5
shutdown_budget_s = 30
retry_initial_s = 0.2
retry_max_s = 2
[metrics]
port = {self.port}
[[routes]]
topic = "{self.topic}"
table = "{self.table}"
hdfs_dir = "{self.hdfs_dir}"
event_time = "ts"
{self.route_extra}
{COLUMNS}
"""
        )
        return path

    def start(self, extra_env: dict[str, str] | None = None) -> BatcherProcess:
        return BatcherProcess.start(self.write_config(), self.tmp, extra_env)

    # -- reading what landed ----------------------------------------------------------
    def pg_event_ids(self) -> list[str]:
        with psycopg.connect(pg_dsn(self.env)) as conn:
            try:
                rows = conn.execute(f'SELECT event_id::text FROM "{self.schema}".events').fetchall()
            except psycopg.errors.UndefinedTable:
                return []
        return [r[0] for r in rows]

    def hdfs_table(self, client: Any) -> pa.Table:
        tables = []
        for path in parquet_files(client, self.hdfs_dir):
            with client.read(path) as reader:
                tables.append(pq.read_table(io.BytesIO(reader.read())))
        if not tables:
            return pa.table({"event_id": pa.array([], pa.string())})
        return pa.concat_tables(tables, promote_options="default")

    def _reader(self) -> KafkaConsumer:
        """One consumer that never joins the group: reads its commits and the log ends."""
        if self._kafka is None:
            self._kafka = KafkaConsumer(
                bootstrap_servers=self.env["KAFKA_BOOTSTRAP"],
                group_id=self.group,
                enable_auto_commit=False,
            )
        return self._kafka

    def close(self) -> None:
        if self._kafka is not None:
            self._kafka.close()
            self._kafka = None

    def committed(self) -> dict[int, int | None]:
        consumer = self._reader()
        parts = consumer.partitions_for_topic(self.topic) or set()
        return {p: consumer.committed(TopicPartition(self.topic, p)) for p in parts}

    def end_offsets(self) -> dict[int, int]:
        consumer = self._reader()
        parts = consumer.partitions_for_topic(self.topic) or set()
        tps = [TopicPartition(self.topic, p) for p in parts]
        return {tp.partition: off for tp, off in consumer.end_offsets(tps).items()}

    def all_committed(self) -> bool:
        ends = self.end_offsets()
        return bool(ends) and self.committed() == ends


def dead_letters(p: Pipeline) -> list[Any]:
    """Everything in the pipeline topic's dead-letter topic, read from the beginning."""
    consumer = KafkaConsumer(
        p.topic + ".dlq",
        bootstrap_servers=p.env["KAFKA_BOOTSTRAP"],
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
        group_id=f"dlq-{uuid.uuid4().hex[:6]}",
    )
    letters = list(consumer)
    consumer.close()
    return letters


def parquet_files(client: Any, root: str) -> list[str]:
    out = []
    for dirpath, _dirs, files in client.walk(root):
        if "/_tmp" in dirpath or "/_staged" in dirpath:
            continue
        out += [f"{dirpath}/{f}" for f in files if f.endswith(".parquet")]
    return out


def pg_dsn(env: dict[str, str]) -> str:
    return (
        f"host={env['PGHOST']} port={env['PGPORT']} user={env['PGUSER']} "
        f"dbname={env['PGDATABASE']} password={env['PGPASSWORD']}"
    )


def produce(bootstrap: str, topic: str, items: Iterable[tuple[bytes | None, bytes]]) -> int:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                             batch_size=262144)  # fmt: skip
    n = 0
    for key, value in items:
        producer.send(topic, key=key, value=value)
        n += 1
    producer.flush()
    producer.close()
    return n


@dataclass
class BatcherProcess:
    proc: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(
        cls, config: Path, tmp: Path, extra_env: dict[str, str] | None = None
    ) -> BatcherProcess:
        log = tmp / f"batcher-{uuid.uuid4().hex[:6]}.log"
        env = {**os.environ, **(extra_env or {})}
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "batcher.cli", "run", "-c", str(config)],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return cls(proc, log)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def metrics(self, port: int) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    def terminate(self, timeout: float = 60) -> int:
        # A signal before the daemon installed its handlers would be the default kill.
        wait_for(lambda: not self.alive() or "consuming" in self.output(), 60, "daemon started")
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(30)

    def alive(self) -> bool:
        return self.proc.poll() is None
