"""Session fixtures for the real local stack: Kafka, PostgreSQL and HDFS.

The stack is the one ``make stack-up`` runs (settings in ``.stack/env``); when it is not
running, the first fixture that needs it starts it. With ``STACK=docker`` the same three
services come from testcontainers instead (skipped with the reason where Docker is absent).
Each test gets its own topic, schema and HDFS directory, so tests run in any order.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from batcher.config import read_env_file

REPO = Path(__file__).resolve().parent.parent
LOG_TAIL_CHARS = 6000


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[Any]:
    """A failed test shows the tail of every batcher log it started (tests/integration/
    harness.py writes them as batcher-*.log under the test's tmp_path): a CI failure then
    says what the daemon was doing, not only that a wait timed out."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    tmp = getattr(item, "funcargs", {}).get("tmp_path")
    if not isinstance(tmp, Path):
        return
    for log in sorted(tmp.glob("batcher-*.log"), key=lambda f: f.stat().st_mtime):
        text = log.read_text(errors="replace")
        report.sections.append((f"batcher log {log.name} (tail)", text[-LOG_TAIL_CHARS:]))


@pytest.fixture(scope="session")
def stack_env() -> dict[str, str]:
    """Connection settings of the running stack (started here if it is down)."""
    if os.environ.get("STACK") == "docker":
        from tests.docker_stack import docker_stack_env

        return docker_stack_env()
    env_file = Path(os.environ.get("STACK_DIR", REPO / ".stack")) / "env"
    up = subprocess.run([sys.executable, "-m", "stack", "up"], cwd=REPO, capture_output=True)
    if up.returncode != 0:
        pytest.fail(f"local stack did not come up:\n{up.stdout.decode()}{up.stderr.decode()}")
    env = read_env_file(env_file)
    os.environ.update(env)  # subprocesses (CLIs under test) see the same stack
    return env


@pytest.fixture(scope="session")
def kafka_bootstrap(stack_env: dict[str, str]) -> str:
    return stack_env["KAFKA_BOOTSTRAP"]


@pytest.fixture
def new_topic(kafka_bootstrap: str) -> Iterator[Callable[..., str]]:
    """Factory: ``new_topic(partitions=3)`` creates a uniquely named topic, deleted afterwards."""
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    made: list[str] = []

    def make(partitions: int = 3, name: str | None = None) -> str:
        topic = name or f"t_{uuid.uuid4().hex[:12]}"
        admin.create_topics([NewTopic(topic, partitions, 1)])
        made.append(topic)
        return topic

    yield make
    if made:
        # A topic already gone is fine; the broker is scratch space.
        with contextlib.suppress(Exception):
            admin.delete_topics(made)
    admin.close()


@pytest.fixture(scope="session")
def pg_dsn(stack_env: dict[str, str]) -> str:
    e = stack_env
    return (
        f"host={e['PGHOST']} port={e['PGPORT']} user={e['PGUSER']} "
        f"dbname={e['PGDATABASE']} password={e['PGPASSWORD']}"
    )


@pytest.fixture
def pg_conn(pg_dsn: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """An autocommit connection: a test that wants a transaction opens one explicitly."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def pg_schema(pg_dsn: str) -> Iterator[str]:
    """A fresh schema for one test, dropped with everything in it afterwards."""
    schema = f"s_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    yield schema
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '20s'")  # a leaked transaction fails loudly, not hangs
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(scope="session")
def hdfs_client(stack_env: dict[str, str]) -> object:
    from hdfs import InsecureClient

    return InsecureClient(stack_env["HDFS_URL"], user=stack_env["HDFS_USER"])


@pytest.fixture
def hdfs_dir(hdfs_client: object) -> Iterator[str]:
    """A fresh HDFS directory for one test, deleted afterwards."""
    path = f"/tests/{uuid.uuid4().hex[:12]}"
    hdfs_client.makedirs(path)  # type: ignore[attr-defined]
    yield path
    hdfs_client.delete(path, recursive=True)  # type: ignore[attr-defined]
