"""The confluent-kafka backend: ``kafka.backend = "confluent"`` (the ``fast`` extra).

librdkafka in C. ``consume()`` runs on the main thread and so do the rebalance callbacks it
triggers, where blocking calls are allowed: on revocation the daemon drains and then commits;
on assignment it reads the sinks and "seeks", and the start offsets are applied with
``assign()`` at the end of the callback (eager protocol: range/roundrobin). See
batcher/consumer.py for the interface.
"""

from __future__ import annotations

import importlib
import logging
import time
from typing import TYPE_CHECKING, Any

from batcher.consumer import (
    OFFSETS_TIMEOUT_S,
    CommitFailed,
    PartitionRecords,
    RebalanceHandler,
)
from batcher.errors import ConfigError, FatalError, RetryableError
from sinks.base import TopicPartition

if TYPE_CHECKING:
    from batcher.config import KafkaConfig

__all__ = ["CONFLUENT_OPTIONS", "ConfluentConsumer", "confluent_config", "import_confluent"]

log = logging.getLogger("batcher.consumer")

_Lists = tuple[list[int], list[bytes | None], list[bytes | None]]  # offsets, values, keys

FAST_EXTRA = "pip install 'bulk-ingest[fast]'"
PREFETCH_KBYTES = 32768  # confluent backend: librdkafka's prefetched records, all partitions

# kafka-python style client_options -> librdkafka property names.
CONFLUENT_OPTIONS: dict[str, str] = {
    "security_protocol": "security.protocol",
    "sasl_mechanism": "sasl.mechanism",
    "sasl_plain_username": "sasl.username",
    "sasl_plain_password": "sasl.password",
    "ssl_cafile": "ssl.ca.location",
    "ssl_certfile": "ssl.certificate.location",
    "ssl_keyfile": "ssl.key.location",
}


def import_confluent() -> Any:
    try:
        return importlib.import_module("confluent_kafka")
    except ImportError:
        raise ConfigError(
            'kafka.backend = "confluent" needs the confluent-kafka package, which is not '
            f'installed: {FAST_EXTRA} (or set kafka.backend = "kafka-python")'
        ) from None


def confluent_config(cfg: KafkaConfig, options: dict[str, Any]) -> dict[str, Any]:
    """librdkafka properties for the batcher's consumer. Pure: no import, no connection.

    ``options`` are kafka-python style ``client_options`` (with the SASL password the env
    supplied); only those in ``CONFLUENT_OPTIONS`` are understood, any other is a ConfigError.
    """
    unknown = sorted(k for k in options if k not in CONFLUENT_OPTIONS)
    if unknown:
        raise ConfigError(
            f"kafka.client_options: {', '.join(unknown)} not supported with "
            f'kafka.backend = "confluent" (supported: {", ".join(CONFLUENT_OPTIONS)})'
        )
    conf: dict[str, Any] = {
        "bootstrap.servers": cfg.bootstrap_servers,
        "group.id": cfg.group_id,
        "client.id": cfg.client_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": cfg.auto_offset_reset,
        "session.timeout.ms": cfg.session_timeout_ms,
        "heartbeat.interval.ms": cfg.heartbeat_interval_ms,
        "max.poll.interval.ms": cfg.max_poll_interval_ms,
        "fetch.max.bytes": cfg.fetch_max_bytes,
        "max.partition.fetch.bytes": cfg.max_partition_fetch_bytes,
        # Eager protocol, the same assignors as kafka-python's defaults: a group may mix both
        # backends, and on_assign/on_revoke always see the whole assignment.
        "partition.assignment.strategy": "range,roundrobin",
        # librdkafka stops fetching a partition whose prefetch queue is "full enough"
        # (queued.min.messages) and by default waits a whole second before it looks again:
        # that capped consumption at about 130k records/s here at a quarter of the CPU.
        # 10 ms keeps the fetcher busy (about 450k/s, make bench's raw row); the prefetch
        # stays bounded by queued.max.messages.kbytes, outside the buffers' memory budget.
        "fetch.queue.backoff.ms": 10,
        "queued.max.messages.kbytes": PREFETCH_KBYTES,
    }
    # librdkafka refuses fetch.max.bytes above receive.message.max.bytes - 512.
    if cfg.fetch_max_bytes + 512 > 100_000_000:
        conf["receive.message.max.bytes"] = cfg.fetch_max_bytes + 512
    for key, value in options.items():
        prop = CONFLUENT_OPTIONS[key]
        conf[prop] = value.lower() if prop == "security.protocol" else value
    return conf


class ConfluentConsumer:
    backend = "confluent"
    commit_in_revoke = True  # callbacks run inside consume() on the calling thread

    def __init__(self, conf: dict[str, Any]) -> None:
        ck = import_confluent()
        self._ck = ck
        self._fatal: BaseException | None = None
        self._handler: RebalanceHandler | None = None
        self._assigning = False
        self._starts: dict[TopicPartition, int] = {}
        self._closing = False
        self._callback_error: BaseException | None = None
        self._warned: dict[str, float] = {}
        self._consumer = ck.Consumer(
            {**conf, "error_cb": self._on_error, "logger": logging.getLogger("batcher.rdkafka")}
        )

    def subscribe(self, topics: list[str], handler: RebalanceHandler) -> None:
        self._handler = handler
        self._consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke)

    # Both callbacks run inside consume() (or close()) on the main thread.
    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        tps = [TopicPartition(p.topic, p.partition) for p in partitions]
        self._starts = {}
        self._assigning = True
        try:
            if self._handler is not None and not self._closing:
                self._handler.on_assigned(tps)
        except BaseException as exc:
            self._callback_error = exc  # confluent-kafka raises it again from consume()
            raise
        finally:
            self._assigning = False
            starts, self._starts = self._starts, {}
            ck = self._ck
            consumer.assign(
                [
                    ck.TopicPartition(tp.topic, tp.partition, starts[tp])
                    if tp in starts
                    else ck.TopicPartition(tp.topic, tp.partition)  # Kafka's committed offset
                    for tp in tps
                ]
            )

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        # At close() the daemon has drained and committed already (or is failing): skip.
        if self._handler is not None and not self._closing:
            try:
                self._handler.on_revoked([TopicPartition(p.topic, p.partition) for p in partitions])
            except BaseException as exc:
                self._callback_error = exc
                raise

    def _on_error(self, err: Any) -> None:
        if err.fatal():
            self._fatal = FatalError(f"kafka client: {err.str()}")
        else:
            self._warn(err)

    def _warn(self, err: Any, where: str = "") -> None:
        """librdkafka retries by itself; say so at most every 10 s per error."""
        name = err.name()
        now = time.monotonic()
        if now - self._warned.get(name, -1e9) >= 10.0:
            self._warned[name] = now
            log.warning("kafka client%s: %s (retrying)", where, err.str())

    def poll(self, timeout_s: float, max_records: int) -> dict[TopicPartition, PartitionRecords]:
        try:
            msgs = self._consumer.consume(max_records, timeout_s)
        except BaseException as exc:
            failed, self._callback_error = self._callback_error, None
            if failed is not None:
                # A rebalance callback failed half-way: the partitions would be assigned
                # without our state, so this must stop the daemon, not be retried.
                if isinstance(failed, RetryableError):
                    raise FatalError(f"handling a rebalance failed: {failed}") from failed
                raise
            if not isinstance(exc, self._ck.KafkaException):
                raise
            err = exc.args[0] if exc.args else None
            if err is not None and hasattr(err, "fatal") and err.fatal():
                raise FatalError(f"kafka client: {err.str()}") from exc
            raise RetryableError(f"kafka consume: {exc}") from exc
        if self._fatal is not None:
            raise self._fatal
        out: dict[TopicPartition, PartitionRecords] = {}
        if not msgs:
            return out
        # The hot path: one pass, appending to the current partition's three lists.
        groups: dict[tuple[str, int], _Lists] = {}
        last_topic: str | None = None
        last_part = -1
        cur: _Lists = ([], [], [])
        add_offset, add_value, add_key = cur[0].append, cur[1].append, cur[2].append
        for m in msgs:
            if m.error() is not None:
                self._message_error(m)
                continue
            part = m.partition()
            topic = m.topic()
            if part != last_part or topic != last_topic:
                found = groups.get((topic, part))
                if found is None:
                    found = groups[(topic, part)] = ([], [], [])
                add_offset, add_value, add_key = found[0].append, found[1].append, found[2].append
                last_topic, last_part = topic, part
            add_offset(m.offset())
            add_value(m.value())
            add_key(m.key())
        for (topic, part), (offsets, values, keys) in groups.items():
            tp = TopicPartition(topic, part)
            out[tp] = PartitionRecords(tp, offsets, values, keys)
        return out

    def _message_error(self, m: Any) -> None:
        err = m.error()
        code = err.code()
        if code == self._ck.KafkaError._PARTITION_EOF:
            return
        where = f" ({m.topic()}[{m.partition()}])" if m.topic() else ""
        if err.fatal():
            raise FatalError(f"kafka client{where}: {err.str()}")
        self._warn(err, where)

    def pause(self, tp: TopicPartition) -> None:
        self._consumer.pause([self._ck.TopicPartition(tp.topic, tp.partition)])

    def resume(self, tp: TopicPartition) -> None:
        self._consumer.resume([self._ck.TopicPartition(tp.topic, tp.partition)])

    def seek(self, tp: TopicPartition, offset: int) -> None:
        if self._assigning:  # inside on_assign: applied by its assign()
            self._starts[tp] = offset
        else:
            self._consumer.seek(self._ck.TopicPartition(tp.topic, tp.partition, offset))

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        ck = self._ck
        tps = [ck.TopicPartition(tp.topic, tp.partition, off) for tp, off in offsets.items()]
        try:
            result = self._consumer.commit(offsets=tps, asynchronous=False)
        except ck.KafkaException as exc:
            raise CommitFailed(str(exc)) from exc
        failed = [f"{r.topic}[{r.partition}]: {r.error}" for r in result or [] if r.error]
        if failed:
            raise CommitFailed("; ".join(failed))

    def committed(self, tp: TopicPartition) -> int | None:
        ck = self._ck
        try:
            got = self._consumer.committed(
                [ck.TopicPartition(tp.topic, tp.partition)], timeout=OFFSETS_TIMEOUT_S
            )
        except ck.KafkaException as exc:
            raise RetryableError(f"kafka committed offset of {tp}: {exc}") from exc
        off = int(got[0].offset) if got else -1
        return off if off >= 0 else None

    def _watermarks(self, tp: TopicPartition) -> tuple[int, int]:
        ck = self._ck
        try:
            got = self._consumer.get_watermark_offsets(
                ck.TopicPartition(tp.topic, tp.partition), timeout=OFFSETS_TIMEOUT_S
            )
        except ck.KafkaException as exc:
            raise RetryableError(f"kafka offsets of {tp}: {exc}") from exc
        if got is None:
            raise RetryableError(f"kafka offsets of {tp}: timed out")
        return int(got[0]), int(got[1])

    def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self._watermarks(tp)[0] for tp in tps}

    def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self._watermarks(tp)[1] for tp in tps}

    def highwater(self, tp: TopicPartition) -> int | None:
        ck = self._ck
        try:
            got = self._consumer.get_watermark_offsets(
                ck.TopicPartition(tp.topic, tp.partition), cached=True
            )
        except ck.KafkaException:
            return None
        return int(got[1]) if got and got[1] >= 0 else None

    def close(self) -> None:
        self._closing = True
        try:
            self._consumer.close()
        except self._ck.KafkaException as exc:
            log.warning("closing the consumer: %s", exc)
