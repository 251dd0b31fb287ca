"""``python -m demo``: emit 100k events, run the batcher, show what landed where.

Run it with ``make demo``, which installs what is missing and starts the local stack first.
Every step is announced; if one fails, the batcher's log tail is printed and the exit status
is 1. The batcher's whole log is in ``.stack/logs/demo-batcher.log``, its config (derived from
``config/local.toml``) in ``.stack/demo.toml``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from batcher.config import read_env_file

REPO = Path(__file__).resolve().parent.parent
STACK = REPO / ".stack"
ENV_FILE = STACK / "env"
BASE_CONFIG = REPO / "config" / "local.toml"
DEMO_CONFIG = STACK / "demo.toml"
BATCHER_LOG = STACK / "logs" / "demo-batcher.log"

TOPIC = "demo.events"
PARTITIONS = 6
DLQ_PARTITIONS = 1
TABLE = "public.demo_events"
HDFS_DIR = "/demo/events"
GROUP = "demo-batcher"
EVENTS = 100_000
BAD_RATIO = 0.001
METRICS_PORT = 9108

CATCH_UP_TIMEOUT_S = 300.0
PROGRESS_EVERY_S = 2.0
STOP_TIMEOUT_S = 90.0  # above the config's shutdown_budget_s (60 s)
LOG_TAIL_LINES = 40
SHOWN_FILES = 24
SHOWN_METRICS = (
    "batcher_flushed_rows_total",
    "batcher_flush_duration_seconds_count",
    "batcher_dead_letters_total",
    "batcher_lag_records",
)


class DemoError(Exception):
    """A step failed; the message says which and why."""


def say(text: str = "") -> None:
    print(text, flush=True)


def heading(step: int, text: str) -> None:
    say()
    say(f"==> [{step}/5] {text}")


def indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in text.rstrip("\n").splitlines())


# -- environment and config --------------------------------------------------------------


def load_stack_env() -> dict[str, str]:
    """The local stack's settings (``export K=V`` lines), put into os.environ."""
    if not ENV_FILE.exists():
        raise DemoError(f"{ENV_FILE} is missing: start the stack first (make stack-up)")
    env = read_env_file(ENV_FILE)
    missing = [k for k in ("KAFKA_BOOTSTRAP", "PGHOST", "PGPASSWORD", "HDFS_URL") if k not in env]
    if missing:
        raise DemoError(f"{ENV_FILE} lacks {', '.join(missing)}: run make stack-up again")
    os.environ.update(env)  # the stack's values win: the demo runs against the local stack
    return env


def child_env() -> dict[str, str]:
    """The environment of the CLIs the demo runs: the stack's settings, and no BATCHER__
    override from the caller's shell, which would change the demo's config behind its back."""
    return {k: v for k, v in os.environ.items() if not k.startswith("BATCHER__")}


def metrics_port() -> int:
    """9108 when it is free on 127.0.0.1, else a free port the kernel picks. The probe sets
    SO_REUSEADDR as the batcher's HTTP server does: a port left in TIME_WAIT by the last
    run's scrapes is free for it."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", METRICS_PORT))
            return METRICS_PORT
        except OSError:
            pass
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON escapes are TOML escapes
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }"
    if isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value):
            return "[\n" + "".join(f"  {_toml_value(v)},\n" for v in value) + "]"
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise DemoError(f"cannot write {value!r} ({type(value).__name__}) as TOML")


def _toml_document(data: dict[str, Any], header: str) -> str:
    """Top-level keys, then [sections] (nested tables inline), then [[arrays of tables]]."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    arrays = {
        k: v
        for k, v in data.items()
        if isinstance(v, list) and v and all(isinstance(i, dict) for i in v)
    }
    for key, value in data.items():
        if key not in tables and key not in arrays:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, table in tables.items():
        lines += ["", f"[{_toml_key(key)}]"]
        lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()]
    for key, items in arrays.items():
        for item in items:
            lines += ["", f"[[{_toml_key(key)}]]"]
            lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in item.items()]
    return "\n".join(lines) + "\n"


def write_demo_config(port: int) -> Any:
    """``.stack/demo.toml``: config/local.toml with the demo's topic, table, HDFS directory,
    group and metrics port; everything else (flush policies, limits, columns) as it is."""
    data = tomllib.loads(BASE_CONFIG.read_text())
    routes = data.get("routes") or []
    if not routes:
        raise DemoError(f"{BASE_CONFIG} declares no [[routes]] to base the demo route on")
    route = next((r for r in routes if r.get("topic") == "events"), routes[0])
    data["env_file"] = ENV_FILE.name  # relative to the config: .stack/env
    data.setdefault("kafka", {})["group_id"] = GROUP
    data.setdefault("metrics", {}).update(host="127.0.0.1", port=port)
    data["routes"] = [{**route, "topic": TOPIC, "table": TABLE, "hdfs_dir": HDFS_DIR}]
    header = (
        "Written by `make demo` (python -m demo) on every run: config/local.toml with the\n"
        f"demo's topic ({TOPIC}), table ({TABLE}), HDFS directory ({HDFS_DIR}),\n"
        f"group ({GROUP}) and metrics port ({port}). Edit config/local.toml, not this\n"
        "file. Reference: docs/configuration.md\n"
    )
    DEMO_CONFIG.parent.mkdir(parents=True, exist_ok=True)
    DEMO_CONFIG.write_text(_toml_document(data, header))
    # Validate it the way the batcher will, so a problem is named here, not in its log.
    from batcher.config import load_config
    from batcher.errors import ConfigError

    try:
        config = load_config(DEMO_CONFIG, child_env())
    except ConfigError as exc:
        raise DemoError(f"the demo config {DEMO_CONFIG} is invalid: {exc}") from None
    got = (config.routes[0].topic, config.kafka.group_id, config.metrics.port)
    if got != (TOPIC, GROUP, port):
        raise DemoError(f"{DEMO_CONFIG}: expected {(TOPIC, GROUP, port)}, read {got}")
    return config


# -- Kafka ---------------------------------------------------------------------------------


def kafka_consumer(group_id: str | None = None) -> Any:
    """A consumer that never joins a group: reads end offsets, commits, the DLQ."""
    from kafka import KafkaConsumer

    return KafkaConsumer(
        bootstrap_servers=os.environ["KAFKA_BOOTSTRAP"],
        group_id=group_id,
        enable_auto_commit=False,
        request_timeout_ms=30_000,
    )


def ensure_topic(name: str, partitions: int) -> int:
    """Create ``name`` unless it exists; returns its partition count once Kafka reports it."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=os.environ["KAFKA_BOOTSTRAP"])
    try:
        created = False
        if name not in set(admin.list_topics()):
            with contextlib.suppress(TopicAlreadyExistsError):  # created meanwhile: fine
                admin.create_topics([NewTopic(name, partitions, 1)])
                created = True
        deadline = time.monotonic() + 30
        while True:
            (info,) = admin.describe_topics([name])
            count = len(info["partitions"])
            if info["error_code"] == 0 and count >= (partitions if created else 1):
                break
            if time.monotonic() > deadline:
                raise DemoError(f"topic {name} is not ready in Kafka after 30 s: {info}")
            time.sleep(0.2)
    finally:
        admin.close()
    if created:
        say(f"    created {name} with {count} partitions")
    elif count == partitions:
        say(f"    {name} exists already ({count} partitions)")
    else:
        say(f"    {name} exists already with {count} partitions (not {partitions}): using those")
    return count


def topic_offsets(consumer: Any, topic: str) -> tuple[dict[int, int], dict[int, int]]:
    """Beginning and end offset of each partition of ``topic`` ({} when it does not exist)."""
    from kafka import TopicPartition

    parts = sorted(consumer.partitions_for_topic(topic) or [])
    tps = [TopicPartition(topic, p) for p in parts]
    if not tps:
        return {}, {}
    begins = consumer.beginning_offsets(tps)
    ends = consumer.end_offsets(tps)
    return {tp.partition: begins[tp] for tp in tps}, {tp.partition: ends[tp] for tp in tps}


def committed_offsets(consumer: Any, topic: str, parts: list[int]) -> dict[int, int | None]:
    from kafka import TopicPartition

    return {p: consumer.committed(TopicPartition(topic, p)) for p in parts}


def dead_letter_reasons(topic: str) -> Counter[str]:
    """The ``dlq.reason`` header of every record in the dead-letter topic."""
    from kafka import TopicPartition

    reasons: Counter[str] = Counter()
    consumer = kafka_consumer()
    try:
        begins, ends = topic_offsets(consumer, topic)
        todo = {TopicPartition(topic, p): end for p, end in ends.items() if end > begins[p]}
        if not todo:
            return reasons
        consumer.assign(list(todo))
        for tp in todo:
            consumer.seek(tp, begins[tp.partition])
        deadline = time.monotonic() + 30
        while todo and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    headers = dict(record.headers or [])
                    reasons[headers.get("dlq.reason", b"?").decode(errors="replace")] += 1
            todo = {tp: end for tp, end in todo.items() if consumer.position(tp) < end}
    finally:
        consumer.close()
    return reasons


# -- PostgreSQL and HDFS ------------------------------------------------------------------------


@contextlib.contextmanager
def pg() -> Iterator[Any]:
    import psycopg

    conn = psycopg.connect(
        host=os.environ["PGHOST"],
        port=os.environ.get("PGPORT", "5432"),
        user=os.environ.get("PGUSER"),
        dbname=os.environ.get("PGDATABASE"),
        password=os.environ["PGPASSWORD"],
        connect_timeout=10,
        autocommit=True,
    )
    try:
        yield conn
    finally:
        conn.close()


def pg_count(conn: Any) -> int:
    import psycopg

    try:
        row = conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()
    except psycopg.errors.UndefinedTable:
        return 0
    return int(row[0])


class _RangedReader(io.RawIOBase):
    """A seekable read-only file over WebHDFS ranged reads: pyarrow reads a Parquet footer
    through it without downloading the whole file."""

    def __init__(self, client: Any, path: str, size: int) -> None:
        super().__init__()
        self._client, self._path, self._size, self._pos = client, path, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        length = min(len(buffer), self._size - self._pos)
        if length <= 0:
            return 0
        with self._client.read(self._path, offset=self._pos, length=length) as reader:
            data = reader.read()
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


def hdfs_client() -> Any:
    from hdfs import InsecureClient

    return InsecureClient(os.environ["HDFS_URL"], user=os.environ.get("HDFS_USER"), timeout=30)


def hdfs_files(client: Any) -> list[tuple[str, int, int]]:
    """(path, bytes, rows) of each final Parquet file under HDFS_DIR (not _tmp, _staged)."""
    import pyarrow.parquet as pq

    out = []
    for (dirpath, _), _, files in client.walk(HDFS_DIR, status=True, ignore_missing=True):
        if "/_tmp" in dirpath or "/_staged" in dirpath:
            continue
        for name, status in files:
            if not name.endswith(".parquet"):
                continue
            path = f"{dirpath}/{name}"
            size = int(status["length"])
            rows = pq.ParquetFile(_RangedReader(client, path, size)).metadata.num_rows
            out.append((path, size, int(rows)))
    return sorted(out)


# -- the batcher subprocess ----------------------------------------------------------------------


class Batcher:
    """``batcher run`` as a child in its own session: a Ctrl-C in the terminal reaches only
    the demo, which then stops the batcher with one SIGTERM (a second would exit at once)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        BATCHER_LOG.parent.mkdir(parents=True, exist_ok=True)
        with open(BATCHER_LOG, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "batcher.cli", "run", "-c", str(DEMO_CONFIG)],
                cwd=REPO,
                env=child_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise DemoError(f"the batcher exited early with status {self.proc.returncode}")

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM and wait; SIGKILL after ``timeout``. The exit status (None if killed)."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
            return None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = BATCHER_LOG.read_text(errors="replace")
        except OSError:
            return "(no batcher log)"
        return "\n".join(text.splitlines()[-lines:]) or "(the batcher log is empty)"


def run_cli(args: list[str], what: str, timeout: float = 120) -> str:
    """Run a CLI of this repo; its stdout, or DemoError with all its output on failure."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", *args],
            cwd=REPO,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DemoError(f"{what} did not finish within {timeout:.0f} s") from None
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()
        raise DemoError(f"{what} failed (exit {done.returncode}):\n{indent(output)}")
    return done.stdout.strip()  # its log lines (stderr) matter only when it fails


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


# -- the steps -------------------------------------------------------------------------------


def step_topic() -> int:
    heading(1, f"Kafka topic {TOPIC} ({PARTITIONS} partitions) at {os.environ['KAFKA_BOOTSTRAP']}")
    partitions = ensure_topic(TOPIC, PARTITIONS)
    ensure_topic(TOPIC + ".dlq", DLQ_PARTITIONS)  # where the batcher sends bad records
    return partitions


def step_emit() -> None:
    heading(2, f"Emit {EVENTS:,} synthetic events ({BAD_RATIO:.1%} malformed) with `ingest gen`")
    cmd = ["ingest", "gen", "--topic", TOPIC, "--count", str(EVENTS), "--bad-ratio", str(BAD_RATIO)]
    say(f"    $ {' '.join(cmd)}")
    # Output passes through: the progress bar when stderr is a terminal, then the summary.
    done = subprocess.run(
        [sys.executable, "-m", "ingest.cli", *cmd[1:]], cwd=REPO, env=child_env(), check=False
    )
    if done.returncode != 0:
        raise DemoError(f"ingest gen failed (exit {done.returncode})")


def step_run(batcher: Batcher, config: Any, base_rows: int) -> dict[int, int]:
    port = config.metrics.port
    heading(3, f"Run the batcher (group {GROUP}) until every offset is committed")
    say(f"    config {DEMO_CONFIG.relative_to(REPO)} (config/local.toml with the demo's route):")
    say(f"      topic {TOPIC} -> table {TABLE} and HDFS {HDFS_DIR}, metrics on 127.0.0.1:{port}")
    say(f"    The group is always {GROUP}: a second `make demo` resumes where this one stopped")
    say(f"    and emits {EVENTS:,} more events, so the counts below grow by that much per run.")
    say("    $ batcher check -c .stack/demo.toml")
    checked = run_cli(["batcher.cli", "check", "-c", str(DEMO_CONFIG)], "batcher check")
    say(indent(checked, "      "))
    say(f"    $ batcher run -c .stack/demo.toml   (log: {BATCHER_LOG.relative_to(REPO)})")
    pg_age, hdfs_age = config.postgres.flush.max_age_s, config.hdfs.flush.max_age_s
    say(
        f"    Postgres flushes small batches (here every {pg_age:g} s), HDFS large files (every"
        f" {hdfs_age:g} s);\n    Kafka's committed offset follows the slower sink."
    )
    batcher.start()
    started = time.monotonic()
    deadline = started + CATCH_UP_TIMEOUT_S
    consumer = kafka_consumer(GROUP)
    try:
        with pg() as conn:
            while True:
                batcher.check_alive()
                _, ends = topic_offsets(consumer, TOPIC)
                committed = committed_offsets(consumer, TOPIC, sorted(ends))
                done_parts = sum(1 for p, end in ends.items() if (committed[p] or 0) >= end)
                total_committed = sum(min(c or 0, ends[p]) for p, c in committed.items())
                rows = pg_count(conn)
                end_total = sum(ends.values())
                say(
                    f"    {time.monotonic() - started:5.1f}s  rows in Postgres {rows:>9,}"
                    f" (+{rows - base_rows:,})   committed {total_committed:,}/{end_total:,}"
                    f"   partitions caught up {done_parts}/{len(ends)}"
                )
                if ends and done_parts == len(ends):
                    return ends
                if time.monotonic() > deadline:
                    raise DemoError(
                        f"the batcher did not commit every offset within {CATCH_UP_TIMEOUT_S:.0f} s"
                    )
                time.sleep(PROGRESS_EVERY_S)
    finally:
        consumer.close()


def step_show(port: int, ends: dict[int, int], before: dict[int, int]) -> None:
    heading(4, "What landed, and what the batcher says about it")
    with pg() as conn:
        pg_rows = pg_count(conn)
        say(f"    PostgreSQL {TABLE}: {pg_rows:,} rows. Three of them:")
        samples = conn.execute(
            "SELECT event_id, ts, user_id, event_type, amount, country, payload::text"
            f" FROM {TABLE} ORDER BY ts DESC LIMIT 3"
        ).fetchall()
    for event_id, ts, user_id, event_type, amount, country, payload in samples:
        say(f"      {event_id}  {ts:%Y-%m-%d %H:%M:%S%z}  user {user_id:<9} {event_type:<14}")
        shown = "null" if payload is None else payload[:70] + ("..." if len(payload) > 70 else "")
        say(f"        amount {amount}  country {country}  payload {shown}")

    client = hdfs_client()
    files = hdfs_files(client)
    hdfs_rows = sum(rows for _, _, rows in files)
    hdfs_bytes = sum(size for _, size, _ in files)
    say()
    total_mb = hdfs_bytes / 1e6
    say(f"    HDFS {HDFS_DIR}: {len(files)} Parquet files, {hdfs_rows:,} rows, {total_mb:.1f} MB")
    by_day: dict[str, list[tuple[int, int]]] = {}
    for path, size, rows in files:
        by_day.setdefault(path.removeprefix(HDFS_DIR + "/").rpartition("/")[0], []).append(
            (size, rows)
        )
    for day, day_files in sorted(by_day.items()):
        rows, size = sum(r for _, r in day_files), sum(b for b, _ in day_files)
        say(
            f"      {day + '/':<16} {len(day_files):>4} files {rows:>10,} rows {size / 1e6:8.1f} MB"
        )
    # A file's name carries its partition and the first and last Kafka offset it holds.
    from sinks.parquet import FileName

    new = []
    for path, size, rows in files:
        name = FileName.from_filename(path.rpartition("/")[2])
        if name is not None and name.last >= before.get(name.partition, 0):
            new.append((path, size, rows))
    say("    Files holding this run's events (<topic>+<partition>+<first offset>+<last offset>):")
    for path, size, rows in new[:SHOWN_FILES]:
        say(f"      {path.removeprefix(HDFS_DIR + '/'):<75} {rows:>7,} rows {size / 1e6:6.2f} MB")
    if len(new) > SHOWN_FILES:
        say(f"      ... and {len(new) - SHOWN_FILES} more")

    say()
    say("    $ batcher status -c .stack/demo.toml")
    status = run_cli(["batcher.cli", "status", "-c", str(DEMO_CONFIG)], "batcher status")
    say(indent(status, "      "))

    say()
    say(f"    http://127.0.0.1:{port}/metrics (a few lines; this process's counters):")
    _, text = http_get(f"http://127.0.0.1:{port}/metrics")
    lines = [line for line in text.splitlines() if line.startswith(SHOWN_METRICS)]
    say(indent("\n".join(lines) or "(none of the expected metrics: see the log)", "      "))
    healthz = http_get(f"http://127.0.0.1:{port}/healthz")
    readyz = http_get(f"http://127.0.0.1:{port}/readyz")
    say(f"      /healthz: {healthz[0]} {healthz[1]}    /readyz: {readyz[0]} {readyz[1]}")

    reasons = dead_letter_reasons(TOPIC + ".dlq")
    dead = sum(reasons.values())
    say()
    by_reason = ", ".join(f"{r} {n}" for r, n in reasons.most_common())
    say(f"    Dead letters in {TOPIC}.dlq: {dead:,}" + (f" ({by_reason})" if by_reason else ""))

    consumer = kafka_consumer()
    try:
        begins, _ = topic_offsets(consumer, TOPIC)
    finally:
        consumer.close()
    in_kafka = sum(ends[p] - begins.get(p, 0) for p in ends)
    say()
    say(f"    Reconciliation: {TOPIC} holds {in_kafka:,} records;")
    say(f"      Postgres {pg_rows:,} + dead letters {dead:,} = {pg_rows + dead:,}")
    say(f"      HDFS     {hdfs_rows:,} + dead letters {dead:,} = {hdfs_rows + dead:,}")
    if pg_rows != hdfs_rows:
        raise DemoError(f"Postgres holds {pg_rows:,} rows but HDFS {hdfs_rows:,}: they must agree")
    if pg_rows + dead == in_kafka:
        say("      every record is in both sinks once, or in the dead-letter topic.")
    else:
        say(
            "      (these differ: Kafka expired old records (24 h retention), a dead letter was"
            " written twice after a crash, or the table or directory was changed by hand)"
        )


def step_stop(batcher: Batcher, config: Any, started: float) -> None:
    port = config.metrics.port
    heading(5, "Stop the batcher with SIGTERM (it flushes, commits and exits 0)")
    t0 = time.monotonic()
    code = batcher.stop()
    if code != 0:
        raise DemoError(f"the batcher exited with status {code} after SIGTERM, not 0")
    say(f"    stopped cleanly (exit 0) in {time.monotonic() - t0:.1f}s")
    say()
    say(f"Demo done: {EVENTS:,} events in {time.monotonic() - started:.0f}s. Where to look next:")
    say(
        "  PostgreSQL:  set -a; . .stack/env; set +a;"
        f" psql -c 'SELECT event_type, count(*) FROM {TABLE} GROUP BY 1 ORDER BY 2 DESC'"
    )
    offsets_sql = f"SELECT * FROM {config.postgres.offsets_table} WHERE target = '{TABLE}'"
    say(f'               offsets: psql -c "{offsets_sql}"')
    say(f"  HDFS:        {os.environ.get('HDFS_RPC', 'hdfs://')}{HDFS_DIR}  (browse:")
    say(f"               {os.environ['HDFS_URL']}/explorer.html#{HDFS_DIR})")
    say("  Offsets:     .venv/bin/batcher status -c .stack/demo.toml")
    say(
        "  Metrics:     .venv/bin/batcher run -c .stack/demo.toml, then"
        f" http://127.0.0.1:{port}/metrics, /healthz, /readyz"
    )
    say(f"  Logs:        {BATCHER_LOG.relative_to(REPO)}; the stack's in .stack/logs/")
    say("  Docs:        docs/architecture.md, docs/configuration.md, docs/metrics.md")
    say(f"  Again:       make demo (resumes group {GROUP}, emits {EVENTS:,} more events)")


def main() -> int:
    started = time.monotonic()
    batcher = Batcher()
    try:
        say(
            f"bulk-ingest demo: {EVENTS:,} events through Kafka into PostgreSQL (COPY) and HDFS"
            " (Parquet), exactly once."
        )
        load_stack_env()
        if any(k.startswith("BATCHER__") for k in os.environ):
            say("note: BATCHER__* variables in your environment are ignored by the demo")
        config = write_demo_config(metrics_port())
        step_topic()
        with pg() as conn:
            base_rows = pg_count(conn)
        consumer = kafka_consumer()
        try:
            _, before = topic_offsets(consumer, TOPIC)
        finally:
            consumer.close()
        step_emit()
        ends = step_run(batcher, config, base_rows)
        step_show(config.metrics.port, ends, before)
        step_stop(batcher, config, started)
        return 0
    except KeyboardInterrupt:
        say("\ninterrupted: stopping the batcher")
        batcher.stop(30)
        return 130
    except Exception as exc:  # any failure: say what, show the batcher's side, exit non-zero
        say()
        say(f"demo FAILED after {time.monotonic() - started:.0f}s: {type(exc).__name__}: {exc}")
        if batcher.proc is not None:
            say(f"last lines of the batcher's log ({BATCHER_LOG}):")
            say(indent(batcher.log_tail()))
        return 1
    finally:
        if batcher.proc is not None and batcher.proc.poll() is None:
            code = batcher.stop(30)
            say(f"(stopped the batcher: exit status {code if code is not None else 'killed'})")


if __name__ == "__main__":
    sys.exit(main())
