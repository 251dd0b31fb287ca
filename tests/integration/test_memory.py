"""Bounded memory: one byte budget across all buffers; reaching it flushes the fullest."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import Pipeline, produce, wait_for
from tests.integration.test_pipeline import assert_exactly_once, good_events

pytestmark = pytest.mark.integration

BUDGET = 8 << 20
# Above the idle daemon's own RSS (~120 MiB): the budget, plus a flush's transient copies
# (the batch handed to a sink, its encoded COPY/Parquet bytes), the consumer's fetch
# buffers and the Arrow/Parquet library pages first touched by the first flush. Measured
# peak growth with an 8 MiB budget: 116-170 MiB.
SLACK = 200 << 20


def _rss(pid: int, field: str = "VmHWM") -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    m = re.search(rf"{field}:\s+(\d+) kB", text)
    assert m
    return int(m.group(1)) * 1024


def test_memory_budget_flushes_the_fullest_buffer(
    pipeline: Pipeline,
    hdfs_client: Any,
) -> None:
    p = pipeline
    stack_env = p.env
    p.pg_flush = "{ max_rows = 5000, max_bytes = 4194304, max_age_s = 1 }"
    p.kafka_extra = "fetch_max_bytes = 4194304\nmax_partition_fetch_bytes = 1048576"
    # HDFS would wait an hour: only the memory budget can make it flush.
    p.hdfs_flush = f"{{ max_rows = 100000000, max_bytes = {BUDGET}, max_age_s = 3600 }}"
    items, ids = good_events(60_000, seed=21)
    config = p.write_config()
    config.write_text(
        config.read_text().replace(
            "memory_budget_bytes = 134217728", f"memory_budget_bytes = {BUDGET}"
        )
    )
    from tests.integration.harness import BatcherProcess

    proc = BatcherProcess.start(config, p.tmp)
    try:
        wait_for(lambda: "assigned" in proc.output(), 60, "partitions assigned")
        idle = _rss(proc.proc.pid, "VmRSS")
        produce(stack_env["KAFKA_BOOTSTRAP"], p.topic, items)
        wait_for(lambda: len(p.pg_event_ids()) == len(ids), 120, "every row in postgres")

        def memory_flushes() -> float:
            m = re.search(
                r'batcher_flush_triggers_total{cause="memory",sink="hdfs"} (\S+)',
                proc.metrics(p.port),
            )
            return float(m.group(1)) if m else 0.0

        wait_for(memory_flushes, 60, "an hdfs flush caused by the memory budget")
        peak = _rss(proc.proc.pid)
        print(
            f"batcher RSS idle {idle >> 20} MiB, peak {peak >> 20} MiB, budget {BUDGET >> 20} MiB"
        )
        assert peak < idle + BUDGET + SLACK
    finally:
        p.close()
        assert proc.terminate() == 0, proc.output()[-3000:]
    assert_exactly_once(p, hdfs_client, ids)
