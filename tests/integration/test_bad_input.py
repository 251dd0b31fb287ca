"""Bad input never stops the pipeline, and a clearly broken topic stops the daemon."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import psycopg
import pytest

from tests.integration.harness import Pipeline, dead_letters, pg_dsn, produce, wait_for
from tests.integration.test_pipeline import good_events

pytestmark = pytest.mark.integration


def test_rows_postgres_rejects_are_isolated_and_dead_lettered(
    pipeline: Pipeline, hdfs_client: Any
) -> None:
    """A check constraint refuses some rows: they go to the DLQ, the rest of the batch loads."""
    p = pipeline
    p.hdfs_flush = "{ max_rows = 20000, max_bytes = 33554432, max_age_s = 1 }"
    with psycopg.connect(pg_dsn(p.env), autocommit=True) as conn:
        conn.execute(
            f'CREATE TABLE "{p.schema}".events (event_id uuid NOT NULL, ts timestamptz NOT NULL,'
            " user_id bigint NOT NULL CHECK (user_id % 97 <> 0), event_type text NOT NULL,"
            " amount double precision, country text, payload jsonb)"
        )
    items, _ = good_events(5000, seed=11)
    bad_ids = set()
    good_ids = set()
    for _, value in items:
        obj = msgspec.json.decode(value)
        (bad_ids if obj["user_id"] % 97 == 0 else good_ids).add(obj["event_id"])
    assert bad_ids, "the seed must produce some rows the constraint refuses"
    produce(p.env["KAFKA_BOOTSTRAP"], p.topic, items)
    proc = p.start()
    try:
        wait_for(p.all_committed, 120, "all committed")
    finally:
        assert proc.terminate() == 0, proc.output()[-3000:]
    assert set(p.pg_event_ids()) == good_ids
    assert len(p.pg_event_ids()) == len(good_ids)
    letters = dead_letters(p)
    reasons = {dict(m.headers)["dlq.reason"].decode() for m in letters}
    assert reasons == {"pg_check_violation"}
    assert {msgspec.json.decode(m.value)["event_id"] for m in letters} == bad_ids
    # HDFS refuses nothing: it holds every event exactly once.
    hdfs_ids = p.hdfs_table(hdfs_client).column("event_id").to_pylist()
    assert sorted(hdfs_ids) == sorted(good_ids | bad_ids)


@pytest.mark.parametrize(
    ("policy", "lands", "dlq"),
    [
        pytest.param("ignore", True, False, id="ignore"),
        pytest.param("keep", True, False, id="keep"),
        pytest.param("reject", False, True, id="reject"),
    ],
)
def test_unknown_fields_follow_the_route_policy(
    pipeline: Pipeline, policy: str, lands: bool, dlq: bool
) -> None:
    p = pipeline
    p.route_extra = f'unknown_fields = "{policy}"'
    items, ids = good_events(50, seed=12)
    extra = [(k, v[:-1] + b',"surprise":{"x":1}}') for k, v in items]
    produce(p.env["KAFKA_BOOTSTRAP"], p.topic, extra)
    proc = p.start()
    try:
        wait_for(p.all_committed, 60, "all committed")
    finally:
        assert proc.terminate() == 0, proc.output()[-3000:]
    assert (set(p.pg_event_ids()) == ids) is lands
    letters = dead_letters(p)
    assert (len(letters) == 50) is dlq
    if dlq:
        assert {dict(m.headers)["dlq.reason"] for m in letters} == {b"unknown_field"}
    if policy == "keep":
        with psycopg.connect(pg_dsn(p.env)) as conn:
            kept = conn.execute(f'SELECT extra FROM "{p.schema}".events LIMIT 1').fetchone()
        assert kept is not None and kept[0] == {"surprise": {"x": 1}}


def test_a_broken_topic_stops_the_daemon_with_a_clear_error(pipeline: Pipeline) -> None:
    p = pipeline
    p.extra = ""
    p.kafka_extra = ""
    cfg_limits = "bad_ratio_window = 200\nbad_consecutive_max = 100"
    produce(p.env["KAFKA_BOOTSTRAP"], p.topic, [(None, b"not json %d" % i) for i in range(500)])
    config = p.write_config()
    text = config.read_text().replace("[limits]\n", f"[limits]\n{cfg_limits}\n")
    config.write_text(text)
    from tests.integration.harness import BatcherProcess

    proc = BatcherProcess.start(config, p.tmp)
    wait_for(lambda: not proc.alive(), 60, "the daemon to stop on its own")
    assert proc.proc.returncode == 1
    out = proc.output()
    assert re.search(r"consecutive bad records|bad-record ratio", out), out[-2000:]
    assert p.topic + ".dlq" in out
