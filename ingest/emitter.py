"""``Emitter``: send application events to Kafka without ever blocking a request for long.

An application calls ``emit(event)`` on its request path. The event is encoded
(:func:`ingest.encoding.encode_event`), handed to kafka-python's ``KafkaProducer`` and the call
returns: delivery is reported later, on the producer's I/O thread, to the counters in
:attr:`Emitter.stats`, to a warning in the log and to the optional ``on_error(event, exc)``.

How long ``emit`` may block, and why it stays bounded:

- ``KafkaProducer.send`` waits for topic metadata (first send to a topic, or Kafka down) for at
  most ``max_block_ms``, then raises; we translate that into :class:`DeliveryError`.
- kafka-python 3.0 has no ``buffer_memory``: its record accumulator grows without bound while
  Kafka is away. The emitter therefore keeps its own budget of bytes sent but not yet
  acknowledged (``buffer_memory``) and rejects an event at once, with ``DeliveryError``, when
  the budget is spent, rather than waiting for room.
- The producer is created with an ``api_version``. Without one, ``KafkaProducer()`` connects
  to the cluster in its constructor and blocks for up to 30 s when Kafka is down. The value is
  only a starting point: the broker's ApiVersions answer lowers it on the first connection.
  Metadata for the default topic is requested at once, without waiting, because the first
  fetch takes longer (~130 ms) than the 100 ms an emit() may wait; ``connect()`` waits for it.

Other kafka-python 3.0 behaviours handled here: one record the broker rejects for good (e.g.
too large for the topic) puts the idempotent producer in a fatal state that fails every later
record, so the emitter replaces it; and ``close(timeout)`` raises instead of closing when the
flush times out, so the emitter forces the close and reports what was left as failed.

Errors, translated at this one seam: ``DeliveryError`` (Kafka could not take the event now:
unreachable, buffer full, emitter closed; retryable by the caller) wraps the kafka-python
exception as ``__cause__``. ``TypeError`` means the event itself cannot be encoded (a caller bug).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self

import msgspec
from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError

from ingest.encoding import encode_event

__all__ = ["DeliveryError", "Emitter", "EmitterConfig", "EmitterStats", "ErrorCallback"]

log = logging.getLogger(__name__)

ErrorCallback = Callable[[dict[str, Any], Exception], None]

Compression = Literal["gzip", "snappy", "lz4", "zstd"]

# Assumed broker protocol until the first connection's ApiVersions response replaces it (lower
# if the broker is older). Giving one keeps KafkaProducer() from connecting in its constructor.
DEFAULT_API_VERSION: tuple[int, ...] = (2, 8)

# Delivery failures are logged at most this often; the others are counted into the next line.
_WARNING_INTERVAL_S = 1.0
# connect(): the least time between two metadata attempts.
_CONNECT_RETRY_S = 0.05
# How long to wait for the I/O thread to fail the records left after a forced close.
_FORCE_CLOSE_JOIN_S = 5.0

# Producer settings the config owns; passing them through producer_options would be ambiguous.
_MANAGED_OPTIONS = frozenset(
    {
        "bootstrap_servers",
        "max_block_ms",
        "linger_ms",
        "compression_type",
        "acks",
        "api_version",
        "key_serializer",
        "value_serializer",
    }
)


class DeliveryError(Exception):
    """Kafka could not take an event: unreachable, local buffer full, or emitter closed.

    Retryable: the event was not sent. The kafka-python error, if any, is ``__cause__``.
    """

    def __init__(self, message: str, *, topic: str) -> None:
        super().__init__(message)
        self.topic = topic


@dataclass(frozen=True)
class EmitterConfig:
    """What the emitter sends where, and how long it may block. Validated on creation."""

    bootstrap_servers: str | tuple[str, ...]
    topic: str  # default topic of emit()
    key_field: str | None = None  # event field whose value is the Kafka key (picks the partition)
    add_event_id: bool = True  # add event_id_field (uuid4) when missing
    add_event_time: bool = True  # add event_time_field (ISO-8601 UTC, 'Z') when missing
    event_id_field: str = "event_id"
    event_time_field: str = "ts"
    max_block_ms: int = 100  # the most one emit() call may block
    buffer_memory: int = 32 * 1024 * 1024  # bytes sent but not yet acknowledged, at most
    linger_ms: int = 20  # wait this long to fill a batch: fewer, larger requests
    compression: Compression | None = None
    acks: Literal["all", 0, 1] = "all"
    api_version: tuple[int, ...] = DEFAULT_API_VERSION
    # Passed to KafkaProducer as they are: security_protocol, sasl_*, ssl_*, client_id, ...
    producer_options: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not self.bootstrap_servers:
            raise ValueError("EmitterConfig.bootstrap_servers is empty: give 'host:port'")
        if not self.topic:
            raise ValueError("EmitterConfig.topic is empty: give the default topic name")
        for name in ("max_block_ms", "linger_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"EmitterConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.buffer_memory <= 0:
            raise ValueError(f"EmitterConfig.buffer_memory must be > 0, got {self.buffer_memory}")
        if self.compression not in (None, "gzip", "snappy", "lz4", "zstd"):
            raise ValueError(f"EmitterConfig.compression {self.compression!r} is not supported")
        if self.acks not in ("all", 0, 1):
            raise ValueError(f"EmitterConfig.acks must be 'all', 0 or 1, got {self.acks!r}")
        clash = sorted(_MANAGED_OPTIONS.intersection(self.producer_options))
        if clash:
            raise ValueError(
                f"EmitterConfig.producer_options sets {clash}: use the EmitterConfig fields instead"
            )

    def producer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``KafkaProducer``."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "max_block_ms": self.max_block_ms,
            "linger_ms": self.linger_ms,
            "compression_type": self.compression,
            "acks": self.acks,
            "api_version": self.api_version,
        }
        if self.acks != "all":
            # The idempotent producer needs acks=all; say so instead of letting kafka-python
            # switch it off with a warning.
            kwargs["enable_idempotence"] = False
        kwargs.update(self.producer_options)
        return kwargs


@dataclass(frozen=True, slots=True)
class EmitterStats:
    """A snapshot of an emitter's counters."""

    sent: int  # accepted by emit() and handed to the producer
    delivered: int  # acknowledged by Kafka
    failed: int  # rejected by emit() (DeliveryError) or failed after sending
    pending: int  # handed to the producer, outcome not known yet
    pending_bytes: int  # their encoded size, counted against buffer_memory


class Emitter:
    """Asynchronous, bounded JSON event producer. Thread-safe; use one per process."""

    def __init__(self, config: EmitterConfig, on_error: ErrorCallback | None = None) -> None:
        self.config = config
        self._on_error = on_error
        self._lock = threading.Lock()
        self._sent = self._delivered = self._failed = self._failed_after_send = 0
        self._pending_bytes = 0
        self._closed = False
        self._last_warning_at = -_WARNING_INTERVAL_S
        self._unlogged_failures = 0
        self._producer = self._new_producer()
        self._producer_broken = False  # set on the I/O thread, acted on by the next emit()
        self._replace_lock = threading.Lock()

    def _new_producer(self) -> KafkaProducer:
        # No I/O here (api_version is given): an error is a configuration error.
        producer = KafkaProducer(**self.config.producer_kwargs())
        _prefetch_metadata(producer, self.config.topic)
        return producer

    @property
    def stats(self) -> EmitterStats:
        with self._lock:
            return EmitterStats(
                sent=self._sent,
                delivered=self._delivered,
                failed=self._failed,
                pending=self._sent - self._delivered - self._failed_after_send,
                pending_bytes=self._pending_bytes,
            )

    def emit(self, event: Mapping[str, Any], topic: str | None = None) -> None:
        """Queue ``event`` for ``topic`` (default: ``config.topic``); never waits for delivery.

        Blocks at most ``max_block_ms``. Raises :class:`DeliveryError` if Kafka cannot take the
        event now, ``TypeError`` if it cannot be encoded.
        """
        topic = topic or self.config.topic
        if self._closed:
            with self._lock:
                self._failed += 1
            raise DeliveryError(f"emitter is closed, not sending to {topic}", topic=topic)
        if self._producer_broken:
            self._replace_producer()
        key, value = encode_event(event, self.config)
        size = len(value) + (len(key) if key is not None else 0)
        with self._lock:
            if self._pending_bytes + size > self.config.buffer_memory:
                self._failed += 1
                raise DeliveryError(
                    f"local buffer full ({self._pending_bytes} of {self.config.buffer_memory} "
                    f"bytes unacknowledged): Kafka is not keeping up with {topic}",
                    topic=topic,
                )
            # Count before send(): the callbacks may run on the I/O thread before it returns.
            self._pending_bytes += size
            self._sent += 1
        try:
            future = self._producer.send(topic, value=value, key=key)
        except BaseException as exc:
            with self._lock:
                self._pending_bytes -= size
                self._sent -= 1
                self._failed += isinstance(exc, KafkaError)
            if isinstance(exc, KafkaError):
                raise DeliveryError(f"cannot send to {topic}: {exc}", topic=topic) from exc
            raise
        future.add_callback(self._delivered_one, size)
        future.add_errback(self._failed_one, topic, value, size)

    def connect(self, timeout: float = 10.0) -> None:
        """Fetch metadata for the default topic, so that the first emit() need not wait.

        Optional (emit() connects by itself); useful at start-up and as a readiness check.
        Raises :class:`DeliveryError` if Kafka does not answer within ``timeout`` seconds (which
        may run over by up to ``max_block_ms``: one attempt cannot be cut short).
        """
        topic = self.config.topic
        deadline = time.monotonic() + timeout
        while True:
            attempt = time.monotonic()
            try:
                self._producer.partitions_for(topic)
                return
            except KafkaTimeoutError as exc:  # one try lasts max_block_ms
                now = time.monotonic()
                if now < deadline and now - attempt < _CONNECT_RETRY_S:
                    time.sleep(min(_CONNECT_RETRY_S, deadline - now))  # max_block_ms ~ 0: no spin
                if time.monotonic() >= deadline:
                    raise DeliveryError(
                        f"no metadata for {topic} from {self.config.bootstrap_servers} "
                        f"within {timeout:g} s: {exc}",
                        topic=topic,
                    ) from exc
            except KafkaError as exc:
                raise DeliveryError(f"cannot get metadata for {topic}: {exc}", topic=topic) from exc

    def flush(self, timeout: float | None = None) -> int:
        """Send everything queued and wait up to ``timeout`` s (None: until done).

        Returns how many events are still pending (0: every event was delivered or failed).
        """
        with contextlib.suppress(KafkaTimeoutError):  # still pending: the count says how many
            self._producer.flush(timeout)
        return self.stats.pending

    def close(self, timeout: float | None = None) -> None:
        """Flush (up to ``timeout`` s), then stop the producer. Idempotent.

        Events still undelivered when ``timeout`` runs out fail (``on_error``, ``stats``).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with self._replace_lock:
            _stop(self._producer, timeout)

    def _warn_failure(self, topic: str, exc: Exception) -> None:
        """Log a delivery failure; at most one line per second, so an outage does not flood."""
        now = time.monotonic()
        with self._lock:
            if now - self._last_warning_at < _WARNING_INTERVAL_S:
                self._unlogged_failures += 1
                return
            self._last_warning_at, unlogged = now, self._unlogged_failures
            self._unlogged_failures = 0
        also = f" (and {unlogged} more failures since the last report)" if unlogged else ""
        log.warning("event delivery to %s failed: %s: %s%s", topic, type(exc).__name__, exc, also)

    def _replace_producer(self) -> None:
        """Swap a producer that kafka-python has put in a fatal state for a new one.

        kafka-python 3.0's idempotent producer treats any non-retriable produce error (a record
        the broker finds too large for the topic, a keyless record on a compacted topic...) as
        fatal: from then on it fails every record. Java's producer fails only that batch. We
        restore that behaviour by starting over; the new producer fetches metadata again, so
        the first emit() after the swap may wait up to max_block_ms.
        """
        with self._replace_lock:
            if not self._producer_broken or self._closed:
                return
            broken, self._producer = self._producer, self._new_producer()
            self._producer_broken = False
        log.warning("replaced the Kafka producer after a fatal error; new events flow again")
        _stop(broken, 0)  # its records have all failed already

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # Callbacks: run on kafka-python's I/O thread, so they must be quick and must not raise.

    def _delivered_one(self, size: int, _metadata: object) -> None:
        with self._lock:
            self._delivered += 1
            self._pending_bytes -= size

    def _failed_one(self, topic: str, value: bytes, size: int, exc: Exception) -> None:
        with self._lock:
            self._failed += 1
            self._failed_after_send += 1
            self._pending_bytes -= size
        self._warn_failure(topic, exc)
        if _in_fatal_state(self._producer):
            self._producer_broken = True
        if self._on_error is None:
            return
        try:
            # The event as sent (with its event_id and ts), so that a retry keeps its identity.
            event: dict[str, Any] = msgspec.json.decode(value)
            self._on_error(event, exc)
        except Exception:
            log.exception("on_error callback failed for an event to %s", topic)


def _prefetch_metadata(producer: KafkaProducer, topic: str) -> None:
    """Start fetching ``topic``'s metadata now, in the producer's I/O thread, without waiting.

    The first metadata for a topic takes ~130 ms on localhost (kafka-python bootstraps with an
    empty topic list, then waits retry_backoff_ms before asking for the topic), more than the
    100 ms an emit() may wait. Asking at construction lets it arrive before the first emit().
    ``Sender.add_topic`` is private but made for this (thread-safe, non-blocking); if a future
    kafka-python drops it, the first emit() simply waits as it would anyway.
    """
    add_topic = getattr(getattr(producer, "_sender", None), "add_topic", None)
    if callable(add_topic):
        add_topic(topic)


def _in_fatal_state(producer: KafkaProducer) -> bool:
    """Whether kafka-python's idempotent producer has given up (see _replace_producer).

    Reads the private transaction manager; if a later kafka-python moves it, we simply never
    replace the producer, which is right if that version no longer has the problem.
    """
    manager = getattr(producer, "_transaction_manager", None)
    has_fatal_error = getattr(manager, "has_fatal_error", None)
    return bool(callable(has_fatal_error) and has_fatal_error())


def _stop(producer: KafkaProducer, timeout: float | None) -> None:
    """Close ``producer``, giving up on undelivered records after ``timeout`` seconds.

    kafka-python's ``close(timeout)`` flushes first and, when that times out, raises
    ``KafkaTimeoutError`` and leaves its I/O thread running. Then we force the close: the
    sender fails the records left (their errbacks run) and stops, and ``close(0)`` finishes.
    """
    try:
        producer.close(timeout)
        return
    except KafkaTimeoutError:
        pass
    sender = getattr(producer, "_sender", None)
    if sender is None or not callable(getattr(sender, "force_close", None)):
        log.warning("Kafka producer not closed within %s s; undelivered events are lost", timeout)
        return
    sender.force_close()
    sender.join(_FORCE_CLOSE_JOIN_S)
    with contextlib.suppress(KafkaError):
        producer.close(0)
