"""The kafka-python backend (``kafka.backend = "kafka-python"``, the default).

See batcher/consumer.py for the interface and how rebalances are handed over: kafka-python
runs the rebalance listener on its IO thread, so an assignment is recorded there and handed
to the daemon once ``poll()`` has returned, and a revocation is handed over at once and
commits nothing. batcher/kafka_records.py replaces kafka-python's record reader.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from batcher.consumer import (
    CommitFailed,
    PartitionRecords,
    RebalanceHandler,
)
from sinks.base import TopicPartition

if TYPE_CHECKING:
    from batcher.config import KafkaConfig

__all__ = ["KafkaPythonConsumer"]

log = logging.getLogger("batcher.consumer")

METADATA_WAIT_S = 30.0  # at subscribe: how long to wait for the topics' partitions


class KafkaPythonConsumer:
    backend = "kafka-python"
    commit_in_revoke = False  # the listener runs on kafka-python's IO thread

    def __init__(self, cfg: KafkaConfig, options: dict[str, Any]) -> None:
        from kafka import KafkaConsumer

        if cfg.fast_record_reader:
            from batcher import kafka_records

            kafka_records.install()
        self._consumer = KafkaConsumer(
            bootstrap_servers=cfg.bootstrap_servers,
            group_id=cfg.group_id,
            client_id=cfg.client_id,
            enable_auto_commit=False,
            auto_offset_reset=cfg.auto_offset_reset,
            session_timeout_ms=cfg.session_timeout_ms,
            heartbeat_interval_ms=cfg.heartbeat_interval_ms,
            max_poll_interval_ms=cfg.max_poll_interval_ms,
            max_poll_records=cfg.max_poll_records,
            fetch_max_bytes=cfg.fetch_max_bytes,
            max_partition_fetch_bytes=cfg.max_partition_fetch_bytes,
            **options,
        )
        self._handler: RebalanceHandler | None = None
        self._assigned: list[TopicPartition] = []  # set by the listener, handled after poll()
        self._lock = threading.Lock()

    def subscribe(self, topics: list[str], handler: RebalanceHandler) -> None:
        from kafka.consumer.subscription_state import ConsumerRebalanceListener

        self._await_partitions(topics)
        wrapper = self

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            def on_partitions_revoked(self, revoked: Any) -> None:
                wrapper._on_revoked([TopicPartition(k.topic, k.partition) for k in revoked])

            def on_partitions_assigned(self, assigned: Any) -> None:
                with wrapper._lock:
                    wrapper._assigned += [TopicPartition(k.topic, k.partition) for k in assigned]

        self._handler = handler
        self._consumer.subscribe(topics=topics, listener=Listener())

    def _await_partitions(self, topics: list[str]) -> None:
        """Have the topics' partitions in the client's metadata before joining the group.

        kafka-python can join before its first metadata response for a new subscription:
        the group leader then assigns nothing ("No partition metadata for topic"), and in
        CI it once never rejoined, spinning with no partitions for two minutes (its log is
        in tests/conftest.py's report). Asking first, until every topic has partitions or
        METADATA_WAIT_S runs out (a topic created later is warned about and waited for by
        kafka-python itself), takes that start away.
        """
        deadline = time.monotonic() + METADATA_WAIT_S
        delay = 0.1
        while True:
            missing = [t for t in topics if not self._consumer.partitions_for_topic(t)]
            if not missing:
                return
            if time.monotonic() >= deadline:
                log.warning("no partitions known yet for %s; subscribing anyway", missing)
                return
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _on_revoked(self, tps: list[TopicPartition]) -> None:
        revoked = set(tps)
        with self._lock:
            self._assigned = [tp for tp in self._assigned if tp not in revoked]
        if self._handler is not None:
            self._handler.on_revoked(tps)

    def poll(self, timeout_s: float, max_records: int) -> dict[TopicPartition, PartitionRecords]:
        polled = self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        with self._lock:
            assigned, self._assigned = self._assigned, []
        fresh = set(assigned)
        out: dict[TopicPartition, PartitionRecords] = {}
        for ktp, records in polled.items():
            tp = TopicPartition(ktp.topic, ktp.partition)
            if not records or tp in fresh:
                continue  # fresh: read from Kafka's committed offset; we seek by the sinks
            out[tp] = PartitionRecords(
                tp,
                [r.offset for r in records],
                [r.value for r in records],
                [r.key for r in records],
            )
        if assigned and self._handler is not None:
            self._handler.on_assigned(assigned)
        return out

    def pause(self, tp: TopicPartition) -> None:
        self._consumer.pause(_ktp(tp))

    def resume(self, tp: TopicPartition) -> None:
        self._consumer.resume(_ktp(tp))

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._consumer.seek(_ktp(tp), offset)

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        from kafka import OffsetAndMetadata
        from kafka.errors import KafkaError

        try:
            self._consumer.commit(
                {_ktp(tp): OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()}
            )
        except KafkaError as exc:  # CommitFailedError included
            raise CommitFailed(str(exc)) from exc

    def committed(self, tp: TopicPartition) -> int | None:
        off = self._consumer.committed(_ktp(tp))
        return None if off is None else int(off)

    def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        got = self._consumer.beginning_offsets([_ktp(tp) for tp in tps])
        return {TopicPartition(k.topic, k.partition): int(v) for k, v in got.items()}

    def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        got = self._consumer.end_offsets([_ktp(tp) for tp in tps])
        return {TopicPartition(k.topic, k.partition): int(v) for k, v in got.items()}

    def highwater(self, tp: TopicPartition) -> int | None:
        high = self._consumer.highwater(_ktp(tp))
        return None if high is None else int(high)

    def close(self) -> None:
        from kafka.errors import KafkaError

        try:
            self._consumer.close(autocommit=False)
        except KafkaError as exc:
            log.warning("closing the consumer: %s", exc)


def _ktp(tp: TopicPartition) -> Any:
    from kafka import TopicPartition as KafkaTP

    return KafkaTP(tp.topic, tp.partition)
