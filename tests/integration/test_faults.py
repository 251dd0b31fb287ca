"""Crash safety: SIGKILL at every named point of the flush and commit path, then restart.

Each case arms one crash point (``BATCHER_CRASH_AT``) with a random skip and probability,
so the kill lands at different batches each run; the daemon is restarted until it has
committed everything, and then every ``event_id`` must be in Postgres once and in HDFS once.
"""

from __future__ import annotations

import functools
import random
from typing import Any

import pytest

from batcher.crashpoints import POINTS
from tests.integration.harness import BatcherProcess, Pipeline, produce, wait_for
from tests.integration.test_pipeline import assert_exactly_once, good_events

pytestmark = pytest.mark.integration

KILLS_PER_POINT = 3


@pytest.mark.parametrize("point", [pytest.param(p, id=p) for p in POINTS])
def test_sigkill_at_crash_point_then_restart_is_exactly_once(
    point: str,
    pipeline: Pipeline,
    hdfs_client: Any,
) -> None:
    rng = random.Random(point)
    p = pipeline
    stack_env = p.env
    # Small batches: many flushes, so many chances for each point to fire.
    p.pg_flush = "{ max_rows = 400, max_bytes = 16777216, max_age_s = 0.3 }"
    p.hdfs_flush = "{ max_rows = 1500, max_bytes = 16777216, max_age_s = 0.6 }"
    p.kafka_extra = "max_poll_records = 300"
    items, ids = good_events(9000, seed=hash(point) % 1000)
    produce(stack_env["KAFKA_BOOTSTRAP"], p.topic, items[:6000])
    kills = 0
    try:
        for attempt in range(KILLS_PER_POINT):
            env = {
                "BATCHER_CRASH_AT": point,
                # Fires at the (skip+1)-th pass. The first run fires at the first pass (a
                # point like before_kafka_commit may be passed only once or twice before
                # everything is committed); later runs land on other batches.
                "BATCHER_CRASH_SKIP": str(0 if attempt == 0 else rng.randint(0, 3)),
                "BATCHER_CRASH_PROB": "1.0",
            }
            proc = p.start(env)
            if attempt == 1:  # more input while the crashes go on
                produce(stack_env["KAFKA_BOOTSTRAP"], p.topic, items[6000:])
            wait_for(functools.partial(_died_or_done, proc, p), 90, f"crash at {point}")
            if proc.alive():
                assert proc.terminate() == 0, proc.output()[-2000:]
            else:
                assert proc.proc.returncode == -9, proc.output()[-3000:]
                kills += 1
        final = p.start()
        try:
            wait_for(p.all_committed, 120, "all committed after the crashes")
        finally:
            assert final.terminate() == 0, final.output()[-3000:]
    finally:
        p.close()
    assert kills >= 1, f"crash point {point} never fired"
    assert_exactly_once(p, hdfs_client, ids)


def _died_or_done(proc: BatcherProcess, p: Pipeline) -> bool:
    return not proc.alive() or p.all_committed()
