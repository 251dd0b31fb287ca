"""Where the local stack lives and which ports it uses.

Every value can be overridden by an environment variable (``STACK_*``), so a machine that
already runs a Kafka, PostgreSQL or Hadoop on the defaults can move ours aside. The default
ports sit in the 29xxx/25xxx range, away from every server's well-known port (9092, 5432,
8020, 9870, 9864, 9866, 9867), so they do not collide with a Kafka, Postgres or Hadoop
already installed on the machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

KAFKA_VERSION = "4.3.0"  # kafka-python 3.0.x is tested by its authors against 4.3.0
HADOOP_VERSION = "3.4.1"

REPO = Path(__file__).resolve().parent.parent


def _port(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    try:
        port = int(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise SystemExit(f"{name}={port} is outside 1..65535")
    return port


@dataclass(frozen=True)
class Ports:
    kafka: int
    kafka_controller: int
    postgres: int
    namenode_rpc: int
    namenode_http: int
    datanode: int
    datanode_http: int
    datanode_ipc: int

    @classmethod
    def from_env(cls) -> Ports:
        return cls(
            kafka=_port("STACK_KAFKA_PORT", 29092),
            kafka_controller=_port("STACK_KAFKA_CONTROLLER_PORT", 29093),
            postgres=_port("STACK_PG_PORT", 25432),
            namenode_rpc=_port("STACK_NAMENODE_RPC_PORT", 28020),
            namenode_http=_port("STACK_NAMENODE_HTTP_PORT", 29870),
            datanode=_port("STACK_DATANODE_PORT", 29866),
            datanode_http=_port("STACK_DATANODE_HTTP_PORT", 29864),
            datanode_ipc=_port("STACK_DATANODE_IPC_PORT", 29867),
        )


@dataclass(frozen=True)
class Paths:
    root: Path  # .stack/ : data, logs, pids, env; git-ignored
    cache: Path  # jars fetched from Maven Central; kept across `make stack-clean`

    @classmethod
    def from_env(cls) -> Paths:
        root = Path(os.environ.get("STACK_DIR", REPO / ".stack")).resolve()
        default_cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        cache = Path(os.environ.get("STACK_CACHE", default_cache / "bulk-ingest-stack"))
        return cls(root=root, cache=cache.resolve())

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def env_file(self) -> Path:
        return self.root / "env"

    def lib(self, name: str, version: str) -> Path:
        return self.cache / f"{name}-{version}" / "lib"


@dataclass(frozen=True)
class StackSettings:
    ports: Ports
    paths: Paths
    host: str = "127.0.0.1"

    @classmethod
    def from_env(cls) -> StackSettings:
        return cls(ports=Ports.from_env(), paths=Paths.from_env())
