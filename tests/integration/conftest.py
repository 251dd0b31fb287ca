"""The ``pipeline`` fixture: one test's own topic (3 partitions), schema, HDFS dir and config.

When a test fails, tests/conftest.py attaches the tail of every batcher log it started.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Pipeline


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
