"""The ``pipeline`` fixture: one test's own topic (3 partitions), schema, HDFS dir and config.

When a test that uses it fails, the tail of every batcher log it started is attached to the
report, so a CI failure shows what the daemon was doing and not only that a wait timed out.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import Pipeline

LOG_TAIL_CHARS = 6000


@pytest.fixture
def pipeline(
    stack_env: dict[str, str],
    tmp_path: Path,
    new_topic: Callable[..., str],
    pg_schema: str,
    hdfs_dir: str,
) -> Iterator[Pipeline]:
    p = Pipeline(stack_env, tmp_path, new_topic(3), pg_schema, hdfs_dir)
    yield p
    p.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[Any]:
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    p = getattr(item, "funcargs", {}).get("pipeline")
    if not isinstance(p, Pipeline):
        return
    for log in sorted(p.tmp.glob("batcher-*.log"), key=lambda f: f.stat().st_mtime):
        text = log.read_text(errors="replace")
        report.sections.append((f"batcher log {log.name} (tail)", text[-LOG_TAIL_CHARS:]))
