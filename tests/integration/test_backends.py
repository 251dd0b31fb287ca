"""The end-to-end scenarios again with ``kafka.backend = "confluent"`` (confluent-kafka), and a
group where both backends share the partitions across a rebalance.

The kafka-python backend (the default) is what tests/integration/test_pipeline.py runs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import BatcherProcess, Pipeline, produce, wait_for
from tests.integration.test_pipeline import assert_exactly_once, good_events

pytestmark = pytest.mark.integration

pytest.importorskip("confluent_kafka")

CONFLUENT = {"BATCHER__KAFKA__BACKEND": "confluent"}


def test_confluent_n_events_land_exactly_once_in_both_sinks(
    pipeline: Pipeline, hdfs_client: Any
) -> None:
    items, ids = good_events(30_000, seed=11)
    produce(pipeline.env["KAFKA_BOOTSTRAP"], pipeline.topic, items)
    proc = pipeline.start(CONFLUENT)
    try:
        wait_for(pipeline.all_committed, 120, "all offsets committed")
        # The daemon sets its gauges just after the commit returns: a scrape right after
        # Kafka shows the commit can precede them by a turn, so poll until the lag is 0.
        metrics = wait_for(
            lambda: _when_lag_is_zero(proc.metrics(pipeline.port), partitions=3),
            10,
            "lag 0 on every partition (from cached watermarks)",
        )
    finally:
        code = proc.terminate()
    out = proc.output()
    assert code == 0, out[-3000:]
    assert "(confluent)" in out, "the daemon did not run the confluent backend"
    assert pipeline.env["PGPASSWORD"] not in out, "the password leaked into the log"
    assert pipeline.committed() == pipeline.end_offsets()
    assert_exactly_once(pipeline, hdfs_client, ids)
    for sink in ("postgres", "hdfs"):
        m = re.search(rf'batcher_flushed_rows_total{{sink="{sink}"}} (\S+)', metrics)
        assert m and float(m.group(1)) == len(ids), f"{sink} flushed rows metric"


def _when_lag_is_zero(metrics: str, partitions: int) -> str:
    """``metrics`` when it shows a lag of 0 for every partition, else ""."""
    lags = re.findall(r"^batcher_lag_records\{[^}]*\} (\S+)$", metrics, re.M)
    return metrics if [float(v) for v in lags] == [0.0] * partitions else ""


def test_confluent_sigterm_mid_stream_then_restart_gives_exactly_n(
    pipeline: Pipeline, hdfs_client: Any
) -> None:
    items, ids = good_events(40_000, seed=12)
    produce(pipeline.env["KAFKA_BOOTSTRAP"], pipeline.topic, items[:20_000])
    first = pipeline.start(CONFLUENT)
    wait_for(lambda: len(pipeline.pg_event_ids()) > 0, 60, "some rows in postgres")
    produce(pipeline.env["KAFKA_BOOTSTRAP"], pipeline.topic, items[20_000:])
    assert first.terminate() == 0, first.output()[-3000:]
    assert "stopped cleanly" in first.output()
    second = pipeline.start(CONFLUENT)
    try:
        wait_for(pipeline.all_committed, 120, "all offsets committed after restart")
    finally:
        assert second.terminate() == 0, second.output()[-3000:]
    assert "(confluent)" in second.output()
    assert pipeline.committed() == pipeline.end_offsets()
    assert_exactly_once(pipeline, hdfs_client, ids)


def test_both_backends_in_one_group_share_partitions_across_a_rebalance(
    pipeline: Pipeline, hdfs_client: Any, tmp_path: Path
) -> None:
    """A confluent batcher drains (and commits) on revocation when a kafka-python one joins."""
    pipeline.pg_flush = "{ max_rows = 2000, max_bytes = 16777216, max_age_s = 0.5 }"
    items, ids = good_events(40_000, seed=13)
    bootstrap = pipeline.env["KAFKA_BOOTSTRAP"]
    produce(bootstrap, pipeline.topic, items[:20_000])
    fast = pipeline.start(CONFLUENT)
    wait_for(lambda: len(pipeline.pg_event_ids()) > 0, 60, "some rows in postgres")
    # A second instance (own metrics port) of the default backend joins the same group.
    config = pipeline.write_config()
    second = tmp_path / "second.toml"
    second.write_text(config.read_text().replace(f"port = {pipeline.port}", "port = 0"))
    slow = BatcherProcess.start(second, tmp_path)
    try:
        wait_for(lambda: "revoked" in fast.output(), 60, "the confluent batcher's revocation")
        produce(bootstrap, pipeline.topic, items[20_000:])
        wait_for(pipeline.all_committed, 120, "all offsets committed by the two batchers")
        wait_for(lambda: "assigned" in slow.output(), 30, "partitions for the second batcher")
    finally:
        assert fast.terminate() == 0, fast.output()[-3000:]
        assert slow.terminate() == 0, slow.output()[-3000:]
    assert "(confluent)" in fast.output() and "(kafka-python)" in slow.output()
    assert_exactly_once(pipeline, hdfs_client, ids)
