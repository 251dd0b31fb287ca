"""Every Prometheus metric the batcher exports, declared once, each saying what it answers.

Names follow Prometheus conventions: base units (seconds, bytes), ``_total`` for counters.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

# -- per sink ----------------------------------------------------------------------------
# How long does a flush take, per sink? (p50/p99 on the dashboard)
FLUSH_SECONDS = Histogram(
    "batcher_flush_duration_seconds",
    "Time to write one batch durably into a sink",
    ["sink"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
# How many rows / bytes reached each sink? (throughput per sink)
FLUSHED_ROWS = Counter(
    "batcher_flushed_rows_total", "Rows stored durably by a sink", ["sink"], registry=REGISTRY
)
FLUSHED_BYTES = Counter(
    "batcher_flushed_bytes_total",
    "Arrow bytes of the rows stored durably by a sink",
    ["sink"],
    registry=REGISTRY,
)
# Why do flushes fail? (reason: unavailable, fatal)
FLUSH_FAILURES = Counter(
    "batcher_flush_failures_total", "Failed flush attempts", ["sink", "reason"], registry=REGISTRY
)
# When did each sink last succeed? (alert: no flush for k x max age)
LAST_FLUSH = Gauge(
    "batcher_last_successful_flush_timestamp_seconds",
    "Unix time of the sink's last successful flush (the start time until the first one)",
    ["sink"],
    registry=REGISTRY,
)
# Is the sink reachable right now? (1 = retrying with backoff)
SINK_DEGRADED = Gauge(
    "batcher_sink_degraded",
    "1 while the sink is down and being retried",
    ["sink"],
    registry=REGISTRY,
)
# Why did flushes happen? (cause: rows, bytes, age, memory, rebalance, shutdown)
FLUSH_TRIGGERS = Counter(
    "batcher_flush_triggers_total",
    "Flushes started, by cause",
    ["sink", "cause"],
    registry=REGISTRY,
)

# -- per partition -----------------------------------------------------------------------
_TP = ["topic", "partition"]
# Where is the consumer? (next offset it will read)
CONSUMED_OFFSET = Gauge(
    "batcher_consumed_offset", "Next offset the batcher reads", _TP, registry=REGISTRY
)
# What does each sink hold durably? (next offset, from the sink's own storage and writes)
DURABLE_OFFSET = Gauge(
    "batcher_durable_offset", "Next offset a sink holds durably", [*_TP, "sink"], registry=REGISTRY
)
# What was committed to Kafka? (min over sinks of the durable offsets)
COMMITTED_OFFSET = Gauge(
    "batcher_committed_offset", "Offset committed to Kafka", _TP, registry=REGISTRY
)
# How far behind the log end is the batcher? (end offset - committed offset)
LAG = Gauge(
    "batcher_lag_records", "Records between the log end and the commit", _TP, registry=REGISTRY
)
# How stale is the oldest record not yet stored everywhere?
OLDEST_AGE = Gauge(
    "batcher_oldest_unflushed_age_seconds",
    "Age of the oldest buffered record not yet durable in every sink",
    _TP,
    registry=REGISTRY,
)
BUFFERED_ROWS = Gauge("batcher_buffered_rows", "Rows held in memory", _TP, registry=REGISTRY)
BUFFERED_BYTES = Gauge("batcher_buffered_bytes", "Bytes held in memory", _TP, registry=REGISTRY)
# Is a partition held back by backpressure?
PAUSED = Gauge(
    "batcher_partition_paused", "1 while the partition is paused", _TP, registry=REGISTRY
)

# -- process-wide ------------------------------------------------------------------------
# How close is the buffer to its budget?
BUFFER_BYTES_TOTAL = Gauge(
    "batcher_buffer_bytes", "Bytes buffered across all partitions", registry=REGISTRY
)
BUFFER_BUDGET = Gauge(
    "batcher_buffer_budget_bytes", "The configured memory budget for buffers", registry=REGISTRY
)
# What goes to the dead-letter topic, and why?
DEAD_LETTERS = Counter(
    "batcher_dead_letters_total",
    "Records sent to the dead-letter topic",
    ["topic", "reason"],
    registry=REGISTRY,
)
CONSUMED_RECORDS = Counter(
    "batcher_consumed_records_total", "Records read from Kafka", ["topic"], registry=REGISTRY
)
# Is the daemon able to make progress? (0 while a sink is down, before the consumer starts,
# or when the loop has stalled; an idle member of a larger group is ready)
READY = Gauge("batcher_ready", "1 when /readyz answers 200", registry=REGISTRY)
ASSIGNED = Gauge("batcher_assigned_partitions", "Partitions owned", registry=REGISTRY)
COMMITS = Counter("batcher_commits_total", "Offset commits to Kafka", registry=REGISTRY)


_PARTITION_GAUGES = (
    CONSUMED_OFFSET, COMMITTED_OFFSET, LAG, OLDEST_AGE, BUFFERED_ROWS, BUFFERED_BYTES, PAUSED,
)  # fmt: skip


def forget_partition(topic: str, partition: int, sinks: list[str]) -> None:
    """Drop a revoked partition's series, so sums across instances do not double-count."""
    labels = (topic, str(partition))
    for gauge in _PARTITION_GAUGES:
        with contextlib.suppress(KeyError):
            gauge.remove(*labels)
    for sink in sinks:
        with contextlib.suppress(KeyError):
            DURABLE_OFFSET.remove(topic, str(partition), sink)
