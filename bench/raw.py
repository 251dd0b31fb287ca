"""Raw stage limits, in this process, on the preloaded topic and the same rows.

- ``kafka``: kafka-python reading the whole topic (all partitions assigned, no group) with the
  daemon's fetch settings, counting records and doing nothing else; then again, as an
  ``info`` row, with the batcher's record reader (batcher/kafka_records.py) swapped in.
- ``kafka_confluent``: the same with confluent-kafka (librdkafka), the optional backend; and an
  ``info`` row for what the daemon's main thread does with it alone, sinks aside: the
  backend's ``poll`` (records grouped per partition) and the decode into Arrow.
- ``copy``: the rows decoded once (``RecordDecoder``, untimed), then ``encode_copy_binary`` and
  ``copy.write`` of every row into a normal (logged) table, one transaction per 100k rows
  (the Postgres sink's default flush), timed with the commits.
- ``parquet``: the same decoded rows in one slice per Kafka partition, split by event date,
  ``encode_parquet`` (zstd) and written through WebHDFS (``HdfsStore``, the sink's client).

The decode itself is timed too and reported as an ``info`` row: it is not a stage limit the
brief asks for, but it is where much of the batcher's own CPU goes.
"""

from __future__ import annotations

import time

import pyarrow as pa
from kafka import KafkaConsumer, TopicPartition

from batcher import kafka_records
from batcher.config import KafkaConfig
from batcher.confluent_consumer import ConfluentConsumer, confluent_config
from batcher.decode import RecordDecoder
from batcher.schema import quote_table
from bench.common import (
    EVENT_TIME,
    PARTITIONS,
    PG_SCHEMA,
    SCHEMA,
    Result,
    ServerCpu,
    Stack,
    log,
    measured,
)
from bench.preload import Preloaded
from sinks.hdfs import HdfsStore
from sinks.parquet import encode_parquet, split_by_date
from sinks.pgcopy import encode_copy_binary

COPY_ROWS = 100_000  # rows per COPY transaction: config/local.toml's postgres.flush.max_rows
DECODE_ROWS = 10_000  # rows per decode call: the daemon's max_poll_records


def kafka_consume(
    stack: Stack, data: Preloaded, servers: ServerCpu, fast_reader: bool = False
) -> Result:
    """kafka-python alone: fetch and count every record of the topic; with ``fast_reader``,
    through the batcher's record reader (batcher/kafka_records.py) instead of its own."""
    if fast_reader:
        kafka_records.install()
    try:
        return _kafka_consume(stack, data, servers, fast_reader)
    finally:
        kafka_records.uninstall()


def _kafka_consume(stack: Stack, data: Preloaded, servers: ServerCpu, fast: bool) -> Result:
    defaults = KafkaConfig(bootstrap_servers=stack.bootstrap)
    consumer = KafkaConsumer(
        bootstrap_servers=stack.bootstrap,
        client_id="bench-raw",
        group_id=None,
        enable_auto_commit=False,
        fetch_max_bytes=defaults.fetch_max_bytes,
        max_partition_fetch_bytes=defaults.max_partition_fetch_bytes,
        max_poll_records=defaults.max_poll_records,
    )
    if fast:
        label = "info: kafka-python consume, the batcher's record reader"
        result = Result("kafka_fast", "info", label, 0, 0.0, data.value_bytes)
    else:
        result = Result("kafka", "raw", "raw: kafka-python consume", 0, 0.0, data.value_bytes)
    try:
        tps = [TopicPartition(data.topic, p) for p in consumer.partitions_for_topic(data.topic)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        total = sum(consumer.end_offsets(tps).values())
        count = 0
        with measured(result, servers):
            while count < total:
                polled = consumer.poll(timeout_ms=200, max_records=defaults.max_poll_records)
                for batch in polled.values():
                    count += len(batch)
        result.events = count
    finally:
        consumer.close()
    return result


def _confluent_from_start(stack: Stack, topic: str) -> ConfluentConsumer:
    """The daemon's confluent consumer (its librdkafka settings), with every partition of
    ``topic`` assigned from the beginning: no group, so no rebalance to wait for."""
    import confluent_kafka as ck

    cfg = KafkaConfig(bootstrap_servers=stack.bootstrap, group_id="bench-raw")
    consumer = ConfluentConsumer({**confluent_config(cfg, {}), "enable.partition.eof": False})
    consumer._consumer.assign(
        [ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in range(PARTITIONS)]
    )
    return consumer


def confluent_consume(stack: Stack, data: Preloaded, servers: ServerCpu) -> Result:
    """confluent-kafka alone: fetch and count every record of the topic."""
    consumer = _confluent_from_start(stack, data.topic)
    client = consumer._consumer
    max_records = KafkaConfig(bootstrap_servers=stack.bootstrap).max_poll_records
    label = "raw: confluent-kafka consume"
    result = Result("kafka_confluent", "raw", label, 0, 0.0, data.value_bytes)
    try:
        count = 0
        with measured(result, servers):
            while count < data.events:
                count += len(client.consume(max_records, 0.2))
        result.events = count
    finally:
        client.close()
    return result


def confluent_main_thread(stack: Stack, data: Preloaded, servers: ServerCpu) -> Result:
    """The daemon's main-thread work without sinks: ConfluentConsumer.poll, then decode."""
    consumer = _confluent_from_start(stack, data.topic)
    max_records = KafkaConfig(bootstrap_servers=stack.bootstrap).max_poll_records
    decoder = RecordDecoder(SCHEMA)
    label = "info: confluent poll + decode (main thread, no sinks)"
    result = Result("main_confluent", "info", label, 0, 0.0, data.value_bytes)
    try:
        count = 0
        with measured(result, servers):
            while count < data.events:
                for records in consumer.poll(0.2, max_records).values():
                    count += decoder.decode(records.values, records.offsets).records.num_rows
        result.events = count
    finally:
        consumer._consumer.close()
    return result


def decode_all(data: Preloaded, servers: ServerCpu) -> tuple[list[pa.RecordBatch], Result]:
    """The preloaded values as Arrow, in poll-sized calls (timed as an info row)."""
    decoder = RecordDecoder(SCHEMA)
    batches: list[pa.RecordBatch] = []
    values = data.values
    result = Result("decode", "info", "info: decode (msgspec -> Arrow)", 0, 0.0, data.value_bytes)
    with measured(result, servers):
        for start in range(0, len(values), DECODE_ROWS):
            chunk = values[start : start + DECODE_ROWS]
            decoded = decoder.decode(chunk, range(start, start + len(chunk)))
            if decoded.rejects:
                raise SystemExit(f"bench: {len(decoded.rejects)} synthetic events rejected")
            batches.append(decoded.records)
    result.events = sum(b.num_rows for b in batches)
    return batches, result


def pg_copy(stack: Stack, table: pa.Table, servers: ServerCpu, run_id: str) -> Result:
    """Binary COPY of all rows into a fresh normal table, COPY_ROWS per transaction."""
    name = f"{PG_SCHEMA}.raw_copy_{run_id}"
    col_types = SCHEMA.col_types()
    copy_sql = f"COPY {quote_table(name)} FROM STDIN (FORMAT BINARY)"
    result = Result("copy", "raw", "raw: Postgres binary COPY", table.num_rows, 0.0, 0)
    encode_s = 0.0
    with stack.connect() as conn:
        conn.execute(SCHEMA.create_table_sql(name))
        chunks = table.to_batches(max_chunksize=COPY_ROWS)
        with measured(result, servers):
            for chunk in chunks:
                t0 = time.perf_counter()
                payload = encode_copy_binary(chunk, col_types)
                encode_s += time.perf_counter() - t0
                with conn.transaction(), conn.cursor().copy(copy_sql) as copy:
                    copy.write(payload)
        stored = conn.execute(f"SELECT count(*) FROM {quote_table(name)}").fetchone()
        conn.execute(f"DROP TABLE {quote_table(name)}")
    result.extra = {"table": name, "rows_per_copy": COPY_ROWS, "encode_s": round(encode_s, 3)}
    if stored is None or stored[0] != table.num_rows:
        result.ok, result.note = False, f"table holds {stored} rows"
    return result


def parquet_hdfs(
    stack: Stack, table: pa.Table, servers: ServerCpu, run_id: str, partitions: int
) -> Result:
    """zstd Parquet of all rows, one file per partition-sized slice and event date, uploaded
    through WebHDFS."""
    root = f"/bench/{run_id}/raw"
    store = HdfsStore.connect(stack.hdfs_url, stack.hdfs_user)
    per_file = -(-table.num_rows // partitions)
    result = Result("parquet", "raw", "raw: Parquet zstd + WebHDFS", table.num_rows, 0.0, 0)
    encode_s, nbytes, files = 0.0, 0, 0
    try:
        store.makedirs(root)
        with measured(result, servers):
            for i in range(partitions):
                rows = table.slice(i * per_file, per_file).combine_chunks().to_batches()
                if not rows:
                    continue
                for date, part in split_by_date(rows[0], EVENT_TIME):
                    t0 = time.perf_counter()
                    blob = encode_parquet(part, "zstd")
                    encode_s += time.perf_counter() - t0
                    store.write(f"{root}/dt={date}/part-{i}.parquet", blob)
                    nbytes, files = nbytes + len(blob), files + 1
        store.delete(f"/bench/{run_id}")
    finally:
        store.close()
    result.extra = {"files": files, "parquet_bytes": nbytes, "encode_s": round(encode_s, 3)}
    return result


def run(
    stack: Stack,
    data: Preloaded,
    servers: ServerCpu,
    run_id: str,
    only: set[str],
    partitions: int,
) -> list[Result]:
    results: list[Result] = []
    if "kafka" in only:
        log("raw: kafka-python consuming the whole topic")
        results.append(kafka_consume(stack, data, servers))
        log("raw: kafka-python again, with the batcher's record reader")
        results.append(kafka_consume(stack, data, servers, fast_reader=True))
    if "kafka_confluent" in only:
        log("raw: confluent-kafka consuming the whole topic, then poll + decode")
        results.append(confluent_consume(stack, data, servers))
        results.append(confluent_main_thread(stack, data, servers))
    if only & {"copy", "parquet"}:
        log("raw: decoding the rows once (timed as info)")
        batches, decode = decode_all(data, servers)
        results.append(decode)
        table = pa.Table.from_batches(batches, schema=SCHEMA.arrow_schema())
        del batches
        if "copy" in only:
            log("raw: binary COPY into Postgres")
            results.append(pg_copy(stack, table, servers, run_id))
            results[-1].value_bytes = data.value_bytes
        if "parquet" in only:
            log("raw: Parquet + WebHDFS")
            results.append(parquet_hdfs(stack, table, servers, run_id, partitions))
            results[-1].value_bytes = data.value_bytes
    for r in results:
        log(f"  {r.label}: {r.events_per_s:,.0f} events/s in {r.seconds:.2f} s")
    return results
