"""Step 1: a fresh topic with N synthetic events (``ingest.synthetic.records``), not measured.

The values are kept in memory: the raw COPY and Parquet stages reuse exactly these rows.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, UnknownTopicOrPartitionError

from bench.common import PARTITIONS, Stack, log
from ingest.synthetic import records

SEED = 20240501


@dataclass
class Preloaded:
    topic: str
    events: int
    value_bytes: int
    values: list[bytes]
    seconds: float

    @property
    def mean_bytes(self) -> float:
        return self.value_bytes / self.events if self.events else 0.0


def create_topic(stack: Stack, topic: str, partitions: int = PARTITIONS) -> None:
    admin = KafkaAdminClient(bootstrap_servers=stack.bootstrap, client_id="bench")
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()
    consumer = KafkaConsumer(bootstrap_servers=stack.bootstrap)
    try:
        deadline = time.monotonic() + 30
        while len(consumer.partitions_for_topic(topic) or ()) < partitions:
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: topic {topic} did not get {partitions} partitions")
            time.sleep(0.2)
    finally:
        consumer.close()


def delete_topics(stack: Stack, topics: list[str]) -> None:
    admin = KafkaAdminClient(bootstrap_servers=stack.bootstrap, client_id="bench")
    try:
        admin.delete_topics(topics)
    except UnknownTopicOrPartitionError:
        pass
    except KafkaError as exc:
        log(f"could not delete topics {topics}: {exc}")
    finally:
        admin.close()


def end_offsets(stack: Stack, topic: str) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=stack.bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        return {tp.partition: int(off) for tp, off in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def preload(stack: Stack, topic: str, n: int) -> Preloaded:
    """Create ``topic`` and produce ``n`` events to it (keyed by user_id, as emitters do).

    Producer: 1 MiB batches, 50 ms linger, no compression. confluent-kafka (installed with
    the bench group, as a dependency of quixstreams) when importable, with kafka-python's
    murmur2 partitioner so keys land where kafka-python would put them; kafka-python's own
    ``KafkaProducer`` otherwise, which sends about 20k events/s from one process here (a
    million events would take most of a minute before anything is measured).
    """
    create_topic(stack, topic)
    now = datetime.now(UTC)
    values: list[bytes] = []
    t0 = time.perf_counter()
    try:
        total = _produce_confluent(stack, topic, records(n, seed=SEED, now=now), values)
    except ImportError:
        total = _produce_kafka_python(stack, topic, records(n, seed=SEED, now=now), values)
    seconds = time.perf_counter() - t0
    ends = end_offsets(stack, topic)
    if sum(ends.values()) != n:
        raise SystemExit(f"bench: topic {topic} holds {sum(ends.values())} events, not {n}")
    return Preloaded(topic, n, total, values, seconds)


Pairs = Iterable[tuple[bytes | None, bytes]]


def _produce_confluent(stack: Stack, topic: str, pairs: Pairs, values: list[bytes]) -> int:
    from confluent_kafka import KafkaException, Producer  # type: ignore[import-untyped]

    errors: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    producer = Producer(
        {
            "bootstrap.servers": stack.bootstrap,
            "client.id": "bench-preload",
            "batch.size": 1 << 20,
            "linger.ms": 50,
            "compression.type": "none",
            "acks": 1,
            "partitioner": "murmur2_random",
            "queue.buffering.max.kbytes": 256 << 10,
        }
    )
    total = 0
    produce, poll = producer.produce, producer.poll
    for key, value in pairs:
        while True:
            try:
                produce(topic, value, key, on_delivery=on_delivery)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                poll(0.05)
        values.append(value)
        total += len(value)
    if producer.flush(120) or errors:
        raise KafkaException(f"preload to {topic} failed: {errors[:3]}")
    return total


def _produce_kafka_python(stack: Stack, topic: str, pairs: Pairs, values: list[bytes]) -> int:
    producer = KafkaProducer(
        bootstrap_servers=stack.bootstrap,
        client_id="bench-preload",
        batch_size=1 << 20,
        linger_ms=50,
        compression_type=None,
        acks=1,
        max_request_size=8 << 20,
    )
    total = 0
    try:
        for key, value in pairs:
            producer.send(topic, key=key, value=value)
            values.append(value)
            total += len(value)
        producer.flush()
    finally:
        producer.close()
    return total
