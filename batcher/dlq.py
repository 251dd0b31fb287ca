"""Dead-letter writer: bad records go to ``<topic>.dlq`` with their origin and the reason.

Headers: ``dlq.origin.topic``, ``dlq.origin.partition``, ``dlq.origin.offset``,
``dlq.reason`` (a stable label), ``dlq.error.class`` and ``dlq.error.message``. The key and
value are the original bytes. ``send`` returns only once Kafka has acknowledged every record
(acks=all), so the offsets covering them may be committed afterwards; a failure raises
RetryableError and the caller commits nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from batcher import metrics
from batcher.errors import RetryableError
from sinks.base import TopicPartition

log = logging.getLogger("batcher.dlq")

ACK_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class DeadLetter:
    tp: TopicPartition
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    error_class: str
    message: str


class DeadLetterWriter:
    """Thread-safe (KafkaProducer is); used by the consumer loop and the sink workers."""

    def __init__(self, bootstrap: str, suffix: str, client_options: dict[str, Any]) -> None:
        self._suffix = suffix
        self._lock = threading.Lock()
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            linger_ms=5,
            max_block_ms=10_000,
            client_id="batcher-dlq",
            **client_options,
        )

    def topic_for(self, topic: str) -> str:
        return topic + self._suffix

    def send(self, letters: Sequence[DeadLetter]) -> None:
        """Publish and wait for the acknowledgement of every letter."""
        if not letters:
            return
        with self._lock:
            try:
                futures = [
                    self._producer.send(
                        self.topic_for(d.tp.topic),
                        key=d.key,
                        value=d.value,
                        headers=[
                            ("dlq.origin.topic", d.tp.topic.encode()),
                            ("dlq.origin.partition", str(d.tp.partition).encode()),
                            ("dlq.origin.offset", str(d.offset).encode()),
                            ("dlq.reason", d.reason.encode()),
                            ("dlq.error.class", d.error_class.encode()),
                            ("dlq.error.message", d.message[:1000].encode("utf-8", "replace")),
                        ],
                    )
                    for d in letters
                ]
                self._producer.flush(timeout=ACK_TIMEOUT_S)
                for fut in futures:
                    fut.get(timeout=ACK_TIMEOUT_S)
            except KafkaError as exc:
                raise RetryableError(f"dead-letter write not acknowledged: {exc}") from exc
        for d in letters:
            metrics.DEAD_LETTERS.labels(d.tp.topic, d.reason).inc()
        first = letters[0]
        log.warning(
            "dead-lettered %d record(s) of %s, first at offset %d: %s",
            len(letters),
            first.tp,
            first.offset,
            first.reason,
            extra={"topic": first.tp.topic, "partition": first.tp.partition, "count": len(letters)},
        )

    def close(self) -> None:
        self._producer.close(timeout=10)
