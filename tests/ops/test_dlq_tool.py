"""``batcher dlq inspect | replay`` on the real stack: fix a too-strict schema, replay once.

The route declares ``country`` NOT NULL, and some events omit it: the real daemon
dead-letters them (``missing_column``) and stores the rest. A few more records are garbage
(``invalid_json``). The operator then fixes the schema, in the config (nullable) and in the
table (``ALTER TABLE ... DROP NOT NULL``), replays ``--reason missing_column`` and runs the
daemon again: every good and every fixed event is in Postgres and in HDFS exactly once, the
garbage stays dead-lettered, and a second replay sends nothing (the replay group's committed
offsets). inspect and replay are called in-process; the daemon is the real subprocess.
"""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from kafka import KafkaConsumer

from batcher import dlqtool
from batcher.config import load_config
from ingest import synthetic
from tests.integration.harness import Pipeline, pg_dsn, produce, wait_for

pytestmark = pytest.mark.integration

LOOSE = '{ name = "country",    type = "text" },'
STRICT = '{ name = "country",    type = "text",      nullable = false },'


@dataclass
class StrictCountry(Pipeline):
    """The harness's route, with ``country`` NOT NULL until ``strict`` is switched off."""

    strict: bool = True

    def write_config(self) -> Path:
        path = super().write_config()
        text = path.read_text()
        assert LOOSE in text
        if self.strict:
            path.write_text(text.replace(LOOSE, STRICT))
        return path


@pytest.fixture
def pipeline(
    stack_env: dict[str, str],
    tmp_path: Path,
    new_topic: Callable[..., str],
    pg_schema: str,
    hdfs_dir: str,
) -> Iterator[StrictCountry]:
    p = StrictCountry(stack_env, tmp_path, new_topic(3), pg_schema, hdfs_dir)
    yield p
    p.close()


def _events(n: int, seed: int) -> tuple[list[tuple[bytes | None, bytes]], set[str], set[str], int]:
    """(records, good ids, ids without country, garbage count): every 5th event lacks
    country, every 50th record is truncated JSON."""
    items: list[tuple[bytes | None, bytes]] = []
    good: set[str] = set()
    no_country: set[str] = set()
    garbage = 0
    for i, (key, value) in enumerate(synthetic.records(n, seed=seed)):
        event = msgspec.json.decode(value)
        if i % 50 == 49:
            items.append((key, value[: len(value) // 2]))
            garbage += 1
        elif i % 5 == 0:
            del event["country"]
            items.append((key, msgspec.json.encode(event)))
            no_country.add(event["event_id"])
        else:
            items.append((key, value))
            good.add(event["event_id"])
    return items, good, no_country, garbage


def _read_all(bootstrap: str, topic: str) -> list[Any]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
        group_id=f"check-{uuid.uuid4().hex[:6]}",
    )
    records = list(consumer)
    consumer.close()
    return records


def _run_until_committed(p: Pipeline) -> None:
    proc = p.start()
    try:
        wait_for(p.all_committed, 120, "all offsets committed")
    finally:
        code = proc.terminate()
    assert code == 0, proc.output()[-3000:]


def test_fix_the_schema_replay_and_every_event_lands_exactly_once(
    pipeline: StrictCountry, hdfs_client: Any
) -> None:
    p = pipeline
    bootstrap = p.env["KAFKA_BOOTSTRAP"]
    items, good, no_country, garbage = _events(2000, seed=31)
    produce(bootstrap, p.topic, items)

    # 1. The strict schema: events without country are dead-lettered, the rest land.
    _run_until_committed(p)
    assert sorted(p.pg_event_ids()) == sorted(good)
    with psycopg.connect(pg_dsn(p.env)) as conn:
        nullable = conn.execute(
            "SELECT is_nullable FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = 'events' AND column_name = 'country'",
            (p.schema,),
        ).fetchone()
    assert nullable == ("NO",), "the daemon created the table from the strict route"

    # 2. inspect: counts by reason and origin partition, samples with headers and value.
    config = load_config(p.write_config())
    out = io.StringIO()
    [seen] = dlqtool.inspect(config, samples=3, out=out)
    assert seen.topic == p.topic + ".dlq"
    assert seen.total == len(no_country) + garbage
    assert dict(seen.by_reason) == {"missing_column": len(no_country), "invalid_json": garbage}
    assert sum(seen.by_origin.values()) == seen.total
    assert set(seen.by_origin) == {f"{p.topic}[{i}]" for i in range(3)}
    assert seen.not_replayed == seen.total
    text = out.getvalue()
    assert "missing_column" in text and "invalid_json" in text, text
    assert "dlq.origin.offset" in text and "value: " in text, text
    assert len(seen.samples) == 3 and {s.reason for s in seen.samples} >= {
        "missing_column",
        "invalid_json",
    }

    # 3. Fix the schema: nullable in the config and in the table.
    p.strict = False
    with psycopg.connect(pg_dsn(p.env), autocommit=True) as conn:
        conn.execute(f'ALTER TABLE "{p.schema}".events ALTER COLUMN country DROP NOT NULL')
    config = load_config(p.write_config())

    # 4. Replay only what the fix cures; a dry run first sends and commits nothing.
    [dry] = dlqtool.replay(config, reasons=["missing_column"], dry_run=True, progress=False)
    assert (dry.replayed, dry.passed_over) == (len(no_country), garbage)
    [done] = dlqtool.replay(config, reasons=["missing_column"], progress=False)
    assert (done.replayed, done.passed_over) == (len(no_country), garbage)
    assert dict(done.to) == {p.topic: len(no_country)}
    # Not twice across runs: the replay group committed past everything it handled.
    [again] = dlqtool.replay(config, progress=False)
    assert (again.replayed, again.passed_over) == (0, 0)
    [after] = dlqtool.inspect(config, out=io.StringIO())
    assert after.not_replayed == 0

    replayed = [r for r in _read_all(bootstrap, p.topic) if dict(r.headers).get("dlq.replayed")]
    assert len(replayed) == len(no_country)
    for r in replayed:
        headers = dict(r.headers)
        assert headers["dlq.replayed"] == b"true"
        assert re.fullmatch(
            rf"{re.escape(p.topic)}\.dlq:\d:\d+", headers["dlq.replayed.from"].decode()
        )
    assert {msgspec.json.decode(r.value)["event_id"] for r in replayed} == no_country

    # 5. The daemon again: the replayed events land, nothing new is dead-lettered.
    _run_until_committed(p)
    expected = good | no_country
    pg_ids = p.pg_event_ids()
    assert len(pg_ids) == len(expected) and set(pg_ids) == expected, "postgres exactly once"
    hdfs_ids = p.hdfs_table(hdfs_client).column("event_id").to_pylist()
    assert len(hdfs_ids) == len(expected) and set(hdfs_ids) == expected, "hdfs exactly once"
    with psycopg.connect(pg_dsn(p.env)) as conn:
        nulls = conn.execute(
            f'SELECT count(*) FROM "{p.schema}".events WHERE country IS NULL'
        ).fetchone()
    assert nulls == (len(no_country),)
    assert len(_read_all(bootstrap, p.topic + ".dlq")) == len(no_country) + garbage


def test_cli_parsers_wire_inspect_and_replay(pipeline: StrictCountry) -> None:
    """The functions the ``batcher`` command wires in: the arguments parse, and inspect runs
    on a route that never dead-lettered anything (its .dlq topic does not exist)."""
    import argparse

    parser = argparse.ArgumentParser(prog="batcher")
    sub = parser.add_subparsers(dest="command", required=True)
    dlqtool.add_dlq_parser(sub)
    cfg = str(pipeline.write_config())
    args = parser.parse_args(
        ["dlq", "replay", "-c", cfg, "--reason", "a", "--reason", "b",
         "--since", "2024-05-01T00:00:00", "--to", "other", "--dry-run", "--no-progress"]
    )  # fmt: skip
    assert (args.command, args.dlq_command, args.reason, args.to) == (
        "dlq",
        "replay",
        ["a", "b"],
        "other",
    )
    assert args.since.tzinfo is not None and args.group == dlqtool.REPLAY_GROUP
    args = parser.parse_args(["dlq", "inspect", "-c", cfg, "--samples", "2"])
    assert args.samples == 2 and args.log_format is None and args.config == cfg
    assert dlqtool.run_dlq(args, load_config(cfg)) == 0
    assert dlqtool.parse_since("2024-05-01T00:00:00+02:00").utcoffset() is not None
    with pytest.raises(dlqtool.DlqError):
        dlqtool.parse_since("yesterday")
