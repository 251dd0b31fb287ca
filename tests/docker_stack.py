"""``STACK=docker``: the same three services from testcontainers, where Docker exists.

Kafka and PostgreSQL come from testcontainers' community modules; HDFS is the known
two-container pattern on ``apache/hadoop:3`` (NameNode and DataNode sharing the host network
so that the DataNode's WebHDFS redirect target resolves to 127.0.0.1). Without a Docker
engine every test is skipped with that reason.
"""

from __future__ import annotations

import uuid

import pytest


def _docker_or_skip() -> None:
    try:
        import docker

        docker.from_env().ping()
    except Exception as exc:  # any failure means: no usable engine here
        pytest.skip(f"STACK=docker but no Docker engine is reachable: {exc}")


def docker_stack_env() -> dict[str, str]:
    _docker_or_skip()
    from testcontainers.community.kafka import KafkaContainer  # type: ignore[import-not-found]
    from testcontainers.community.postgres import (  # type: ignore[import-not-found]
        PostgresContainer,
    )
    from testcontainers.core.container import DockerContainer

    kafka = KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft().start()
    password = uuid.uuid4().hex
    pg = PostgresContainer("postgres:16", password=password, driver=None).start()
    hadoop_env = {
        "CORE-SITE.XML_fs.defaultFS": "hdfs://127.0.0.1:8020",
        "HDFS-SITE.XML_dfs.replication": "1",
        "HDFS-SITE.XML_dfs.permissions.enabled": "false",
        "HDFS-SITE.XML_dfs.datanode.hostname": "127.0.0.1",
        "HDFS-SITE.XML_dfs.namenode.datanode.registration.ip-hostname-check": "false",
        "ENSURE_NAMENODE_DIR": "/tmp/hadoop-root/dfs/name",
    }
    nn = DockerContainer("apache/hadoop:3").with_kwargs(network_mode="host")
    dn = DockerContainer("apache/hadoop:3").with_kwargs(network_mode="host")
    for key, value in hadoop_env.items():
        nn = nn.with_env(key, value)
        dn = dn.with_env(key, value)
    nn.with_command("hdfs namenode").start()
    dn.with_command("hdfs datanode").start()
    return {
        "KAFKA_BOOTSTRAP": kafka.get_bootstrap_server(),
        "PGHOST": pg.get_container_host_ip(),
        "PGPORT": str(pg.get_exposed_port(5432)),
        "PGUSER": pg.username,
        "PGDATABASE": pg.dbname,
        "PGPASSWORD": password,
        "HDFS_URL": "http://127.0.0.1:9870",
        "HDFS_USER": "root",
    }
