"""End to end on the real stack: Kafka -> batcher daemon -> PostgreSQL and HDFS."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
import urllib.request
from typing import Any

import psycopg
import pytest

from ingest import synthetic
from tests.conftest import REPO
from tests.integration.harness import Pipeline, dead_letters, pg_dsn, produce, wait_for

pytestmark = pytest.mark.integration


def assert_exactly_once(p: Pipeline, hdfs_client: Any, expected: set[str]) -> None:
    pg_ids = p.pg_event_ids()
    assert len(pg_ids) == len(expected), "postgres row count"
    assert set(pg_ids) == expected, "postgres holds exactly the good events"
    hdfs_ids = p.hdfs_table(hdfs_client).column("event_id").to_pylist()
    assert len(hdfs_ids) == len(expected), "hdfs row count"
    assert set(hdfs_ids) == expected, "hdfs holds exactly the good events"


def good_events(n: int, seed: int) -> tuple[list[tuple[bytes | None, bytes]], set[str]]:
    items = list(synthetic.records(n, seed=seed))
    ids = {re.search(rb'"event_id":"([^"]+)"', v).group(1).decode() for _, v in items}  # type: ignore[union-attr]
    return items, ids


def test_n_events_land_exactly_once_in_both_sinks(pipeline: Pipeline, hdfs_client: Any) -> None:
    items, ids = good_events(30_000, seed=1)
    produce(pipeline.env["KAFKA_BOOTSTRAP"], pipeline.topic, items)
    proc = pipeline.start()
    try:
        wait_for(pipeline.all_committed, 120, "all offsets committed")
        metrics = proc.metrics(pipeline.port)
    finally:
        code = proc.terminate()
    assert code == 0, proc.output()[-3000:]
    assert "cpu seconds by thread: main=" in proc.output()
    assert pipeline.env["PGPASSWORD"] not in proc.output(), "the password leaked into the log"
    assert_exactly_once(pipeline, hdfs_client, ids)
    # types: a real uuid, timestamptz and bigint came out of the COPY
    with psycopg.connect(pg_dsn(pipeline.env)) as conn:
        row = conn.execute(
            f"SELECT pg_typeof(event_id)::text, pg_typeof(ts)::text, pg_typeof(user_id)::text,"
            f' pg_typeof(payload)::text, ts FROM "{pipeline.schema}".events LIMIT 1'
        ).fetchone()
    assert row is not None and row[:4] == ("uuid", "timestamp with time zone", "bigint", "jsonb")
    assert isinstance(row[4], dt.datetime) and row[4].tzinfo is not None
    # metrics: nonzero flush counters, labelled by sink
    for sink in ("postgres", "hdfs"):
        m = re.search(rf'batcher_flushed_rows_total{{sink="{sink}"}} (\S+)', metrics)
        assert m and float(m.group(1)) == len(ids), f"{sink} flushed rows metric"
        assert f'batcher_flush_duration_seconds_count{{sink="{sink}"}}' in metrics
    assert re.search(r'batcher_durable_offset\{partition="\d",sink="postgres",topic=', metrics)


def test_sigterm_mid_stream_then_restart_gives_exactly_n(
    pipeline: Pipeline, hdfs_client: Any
) -> None:
    items, ids = good_events(40_000, seed=2)
    produce(pipeline.env["KAFKA_BOOTSTRAP"], pipeline.topic, items[:20_000])
    first = pipeline.start()
    wait_for(lambda: len(pipeline.pg_event_ids()) > 0, 60, "some rows in postgres")
    produce(pipeline.env["KAFKA_BOOTSTRAP"], pipeline.topic, items[20_000:])
    assert first.terminate() == 0, first.output()[-3000:]
    assert "stopped cleanly" in first.output()
    second = pipeline.start()
    try:
        wait_for(pipeline.all_committed, 120, "all offsets committed after restart")
    finally:
        assert second.terminate() == 0, second.output()[-3000:]
    assert_exactly_once(pipeline, hdfs_client, ids)


def test_idle_partition_flushes_on_age(pipeline: Pipeline) -> None:
    pipeline.pg_flush = "{ max_rows = 1000000, max_bytes = 16777216, max_age_s = 1 }"
    proc = pipeline.start()
    try:
        wait_for(lambda: "assigned" in proc.output(), 60, "partitions assigned")
        items, ids = good_events(7, seed=3)
        produce(pipeline.env["KAFKA_BOOTSTRAP"], pipeline.topic, items)
        # No further record arrives: only the wall-clock age trigger can flush these.
        wait_for(lambda: set(pipeline.pg_event_ids()) == ids, 30, "aged rows in postgres")
    finally:
        assert proc.terminate() == 0


def test_readyz_and_healthz(pipeline: Pipeline) -> None:
    proc = pipeline.start()
    try:
        url = f"http://127.0.0.1:{pipeline.port}"

        def ready() -> bool:
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_for(ready, 60, "/readyz 200")
        with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
            assert r.status == 200
    finally:
        assert proc.terminate() == 0


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batcher.cli", *args], cwd=REPO, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


def test_check_passes_on_the_good_config(pipeline: Pipeline) -> None:
    out = run_cli("check", "-c", str(pipeline.write_config()))
    assert out.returncode == 0, out.stderr
    assert pipeline.env["PGPASSWORD"] not in out.stdout + out.stderr


def test_check_fails_clearly_on_a_wrong_dsn(pipeline: Pipeline) -> None:
    cfg = pipeline.write_config()
    text = cfg.read_text().replace(f"port={pipeline.env['PGPORT']}", "port=1")
    cfg.write_text(text)
    out = run_cli("check", "-c", str(cfg))
    assert out.returncode != 0
    assert "postgres" in out.stderr and "unavailable" in out.stderr
    assert pipeline.env["PGPASSWORD"] not in out.stdout + out.stderr


def test_check_fails_on_a_table_whose_columns_do_not_match(pipeline: Pipeline) -> None:
    with psycopg.connect(pg_dsn(pipeline.env), autocommit=True) as conn:
        conn.execute(f'CREATE TABLE "{pipeline.schema}".events (event_id uuid, ts text)')
    out = run_cli("check", "-c", str(pipeline.write_config()))
    assert out.returncode != 0
    assert "ts" in out.stderr and "user_id" in out.stderr, out.stderr


def test_status_shows_offsets_per_sink(pipeline: Pipeline) -> None:
    items, _ = good_events(500, seed=4)
    produce(pipeline.env["KAFKA_BOOTSTRAP"], pipeline.topic, items)
    proc = pipeline.start()
    try:
        wait_for(pipeline.all_committed, 60, "all committed")
    finally:
        assert proc.terminate() == 0
    out = run_cli("status", "-c", str(pipeline.write_config()))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0].split() == ["partition", "end", "committed", "postgres", "hdfs", "lag"]
    total = 0
    for line in lines[1:]:
        _tp, end, committed, pg, hdfs, lag = line.split()
        assert end == committed == pg == hdfs and lag == "0"
        total += int(end)
    assert total == 500


def test_bad_records_go_to_the_dead_letter_topic(pipeline: Pipeline, hdfs_client: Any) -> None:

    items = list(synthetic.records(3000, seed=5, bad_ratio=0.1))
    good = set()
    for _, v in items:
        try:
            m = re.search(rb'"event_id":"([^"]+)"', v)
            import msgspec

            obj = msgspec.json.decode(v)
            if isinstance(obj, dict) and m and v and _is_valid(obj):
                good.add(m.group(1).decode())
        except (msgspec.DecodeError, UnicodeDecodeError):
            pass
    produce(pipeline.env["KAFKA_BOOTSTRAP"], pipeline.topic, items)
    proc = pipeline.start()
    try:
        wait_for(pipeline.all_committed, 90, "all committed")
    finally:
        assert proc.terminate() == 0, proc.output()[-2000:]
    assert_exactly_once(pipeline, hdfs_client, good)
    letters = dead_letters(pipeline)
    assert len(letters) == len(items) - len(good)
    headers = dict(letters[0].headers)
    assert headers["dlq.origin.topic"].decode() == pipeline.topic
    assert {"dlq.origin.partition", "dlq.origin.offset", "dlq.reason", "dlq.error.message"} <= set(
        headers
    )


def _is_valid(obj: dict[str, Any]) -> bool:
    uid = obj.get("user_id")
    ts = obj.get("ts")
    if not isinstance(uid, int) or isinstance(uid, bool) or not -(2**63) <= uid < 2**63:
        return False
    if not isinstance(obj.get("event_type"), str):
        return False
    try:
        dt.datetime.fromisoformat(str(ts).replace("Z", "+00:00"))
    except ValueError:
        return False
    return True
