"""The three servers are real and the clients we chose work against them."""

from __future__ import annotations

import datetime as dt
import io
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from tests.conftest import REPO

pytestmark = pytest.mark.integration


def test_kafka_group_consume_and_commit(
    kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=3)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    sent = {f"k{i}".encode(): f"v{i}".encode() for i in range(30)}
    for key, value in sent.items():
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()

    group = f"g_{uuid.uuid4().hex[:8]}"
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    got: dict[bytes, bytes] = {}
    partitions: set[int] = set()
    deadline = time.monotonic() + 60
    while len(got) < len(sent) and time.monotonic() < deadline:
        for tp, records in consumer.poll(timeout_ms=500).items():
            partitions.add(tp.partition)
            got.update((r.key, r.value) for r in records)
    consumer.commit()
    consumer.close()
    assert got == sent
    assert len(partitions) == 3, "keys should spread over all three partitions"

    reader = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group)
    tps = [TopicPartition(topic, p) for p in range(3)]
    committed = {tp.partition: reader.committed(tp) for tp in tps}
    ends = {tp.partition: off for tp, off in reader.end_offsets(tps).items()}
    reader.close()
    assert committed == ends
    assert sum(ends.values()) == len(sent)


def test_postgres_binary_copy_round_trip(pg_conn: psycopg.Connection, pg_schema: str) -> None:
    rows = [
        (1, "alpha", 1.5, dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC)),
        (2, "βeta ✓", -0.25, dt.datetime(1999, 12, 31, 23, 59, tzinfo=dt.UTC)),
        (3, None, None, None),
    ]
    table = f'"{pg_schema}".t'
    pg_conn.execute(f"CREATE TABLE {table} (id bigint, name text, x float8, ts timestamptz)")
    with pg_conn.cursor() as cur:
        with cur.copy(f"COPY {table} FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int8", "text", "float8", "timestamptz"])
            for row in rows:
                copy.write_row(row)
        got = cur.execute(f"SELECT id, name, x, ts FROM {table} ORDER BY id").fetchall()
    assert got == rows


def test_hdfs_parquet_write_list_rename_read(hdfs_client: object, hdfs_dir: str) -> None:
    client = hdfs_client
    table = pa.table({"id": pa.array(range(1000), pa.int64()), "s": [f"r{i}" for i in range(1000)]})
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    tmp, final = f"{hdfs_dir}/_tmp.parquet", f"{hdfs_dir}/part-0.parquet"
    client.write(tmp, data=buf.getvalue())  # type: ignore[attr-defined]
    assert client.list(hdfs_dir) == ["_tmp.parquet"]  # type: ignore[attr-defined]
    client.rename(tmp, final)  # type: ignore[attr-defined]
    assert client.list(hdfs_dir) == ["part-0.parquet"]  # type: ignore[attr-defined]
    with client.read(final) as reader:  # type: ignore[attr-defined]
        back = pq.read_table(io.BytesIO(reader.read()))
    assert back.equals(table)


def test_stack_up_twice_is_a_no_op(stack_env: dict[str, str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "stack", "up"], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert "already up, nothing to do" in out.stdout
    assert stack_env["PGPASSWORD"] not in out.stdout
