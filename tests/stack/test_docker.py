"""The testcontainers path (STACK=docker) brings up the same services where Docker exists."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.docker


def test_docker_stack_serves_all_three() -> None:
    if os.environ.get("STACK") != "docker":
        pytest.skip("the testcontainers stack runs only with STACK=docker (no Docker engine here)")
    from tests.docker_stack import docker_stack_env

    env = docker_stack_env()
    assert env["KAFKA_BOOTSTRAP"] and env["PGPORT"] and env["HDFS_URL"]
