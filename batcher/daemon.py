"""The consumer loop: poll, decode, buffer, hand flushes to the sink workers, commit.

One thread owns Kafka and the buffers. Per turn it polls, decodes each partition's records
into Arrow (bad ones go to the dead-letter topic, acknowledged before anything that covers
them can become durable), appends them to the partition's buffer, collects finished
flushes, starts the flushes whose trigger fired, applies backpressure and commits to Kafka
the smallest offset every sink holds. Sinks are the truth about what is stored: on
assignment the loop seeks to the smallest offset the sinks report, never to Kafka's.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, TypeVar

from batcher import metrics
from batcher.config import BatcherConfig, RouteConfig
from batcher.consumer import CommitFailed, Consumer, PartitionRecords, consumer_factory
from batcher.crashpoints import crash_point
from batcher.decode import RecordDecoder
from batcher.dlq import DeadLetter, DeadLetterWriter
from batcher.errors import FatalError, InputTooBroken, RetryableError
from batcher.policy import Backoff, BadInputGuard, FlushPolicy, Trigger
from batcher.workers import FlushDone, FlushJob, SinkWorker
from sinks.base import Sink, TopicPartition

log = logging.getLogger("batcher.daemon")
_T = TypeVar("_T")

POLL_TIMEOUT_MS = 200  # bounds how late an age trigger or a signal is noticed
COMMIT_INTERVAL_S = 1.0
RESUME_FRACTION = 0.8  # resume paused partitions once buffers drop below 80% of the budget
STALL_S = 60.0  # /healthz fails when the loop has not turned for this long


@dataclass
class Route:
    config: RouteConfig
    decoder: RecordDecoder
    workers: dict[str, SinkWorker]
    policies: dict[str, FlushPolicy]


@dataclass
class PartitionState:
    route: Route
    buffer: Any  # batcher.buffer.PartitionBuffer (Any keeps the import graph flat)
    committed: int
    paused: bool = False
    revoked: bool = False
    gauges: list[Any] = field(default_factory=list)


SinkFactory = Callable[[RouteConfig], list[Sink]]


class Batcher:
    def __init__(
        self,
        config: BatcherConfig,
        sink_factory: SinkFactory,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._clock = clock
        # At start: kafka.backend = "confluent" without the package is a ConfigError here.
        self._new_consumer = consumer_factory(config)
        self._done: queue.Queue[FlushDone] = queue.Queue()
        self._stop = threading.Event()
        self._signals = 0
        self._fatal: BaseException | None = None
        self._last_turn = clock()
        self._parts: dict[TopicPartition, PartitionState] = {}
        self._guard = BadInputGuard(
            config.limits.bad_ratio_max,
            config.limits.bad_ratio_window,
            config.limits.bad_consecutive_max,
        )
        self._dlq = DeadLetterWriter(
            config.kafka.bootstrap_servers,
            config.kafka.dlq_suffix,
            config.kafka_client_options(),
        )
        policies = {
            "postgres": FlushPolicy(**config.postgres.flush.model_dump()),
            "hdfs": FlushPolicy(**config.hdfs.flush.model_dump()),
        }
        policies["local"] = policies["hdfs"]  # the local-filesystem Parquet sink
        writers = {
            "postgres": config.postgres.writers,
            "hdfs": config.hdfs.writers,
            "local": config.hdfs.writers,
        }
        self._routes: dict[str, Route] = {}
        for rc in config.routes:
            # One control instance per sink (the loop's own reads), then its writer lanes.
            control = {sink.name: sink for sink in sink_factory(rc)}
            lanes: dict[str, list[Sink]] = {name: [] for name in control}
            for sink in control.values():
                sink.setup()
            for _ in range(max(writers.values())):
                for sink in sink_factory(rc):
                    if len(lanes[sink.name]) < writers[sink.name]:
                        lanes[sink.name].append(sink)
                    else:
                        sink.close()
            workers = {
                name: SinkWorker(
                    control[name],
                    lanes[name],
                    self._dlq,
                    self._done,
                    config.limits.retry_initial_s,
                    config.limits.retry_max_s,
                )
                for name in control
            }
            self._routes[rc.topic] = Route(
                rc,
                RecordDecoder(rc.route_schema(), rc.max_record_bytes),
                workers,
                {name: policies[name] for name in workers},
            )
        metrics.BUFFER_BUDGET.set(config.limits.memory_budget_bytes)
        # Computed at scrape time, so a stalled loop reads 0 too.
        metrics.READY.set_function(lambda: float(self.health()[1]))
        started = time.time()
        for route in self._routes.values():
            for name in route.workers:  # "no flush since start" counts as no flush
                metrics.LAST_FLUSH.labels(name).set(started)
        self._consumer: Consumer | None = None
        self._last_commit = 0.0

    # -- lifecycle --------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            self._signals += 1
            if self._signals > 1:
                # At once: no drain, no close. Safe, because the sinks hold the truth and
                # the next owner seeks by them.
                log.warning("second signal: exiting at once (safe: sinks hold the truth)")
                logging.shutdown()
                os._exit(128 + signum)
            log.info("signal %d: flushing, committing and stopping", signum)
            self._stop.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def stop(self) -> None:
        self._stop.set()

    def health(self) -> tuple[bool, bool, str]:
        stalled = self._clock() - self._last_turn > STALL_S
        if stalled:
            return False, False, "consumer loop stalled"
        down = [w.name for r in self._routes.values() for w in r.workers.values() if w.degraded]
        if down:
            return True, False, "sink down: " + ", ".join(sorted(set(down)))
        if self._consumer is None:
            return True, False, "not started"
        return True, True, "ready"

    def run(self) -> None:
        """Consume until stopped; then flush, commit and leave the group."""
        cfg = self.config.kafka
        for route in self._routes.values():
            for worker in route.workers.values():
                worker.start()
        self._consumer = self._new_consumer()
        self._consumer.subscribe(list(self._routes), self)
        log.info(
            "consuming %s as group %s (%s)",
            ", ".join(self._routes), cfg.group_id, self._consumer.backend,
        )  # fmt: skip
        try:
            while not self._stop.is_set():
                self._turn()
            self._drain(list(self._parts), Trigger.SHUTDOWN, self.config.limits.shutdown_budget_s)
            self._commit(force=True)
        finally:
            self._close()

    def _close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
        cpu = {"main": time.thread_time()}
        for route in self._routes.values():
            for worker in route.workers.values():
                worker.stop()
                cpu.update(worker.cpu_seconds())
        self._dlq.close()
        cpu["process"] = sum(os.times()[:2])
        # Where the CPU went, without a profiler (make bench reports it per run).
        log.info(
            "cpu seconds by thread: %s",
            " ".join(f"{name}={seconds:.2f}" for name, seconds in cpu.items()),
            extra={"cpu_seconds": {name: round(seconds, 3) for name, seconds in cpu.items()}},
        )

    # -- one turn of the loop ---------------------------------------------------------
    def _turn(self) -> None:
        assert self._consumer is not None
        self._last_turn = self._clock()
        # Rebalances are handled inside poll() (see "rebalances" below).
        try:
            polled = self._consumer.poll(POLL_TIMEOUT_MS / 1000, self.config.kafka.max_poll_records)
        except RetryableError as exc:
            if self._fatal is not None:
                raise self._fatal from exc
            log.warning("kafka poll failed (retrying): %s", exc)
            polled = {}
        if self._fatal is not None:
            raise self._fatal
        for tp, records in polled.items():
            state = self._parts.get(tp)
            if state is None or state.revoked or not records:
                continue
            self._ingest(tp, state, records)
        self._collect(block_s=0)
        self._schedule(self._clock())
        self._backpressure()
        self._commit()
        self._update_gauges()

    def _ingest(self, tp: TopicPartition, state: PartitionState, records: PartitionRecords) -> None:
        buf = state.buffer
        # A re-fetch after a seek: keep what is new.
        records = records.from_offset(buf.consumed)
        if not records:
            return
        crash_point("during_decode")
        decoded = state.route.decoder.decode(records.values, records.offsets)
        metrics.CONSUMED_RECORDS.labels(tp.topic).inc(len(records))
        if decoded.rejects:
            index = {off: i for i, off in enumerate(records.offsets)}
            letters = []
            for rej in decoded.rejects:
                rec = records.record(index[rej.offset])
                letters.append(
                    DeadLetter(
                        tp, rej.offset, rec.key, rec.value, rej.reason, "BadRecord", rej.message
                    )
                )
            # Acknowledged before anything covering them can be flushed.
            self._retry(functools.partial(self._dlq.send, letters), "dead-letter write")
        last_good = decoded.offsets[-1].as_py() if len(decoded.offsets) else -1
        trailing = sum(1 for rej in decoded.rejects if rej.offset > last_good)
        tripped = self._guard.observe(decoded.records.num_rows, len(decoded.rejects), trailing)
        if tripped:
            raise InputTooBroken(
                f"{tp}: {tripped}; stopping instead of dead-lettering a broken topic "
                f"(see the dead-letter topic {self._dlq.topic_for(tp.topic)})"
            )
        buf.append(decoded.records, decoded.offsets, records.next_offset, self._clock())

    def _retry(self, fn: Callable[[], _T], what: str) -> _T:
        """Call ``fn`` until it stops raising RetryableError: the loop cannot go on without it
        (an unacknowledged dead letter, unknown sink offsets), so it waits out the outage."""
        backoff = Backoff(self.config.limits.retry_initial_s, self.config.limits.retry_max_s)
        while True:
            try:
                return fn()
            except RetryableError as exc:
                if self._stop.is_set():
                    raise
                delay = backoff.next_delay(random.random())
                log.warning("%s failed, retrying in %.1fs: %s", what, delay, exc)
                time.sleep(delay)

    # -- flushing ---------------------------------------------------------------------
    def _schedule(self, now: float, force: Trigger | None = None,
                  only: list[TopicPartition] | None = None) -> None:  # fmt: skip
        for tp in only if only is not None else list(self._parts):
            state = self._parts[tp]
            for name, worker in state.route.workers.items():
                if state.buffer.inflight(name) or (worker.degraded and force is None):
                    continue
                rows, nbytes, oldest = state.buffer.pending(name)
                trigger = force if (force and oldest is not None) else None
                trigger = trigger or state.route.policies[name].due(now, rows, nbytes, oldest)
                if trigger is not None:
                    self._submit(state, name, worker, trigger)

    def _submit(self, state: PartitionState, name: str, worker: SinkWorker, why: Trigger) -> None:
        batch = state.buffer.take(name)
        if batch is not None:
            worker.submit(FlushJob(name, batch, why))

    def _collect(self, block_s: float) -> None:
        """Apply finished flushes to the buffers; raise a sink's fatal error."""
        try:
            done = self._done.get(timeout=block_s) if block_s > 0 else self._done.get_nowait()
        except queue.Empty:
            return
        while True:
            self._apply(done)
            try:
                done = self._done.get_nowait()
            except queue.Empty:
                return

    def _apply(self, done: FlushDone) -> None:
        job = done.job
        tp = job.batch.tp
        state = self._parts.get(tp)
        if done.error is not None:
            raise FatalError(f"{job.sink} sink failed on {tp}: {done.error}") from done.error
        if state is None or done.cancelled:
            if state is not None:
                state.buffer.failed(job.sink)
            return
        state.buffer.durable(job.sink, job.batch.next_offset)
        metrics.FLUSH_SECONDS.labels(job.sink).observe(done.seconds)
        metrics.FLUSHED_ROWS.labels(job.sink).inc(done.rows)
        metrics.FLUSHED_BYTES.labels(job.sink).inc(job.batch.records.nbytes)
        metrics.LAST_FLUSH.labels(job.sink).set(time.time())
        metrics.DURABLE_OFFSET.labels(tp.topic, str(tp.partition), job.sink).set(
            job.batch.next_offset
        )

    def _drain(self, tps: list[TopicPartition], why: Trigger, budget_s: float) -> bool:
        """Flush everything buffered for ``tps`` to every sink within ``budget_s``."""
        deadline = self._clock() + budget_s
        while True:
            self._schedule(self._clock(), force=why, only=[tp for tp in tps if tp in self._parts])
            busy = [
                tp
                for tp in tps
                if tp in self._parts
                and any(
                    self._parts[tp].buffer.inflight(n) or self._parts[tp].buffer.pending(n)[2]
                    for n in self._parts[tp].route.workers
                )
            ]
            if not busy:
                return True
            if self._clock() >= deadline:
                log.warning("%s budget of %.0fs ran out for %s", why.value, budget_s, busy)
                return False
            self._collect(block_s=0.1)

    def _backpressure(self) -> None:
        assert self._consumer is not None
        total = sum(s.buffer.nbytes for s in self._parts.values())
        metrics.BUFFER_BYTES_TOTAL.set(total)
        budget = self.config.limits.memory_budget_bytes
        degraded = any(w.degraded for r in self._routes.values() for w in r.workers.values())
        if total >= budget:
            self._flush_fullest()
        pause = degraded or total >= budget
        resume = not degraded and total < budget * RESUME_FRACTION
        for tp, state in self._parts.items():
            if pause and not state.paused:
                self._consumer.pause(tp)
                state.paused = True
                log.warning("paused %s: %s", tp, "sink down" if degraded else "memory budget")
            elif resume and state.paused:
                self._consumer.resume(tp)
                state.paused = False
                log.info("resumed %s", tp)
            metrics.PAUSED.labels(tp.topic, str(tp.partition)).set(int(state.paused))

    def _flush_fullest(self) -> None:
        best: tuple[int, PartitionState, str] | None = None
        for state in self._parts.values():
            for name, worker in state.route.workers.items():
                if state.buffer.inflight(name) or worker.degraded:
                    continue
                nbytes = state.buffer.pending(name)[1]
                if nbytes and (best is None or nbytes > best[0]):
                    best = (nbytes, state, name)
        if best is not None:
            _, state, name = best
            self._submit(state, name, state.route.workers[name], Trigger.MEMORY)

    # -- committing -------------------------------------------------------------------
    def _commit(self, force: bool = False, only: list[TopicPartition] | None = None) -> None:
        assert self._consumer is not None
        now = self._clock()
        if not force and now - self._last_commit < COMMIT_INTERVAL_S:
            return
        self._last_commit = now
        offsets: dict[TopicPartition, int] = {}
        for tp in only if only is not None else list(self._parts):
            state = self._parts[tp]
            target = state.buffer.min_durable()
            if target > state.committed:
                offsets[tp] = target
        if not offsets:
            return
        crash_point("before_kafka_commit")
        try:
            self._consumer.commit(offsets)
        except CommitFailed as exc:
            # Harmless: the sinks hold the truth and the next owner seeks by them.
            log.warning("offset commit failed (will retry): %s", exc)
            return
        metrics.COMMITS.inc()
        for tp, offset in offsets.items():
            self._parts[tp].committed = offset
            metrics.COMMITTED_OFFSET.labels(tp.topic, str(tp.partition)).set(offset)

    def _update_gauges(self) -> None:
        assert self._consumer is not None
        now = self._clock()
        metrics.ASSIGNED.set(len(self._parts))
        for tp, state in self._parts.items():
            labels = (tp.topic, str(tp.partition))
            buf = state.buffer
            metrics.CONSUMED_OFFSET.labels(*labels).set(buf.consumed)
            metrics.BUFFERED_ROWS.labels(*labels).set(sum(c.records.num_rows for c in buf.chunks))
            metrics.BUFFERED_BYTES.labels(*labels).set(buf.nbytes)
            oldest = buf.chunks[0].received_at if buf.chunks else None
            metrics.OLDEST_AGE.labels(*labels).set(0 if oldest is None else now - oldest)
            high = self._consumer.highwater(tp)
            if high is not None:
                metrics.LAG.labels(*labels).set(max(0, high - state.committed))

    # -- rebalances -------------------------------------------------------------------
    # The consumer (batcher/consumer.py) calls these from inside poll(). on_assigned always
    # runs on the main thread: kafka-python's listener (on its IO thread, where blocking
    # consumer calls are not allowed) only records the assignment and poll() hands it over
    # once the client's poll has returned; confluent-kafka runs its callbacks inside
    # consume() on the main thread. on_revoked drains the buffers to the sinks (our own
    # threads) before the partitions are handed over; with kafka-python it runs on the IO
    # thread and makes no Kafka calls, with confluent-kafka it then also commits what the
    # sinks hold. Either way the sinks hold the truth and the next owner seeks by them.
    def on_assigned(self, tps: list[TopicPartition]) -> None:
        if self._fatal is not None:  # a failed revocation drain: stop, do not take more
            raise self._fatal
        self._init_partitions(tps)

    def _init_partitions(self, tps_in: list[TopicPartition]) -> None:
        from batcher.buffer import PartitionBuffer

        assert self._consumer is not None
        new = [tp for tp in tps_in if tp not in self._parts and tp.topic in self._routes]
        if not new:
            return
        starts = self._consumer.beginning_offsets(new)
        for topic in {tp.topic for tp in new}:
            route = self._routes[topic]
            tps = [tp for tp in new if tp.topic == topic]
            durable: dict[str, dict[TopicPartition, int]] = {}
            for name, worker in route.workers.items():
                durable[name] = self._retry(
                    functools.partial(_recover, worker.sink, tps), f"reading {name} offsets"
                )
            ends = self._consumer.end_offsets(tps)
            for tp in tps:
                log_start = starts[tp]
                if self.config.kafka.auto_offset_reset == "latest" and not any(
                    tp in d for d in durable.values()
                ):
                    log_start = ends[tp]  # nothing stored anywhere: start at the log end
                per_sink = {n: max(d.get(tp, log_start), log_start) for n, d in durable.items()}
                start = min(per_sink.values())
                self._consumer.seek(tp, start)
                committed = self._consumer.committed(tp) or 0
                self._parts[tp] = PartitionState(
                    route, PartitionBuffer(tp, start, per_sink, route.config.event_time), committed
                )
                for n, off in per_sink.items():
                    metrics.DURABLE_OFFSET.labels(tp.topic, str(tp.partition), n).set(off)
                log.info(
                    "assigned %s: seek to %d (sinks hold %s; kafka committed %d)",
                    tp, start, per_sink, committed,
                    extra={"topic": tp.topic, "partition": tp.partition, "offset": start},
                )  # fmt: skip

    def on_revoked(self, revoked: list[TopicPartition]) -> None:
        tps = [tp for tp in dict.fromkeys(revoked) if tp in self._parts]
        if not tps:
            return
        try:
            ok = self._drain(tps, Trigger.REBALANCE, self.config.limits.revoke_budget_s)
            if ok and self._consumer is not None and self._consumer.commit_in_revoke:
                self._commit(force=True, only=tps)
        except BaseException as exc:  # raised again by the main thread after poll()
            self._fatal = exc
            ok = False
        for route in self._routes.values():
            for worker in route.workers.values():
                worker.cancel(set(tps))
        for tp in tps:
            state = self._parts.pop(tp)
            metrics.forget_partition(tp.topic, tp.partition, list(state.route.workers))
        log.info("revoked %s (%s)", [str(t) for t in tps], "flushed" if ok else "dropped unflushed")


def _recover(sink: Sink, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    sink.recover(tps)
    return sink.durable_offsets(tps)
