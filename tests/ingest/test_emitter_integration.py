"""Emitter and the ``ingest`` CLI against the real Kafka of the local stack (no mocks)."""

from __future__ import annotations

import gc
import logging
import os
import re
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import closing
from typing import Any

import msgspec
import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError

from ingest import DeliveryError, Emitter, EmitterConfig, synthetic
from tests.conftest import REPO

TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
UNREACHABLE = "127.0.0.1:1"  # nothing listens on port 1: connection refused at once


def consume_all(bootstrap: str, topic: str, timeout: float = 30.0) -> list[ConsumerRecord]:
    """Every record of ``topic``, read from the beginning up to its end offsets."""
    deadline = time.monotonic() + timeout
    with closing(KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)) as consumer:
        partitions = consumer.partitions_for_topic(topic)
        while not partitions:
            assert time.monotonic() < deadline, f"no partitions for {topic}"
            partitions = consumer.partitions_for_topic(topic)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        records: list[ConsumerRecord] = []
        while any(consumer.position(tp) < end[tp] for tp in tps):
            assert time.monotonic() < deadline, f"read {len(records)} of {sum(end.values())}"
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records


@pytest.fixture
def emitter_factory(kafka_bootstrap: str) -> Iterator[Callable[..., Emitter]]:
    made: list[Emitter] = []

    def make(topic: str, on_error: Any = None, **overrides: Any) -> Emitter:
        settings: dict[str, Any] = {"bootstrap_servers": kafka_bootstrap, "topic": topic}
        emitter = Emitter(EmitterConfig(**(settings | overrides)), on_error=on_error)
        made.append(emitter)
        return emitter

    yield make
    for emitter in made:
        emitter.close(timeout=10)


@pytest.mark.integration
def test_keyed_events_round_trip(
    kafka_bootstrap: str, new_topic: Callable[..., str], emitter_factory: Callable[..., Emitter]
) -> None:
    topic = new_topic(partitions=3)
    emitter = emitter_factory(topic, key_field="user_id")
    emitter.connect(timeout=30)
    count = 600
    for n in range(count):
        event: dict[str, Any] = {"user_id": n % 37, "n": n}
        if n % 100 == 0:
            event["event_id"] = f"given-{n}"
        emitter.emit(event)
    assert emitter.flush(timeout=30) == 0
    stats = emitter.stats
    assert (stats.sent, stats.delivered, stats.failed, stats.pending) == (count, count, 0, 0)
    assert stats.pending_bytes == 0

    records = consume_all(kafka_bootstrap, topic)
    assert len(records) == count
    values = [msgspec.json.decode(r.value) for r in records]
    assert sorted(v["n"] for v in values) == list(range(count))
    for record, value in zip(records, values, strict=True):
        assert record.key == str(value["user_id"]).encode()
        assert TS.match(value["ts"])
        if value["n"] % 100 == 0:
            assert value["event_id"] == f"given-{value['n']}"
        else:
            assert uuid.UUID(value["event_id"]).version == 4
    partitions_of_key: dict[bytes, set[int]] = defaultdict(set)
    for record in records:
        partitions_of_key[record.key].add(record.partition)
    assert all(len(parts) == 1 for parts in partitions_of_key.values())
    assert len({r.partition for r in records}) > 1  # 37 keys spread over the 3 partitions


@pytest.mark.integration
# kafka-python 3.0.12 does not close the socket of a refused connection (net/inet.py,
# sock_connect raises without sock.close()): each retry leaks one until garbage collection.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_unreachable_kafka_fails_fast_and_is_counted(caplog: pytest.LogCaptureFixture) -> None:
    # Captured kafka log records carry tracebacks that keep those sockets alive past the test.
    caplog.set_level(logging.CRITICAL, logger="kafka")
    try:
        _unreachable_kafka_fails_fast_and_is_counted()
    finally:
        gc.collect()  # free the leaked sockets while their warning is still ignored


def _unreachable_kafka_fails_fast_and_is_counted() -> None:
    errors: list[tuple[dict[str, Any], Exception]] = []
    config = EmitterConfig(bootstrap_servers=UNREACHABLE, topic="nowhere", max_block_ms=100)
    started = time.monotonic()
    emitter = Emitter(config, on_error=lambda event, exc: errors.append((event, exc)))
    try:
        assert time.monotonic() - started < 5.0  # creating an emitter never waits for Kafka
        started = time.monotonic()
        with pytest.raises(DeliveryError) as raised:
            emitter.emit({"user_id": 1})
        # Without metadata kafka-python's send() times out: the failure is raised, not late.
        assert time.monotonic() - started < 5.0  # max_block_ms (0.1 s) plus a generous margin
        assert isinstance(raised.value.__cause__, KafkaError)
        assert raised.value.topic == "nowhere"
        assert emitter.flush(timeout=2) == 0
        stats = emitter.stats
        assert (stats.sent, stats.delivered, stats.failed, stats.pending) == (0, 0, 1, 0)
        assert not errors  # reported once, by the exception
        with pytest.raises(DeliveryError, match="no metadata"):
            emitter.connect(timeout=0.5)
    finally:
        started = time.monotonic()
        emitter.close(timeout=2)
        assert time.monotonic() - started < 5.0


@pytest.mark.integration
def test_failure_after_send_reaches_on_error_and_flow_resumes(
    new_topic: Callable[..., str], emitter_factory: Callable[..., Emitter]
) -> None:
    """The broker rejects a record after emit() returned: on_error gets the event as sent.

    kafka-python's idempotent producer then fails every later record too; the emitter replaces
    it, so the next event is delivered.
    """
    topic = new_topic(partitions=1)
    errors: list[tuple[dict[str, Any], Exception]] = []
    emitter = emitter_factory(
        topic,
        on_error=lambda event, exc: errors.append((event, exc)),
        # Let a 2 MB record past the client so that the broker (1 MB limit) refuses it.
        producer_options={"max_request_size": 8 * 1024 * 1024},
        max_block_ms=10_000,  # the replacement producer fetches metadata again
    )
    emitter.connect(timeout=30)
    emitter.emit({"blob": "x" * 2_000_000})
    assert emitter.flush(timeout=30) == 0
    assert len(errors) == 1
    event, exc = errors[0]
    assert len(event["blob"]) == 2_000_000 and "event_id" in event and "ts" in event
    assert isinstance(exc, KafkaError)

    emitter.emit({"small": True})
    assert emitter.flush(timeout=30) == 0
    stats = emitter.stats
    assert (stats.sent, stats.delivered, stats.failed, stats.pending) == (2, 1, 1, 0)
    assert len(errors) == 1


@pytest.mark.integration
def test_close_with_timeout_fails_what_is_left(
    new_topic: Callable[..., str], emitter_factory: Callable[..., Emitter]
) -> None:
    """close(0) returns at once; events not yet delivered go to on_error, none is lost silently."""
    topic = new_topic(partitions=1)
    errors: list[Exception] = []
    emitter = emitter_factory(
        topic, on_error=lambda _event, exc: errors.append(exc), linger_ms=60_000
    )
    emitter.connect(timeout=30)
    for n in range(5):
        emitter.emit({"n": n})
    started = time.monotonic()
    emitter.close(timeout=0)
    assert time.monotonic() - started < 10.0
    stats = emitter.stats
    assert stats.pending == 0 and stats.delivered + stats.failed == 5
    assert len(errors) == stats.failed
    with pytest.raises(DeliveryError, match="closed"):
        emitter.emit({"n": 5})


@pytest.mark.integration
def test_full_buffer_rejects_at_once_then_recovers(
    new_topic: Callable[..., str], emitter_factory: Callable[..., Emitter]
) -> None:
    topic = new_topic(partitions=1)
    # A long linger keeps records unacknowledged, so the 1 KB budget fills.
    emitter = emitter_factory(topic, buffer_memory=1_000, linger_ms=60_000)
    emitter.connect(timeout=30)
    event = {"pad": "x" * 300}
    emitter.emit(event)
    emitter.emit(event)
    started = time.monotonic()
    with pytest.raises(DeliveryError, match="buffer full"):
        emitter.emit(event)
    assert time.monotonic() - started < 1.0
    assert emitter.flush(timeout=30) == 0
    emitter.emit(event)  # room again once Kafka acknowledged
    assert emitter.flush(timeout=30) == 0
    assert emitter.stats.delivered == 3 and emitter.stats.failed == 1


def run_cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ingest.cli", *args],
        cwd=REPO,
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.integration
def test_cli_gen_sends_every_record(kafka_bootstrap: str, new_topic: Callable[..., str]) -> None:
    topic = new_topic(partitions=3)
    gen_args = ("--count", "2000", "--bad-ratio", "0.1", "--seed", "7")
    done = run_cli("gen", "--topic", topic, "--bootstrap", kafka_bootstrap, "--quiet", *gen_args)
    assert done.returncode == 0, done.stderr
    assert "sent 2000 of 2000" in done.stdout

    records = consume_all(kafka_bootstrap, topic)
    assert len(records) == 2000
    # Same seed, same records except the times: compare keys and value sizes as multisets.
    expected = synthetic.records(2000, bad_ratio=0.1, seed=7)
    assert Counter((r.key, len(r.value)) for r in records) == Counter(
        (key, len(value)) for key, value in expected
    )


@pytest.mark.integration
def test_cli_emit_reports_bad_lines(kafka_bootstrap: str, new_topic: Callable[..., str]) -> None:
    topic = new_topic(partitions=3)
    lines = b'{"user_id": 1}\n{"user_id": 2}\nnot json\n\n[1, 2]\n{"user_id": 3}\n'
    done = run_cli(
        "emit", "--topic", topic, "--bootstrap", kafka_bootstrap, "--key-field", "user_id", "-",
        stdin=lines,
    )  # fmt: skip
    assert done.returncode == 1
    assert "line 3" in done.stderr and "line 5" in done.stderr
    assert "2 bad lines" in done.stdout
    records = consume_all(kafka_bootstrap, topic)
    assert sorted(r.key for r in records) == [b"1", b"2", b"3"]


def test_cli_without_bootstrap_says_how_to_set_it() -> None:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP"}
    done = subprocess.run(
        [sys.executable, "-m", "ingest.cli", "gen", "--topic", "t", "--count", "1"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "KAFKA_BOOTSTRAP" in done.stderr and "--bootstrap" in done.stderr
