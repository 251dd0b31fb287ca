"""One worker thread per sink: writes batches in order, retries outages with backoff.

The consumer loop hands a ``FlushJob`` to a sink's worker and goes on polling and decoding
while the sink writes (COPY and WebHDFS release the GIL), so fetch, decode and the two
sinks overlap. Results come back on a shared queue as ``FlushDone``. A sink that is down
(SinkUnavailable, or a dead-letter write not acknowledged) is retried with exponential
backoff and jitter and reported degraded meanwhile; a revoked partition's pending retries
are cancelled so a new owner is never raced for long.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from dataclasses import dataclass

import msgspec

from batcher import metrics
from batcher.dlq import DeadLetter, DeadLetterWriter
from batcher.errors import FatalError, RetryableError
from batcher.policy import Backoff, Trigger
from sinks.base import Batch, RejectedRow, Sink, TopicPartition

log = logging.getLogger("batcher.workers")


@dataclass(frozen=True)
class FlushJob:
    sink: str
    batch: Batch
    trigger: Trigger


@dataclass(frozen=True)
class FlushDone:
    job: FlushJob
    rows: int
    seconds: float
    error: BaseException | None = None  # fatal error, or None on success
    cancelled: bool = False


class SinkWorker:
    """One sink's writers: ``lanes`` threads, each with its own sink instance.

    A partition always goes to the same lane (partition modulo lanes), so its batches are
    written in order, while different partitions' flushes run in parallel (two COPY
    connections, two WebHDFS uploads). ``control`` is a separate instance for the consumer
    loop's own reads (durable offsets, recovery), never shared with a writing thread.
    """

    def __init__(
        self,
        control: Sink,
        lanes: list[Sink],
        dlq: DeadLetterWriter | None,
        done: queue.Queue[FlushDone],
        backoff_initial_s: float,
        backoff_max_s: float,
    ) -> None:
        if not lanes:
            raise ValueError("a sink needs at least one writer lane")
        self.sink = control
        self.name = control.name
        self._lanes = [
            _Lane(self, sink, i, dlq, done, backoff_initial_s, backoff_max_s)
            for i, sink in enumerate(lanes)
        ]
        self._cancelled: set[TopicPartition] = set()
        self._lock = threading.Lock()

    @property
    def degraded(self) -> bool:
        return any(lane.degraded for lane in self._lanes)

    def start(self) -> None:
        for lane in self._lanes:
            lane.thread.start()

    def submit(self, job: FlushJob) -> None:
        with self._lock:
            self._cancelled.discard(job.batch.tp)
        metrics.FLUSH_TRIGGERS.labels(self.name, job.trigger.value).inc()
        self._lanes[job.batch.tp.partition % len(self._lanes)].jobs.put(job)

    def cancel(self, tps: set[TopicPartition]) -> None:
        """Drop queued or retrying jobs of ``tps`` (revoked: the new owner replays them)."""
        with self._lock:
            self._cancelled |= tps

    def is_cancelled(self, tp: TopicPartition) -> bool:
        with self._lock:
            return tp in self._cancelled

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds of each writer thread that has ended (after ``stop``)."""
        return {lane.thread.name: lane.cpu_s for lane in self._lanes if lane.cpu_s is not None}

    def stop(self, timeout: float = 10.0) -> None:
        for lane in self._lanes:
            lane.stop.set()
            lane.jobs.put(None)
        for lane in self._lanes:
            lane.thread.join(timeout)
            lane.sink.close()
        self.sink.close()


class _Lane:
    """One writer thread of a sink: its own queue, sink instance and backoff."""

    def __init__(
        self,
        owner: SinkWorker,
        sink: Sink,
        index: int,
        dlq: DeadLetterWriter | None,
        done: queue.Queue[FlushDone],
        backoff_initial_s: float,
        backoff_max_s: float,
    ) -> None:
        self.owner = owner
        self.sink = sink
        self.name = sink.name
        self._dlq = dlq
        self._done = done
        self.jobs: queue.Queue[FlushJob | None] = queue.Queue()
        self._backoff = Backoff(backoff_initial_s, backoff_max_s)
        self.stop = threading.Event()
        self.degraded = False
        self.cpu_s: float | None = None  # this thread's CPU seconds, once it has ended
        self.thread = threading.Thread(
            target=self._run, name=f"sink-{self.name}-{index}", daemon=True
        )

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                job = self.jobs.get()
                if job is None:
                    return
                self._done.put(self._execute(job))
        finally:
            self.cpu_s = time.thread_time()

    def _execute(self, job: FlushJob) -> FlushDone:
        t0 = time.monotonic()
        while True:
            if self.owner.is_cancelled(job.batch.tp) or self.stop.is_set():
                return FlushDone(job, 0, time.monotonic() - t0, cancelled=True)
            try:
                rows = self.sink.write(job.batch, self._dead_letter_rows(job.batch))
            except RetryableError as exc:
                self._degrade(job, exc)
                self.stop.wait(self._backoff.next_delay(random.random()))
                continue
            except FatalError as exc:
                metrics.FLUSH_FAILURES.labels(self.name, "fatal").inc()
                return FlushDone(job, 0, time.monotonic() - t0, error=exc)
            except Exception as exc:  # a bug or an untranslated driver error: stop loudly
                metrics.FLUSH_FAILURES.labels(self.name, "unexpected").inc()
                log.exception("unexpected error in %s sink", self.name)
                return FlushDone(job, 0, time.monotonic() - t0, error=exc)
            if self.degraded:
                log.info("%s sink is back after %d attempts", self.name, self._backoff.attempts)
            self.degraded = False
            self._backoff.reset()
            if not self.owner.degraded:
                metrics.SINK_DEGRADED.labels(self.name).set(0)
            return FlushDone(job, rows, time.monotonic() - t0)

    def _degrade(self, job: FlushJob, exc: Exception) -> None:
        metrics.FLUSH_FAILURES.labels(self.name, "unavailable").inc()
        metrics.SINK_DEGRADED.labels(self.name).set(1)
        if not self.degraded or self._backoff.attempts % 10 == 0:
            log.warning(
                "%s sink unavailable writing %s offsets %d..%d (attempt %d): %s",
                self.name,
                job.batch.tp,
                job.batch.first_offset,
                job.batch.next_offset - 1,
                self._backoff.attempts + 1,
                exc,
                extra={"sink": self.name, "topic": job.batch.tp.topic},
            )
        self.degraded = True

    def _dead_letter_rows(self, batch: Batch):  # type: ignore[no-untyped-def]
        def dead_letter(tp: TopicPartition, rows: list[RejectedRow]) -> None:
            if self._dlq is None:
                raise FatalError(f"{self.name} rejected rows but no dead-letter topic is set")
            offsets = batch.offsets.to_pylist()
            index = {off: i for i, off in enumerate(offsets)}
            letters = []
            for row in rows:
                values = batch.records.slice(index[row.offset], 1).to_pylist()[0]
                letters.append(
                    DeadLetter(
                        tp=tp,
                        offset=row.offset,
                        key=None,
                        value=msgspec.json.encode(values),
                        reason=row.reason,
                        error_class="RejectedRows",
                        message=row.message,
                    )
                )
            self._dlq.send(letters)

        return dead_letter
