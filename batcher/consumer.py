"""The consumer seam: one small interface over two Kafka clients.

The daemon talks to a ``Consumer`` only. ``poll`` returns, per topic-partition, the fetched
records as parallel lists (offsets, values, keys): exactly what the decoder takes, built in one
pass over the client's messages (the hot path: no object per record on our side).

- ``KafkaPythonConsumer`` (batcher/kafka_python_consumer.py; ``kafka.backend =
  "kafka-python"``, the default): kafka-python 3,
  pure Python. Its fetch path costs about 13 µs of CPU a record (make bench), much of it
  the record parsing that ``batcher/kafka_records.py`` replaces (``fast_record_reader``).
  It runs the rebalance listener on its IO thread while the main thread waits inside
  ``poll()``, where the listener may not call blocking consumer APIs. So an assignment is
  only recorded there and handed to the handler by ``poll()`` once the client's poll has
  returned (records fetched for those partitions in that same poll came from Kafka's
  committed offset and are dropped: the daemon seeks by the sinks); a revocation is handed
  over at once (the daemon drains to its sinks, its own threads, without Kafka calls) and
  commits nothing.
- ``ConfluentConsumer`` (batcher/confluent_consumer.py; ``kafka.backend = "confluent"``,
  ``pip install 'bulk-ingest[fast]'``): confluent-kafka, librdkafka in C. ``consume()`` runs
  on the main thread and so do the rebalance callbacks it triggers, where blocking calls are
  allowed: on revocation the daemon drains and then commits; on assignment it reads the sinks
  and "seeks", and the start offsets are applied with ``assign()`` at the end of the callback
  (eager protocol: range/roundrobin).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol

from batcher.errors import RetryableError
from sinks.base import TopicPartition

if TYPE_CHECKING:
    from batcher.config import BatcherConfig

__all__ = [
    "OFFSETS_TIMEOUT_S",
    "CommitFailed",
    "Consumer",
    "ConsumerFactory",
    "PartitionRecords",
    "RebalanceHandler",
    "Record",
    "consumer_factory",
]

OFFSETS_TIMEOUT_S = 30.0  # watermark / committed look-ups (blocking, at assignment)


class Record(NamedTuple):
    """One Kafka record, as the daemon sees it (built only when one is needed, e.g. a reject)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class PartitionRecords:
    """One poll's records of one topic-partition, as parallel lists in offset order."""

    tp: TopicPartition
    offsets: list[int]
    values: list[bytes | None]
    keys: list[bytes | None]

    def __len__(self) -> int:
        return len(self.offsets)

    @property
    def next_offset(self) -> int:
        return self.offsets[-1] + 1

    def record(self, i: int) -> Record:
        tp = self.tp
        return Record(tp.topic, tp.partition, self.offsets[i], self.keys[i], self.values[i])

    def from_offset(self, offset: int) -> PartitionRecords:
        """The records at or after ``offset`` (a re-fetch after a seek keeps what is new)."""
        if not self.offsets or self.offsets[0] >= offset:
            return self
        i = bisect.bisect_left(self.offsets, offset)
        return PartitionRecords(self.tp, self.offsets[i:], self.values[i:], self.keys[i:])


class RebalanceHandler(Protocol):
    def on_assigned(self, tps: list[TopicPartition]) -> None:
        """Runs on the thread calling ``poll()``; may call ``seek``, ``committed``, offsets."""

    def on_revoked(self, tps: list[TopicPartition]) -> None:
        """May run on the client's IO thread: Kafka calls only if ``commit_in_revoke``."""


class CommitFailed(RetryableError):
    """An offset commit did not go through; harmless, the sinks hold the truth."""


class Consumer(Protocol):
    backend: str
    # True when on_revoked runs where the consumer may be called (commit before hand-over).
    commit_in_revoke: bool

    def subscribe(self, topics: list[str], handler: RebalanceHandler) -> None: ...

    def poll(self, timeout_s: float, max_records: int) -> dict[TopicPartition, PartitionRecords]:
        """Records per partition (never empty lists); rebalance callbacks run in here."""

    def pause(self, tp: TopicPartition) -> None: ...

    def resume(self, tp: TopicPartition) -> None: ...

    def seek(self, tp: TopicPartition, offset: int) -> None: ...

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Synchronous; raises CommitFailed."""

    def committed(self, tp: TopicPartition) -> int | None: ...

    def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]: ...

    def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]: ...

    def highwater(self, tp: TopicPartition) -> int | None:
        """The log end offset last seen in a fetch (no request), or None."""

    def close(self) -> None: ...


ConsumerFactory = Callable[[], Consumer]


def consumer_factory(config: BatcherConfig) -> ConsumerFactory:
    """Validate the backend now (at start: a missing package or a bad option is a
    ConfigError); connect only when the returned factory is called."""
    backend = config.kafka.backend
    options = config.kafka_client_options()
    if backend == "confluent":
        from batcher.confluent_consumer import ConfluentConsumer, confluent_config, import_confluent

        import_confluent()
        conf = confluent_config(config.kafka, options)
        return lambda: ConfluentConsumer(conf)
    from batcher.kafka_python_consumer import KafkaPythonConsumer

    return lambda: KafkaPythonConsumer(config.kafka, options)
