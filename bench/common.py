"""Shared pieces of ``python -m bench``: the stack's settings, the event schema, the result
record, and CPU / memory sampling from ``/proc``.

CPU is read from ``/proc/<pid>/stat`` (utime + stime, all threads). The PostgreSQL server is
the postmaster whose command line holds the stack's ``.stack/postgres`` plus all its
descendants (backends, walwriter, checkpointer, autovacuum); a backend that exited and was
reaped is still counted through the postmaster's cutime + cstime, so a delta across a run
holds every server process that worked during it.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from batcher.config import read_env_file
from batcher.schema import ColumnSpec, RouteSchema

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
STACK_DIR = REPO / ".stack"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

PARTITIONS = 6
PG_SCHEMA = "bench"
EVENT_TIME = "ts"
SCHEMA = RouteSchema(
    columns=(
        ColumnSpec("event_id", "uuid", nullable=False),
        ColumnSpec("ts", "timestamp", nullable=False),
        ColumnSpec("user_id", "int64", nullable=False),
        ColumnSpec("event_type", "text", nullable=False),
        ColumnSpec("amount", "float64"),
        ColumnSpec("country", "text"),
        ColumnSpec("payload", "json"),
    ),
    event_time=EVENT_TIME,
)
COLUMN_NAMES = [c.name for c in SCHEMA.columns]
# The same columns as a config file's [[routes]] entry.
COLUMNS_TOML = (
    "columns = [\n"
    + "".join(
        f'  {{ name = "{c.name}", type = "{c.type}", nullable = {str(c.nullable).lower()} }},\n'
        for c in SCHEMA.columns
    )
    + "]"
)


@dataclass(frozen=True)
class Stack:
    """Connection settings of the local stack (``.stack/env``, written by ``make stack-up``)."""

    bootstrap: str
    pg_host: str
    pg_port: int
    pg_user: str
    pg_database: str
    pg_password: str
    hdfs_url: str
    hdfs_user: str

    @classmethod
    def load(cls, env_file: Path = STACK_DIR / "env") -> Stack:
        if not env_file.exists():
            raise SystemExit(f"bench: {env_file} is missing: run `make stack-up` first")
        env = {**read_env_file(env_file), **_overrides()}
        return cls(
            bootstrap=env["KAFKA_BOOTSTRAP"],
            pg_host=env["PGHOST"],
            pg_port=int(env["PGPORT"]),
            pg_user=env["PGUSER"],
            pg_database=env["PGDATABASE"],
            pg_password=env.get("PGPASSWORD", ""),
            hdfs_url=env["HDFS_URL"],
            hdfs_user=env["HDFS_USER"],
        )

    def conninfo(self) -> str:
        """libpq conninfo without the password (it travels as PGPASSWORD)."""
        return (
            f"host={self.pg_host} port={self.pg_port} user={self.pg_user} dbname={self.pg_database}"
        )

    def connect(self, autocommit: bool = True) -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(
            self.conninfo(),
            password=self.pg_password,
            autocommit=autocommit,
            application_name="bench",
        )

    def child_env(self) -> dict[str, str]:
        """The environment of a subprocess (daemon or peer): ours plus the stack's PG*."""
        return {
            **os.environ,
            "PGHOST": self.pg_host,
            "PGPORT": str(self.pg_port),
            "PGUSER": self.pg_user,
            "PGDATABASE": self.pg_database,
            "PGPASSWORD": self.pg_password,
            "KAFKA_BOOTSTRAP": self.bootstrap,
            "HDFS_URL": self.hdfs_url,
            "HDFS_USER": self.hdfs_user,
            "PYTHONUNBUFFERED": "1",
        }


def _overrides() -> dict[str, str]:
    """Variables already exported win over the file (as with ``set -a; . .stack/env``)."""
    keys = (
        "KAFKA_BOOTSTRAP",
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGDATABASE",
        "PGPASSWORD",
        "HDFS_URL",
        "HDFS_USER",
    )
    return {k: os.environ[k] for k in keys if k in os.environ}


@dataclass
class Result:
    """One measured run: a raw stage, a batcher config or a peer."""

    name: str  # short id: kafka, copy, parquet, both, pg, hdfs, naive, quix
    kind: str  # raw | ours | peer | info
    label: str  # what the table shows
    events: int  # rows/events the rate is computed from
    seconds: float
    value_bytes: int  # Kafka value bytes of those events (for MB/s)
    client_cpu_s: float | None = None  # the process doing the work (bench itself for raw)
    pg_cpu_s: float | None = None  # the PostgreSQL server, all processes
    kafka_cpu_s: float | None = None  # the broker JVM
    hdfs_cpu_s: float | None = None  # NameNode + DataNode JVMs
    machine_busy_s: float | None = None  # all CPUs, all processes (shows interference)
    peak_rss_bytes: int | None = None
    extrapolated: bool = False
    ok: bool = True
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.value_bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    @property
    def other_cpu_s(self) -> float | None:
        """Machine CPU in the run not spent by the measured process or the stack's servers:
        other work on the machine, the kernel, the bench's own probes."""
        if self.machine_busy_s is None:
            return None
        ours = (self.client_cpu_s, self.pg_cpu_s, self.kafka_cpu_s, self.hdfs_cpu_s)
        return max(0.0, self.machine_busy_s - sum(c or 0.0 for c in ours))

    def per_million(self, cpu_s: float | None) -> float | None:
        return None if cpu_s is None or not self.events else cpu_s / self.events * 1e6

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["events_per_s"] = round(self.events_per_s, 1)
        out["mb_per_s"] = round(self.mb_per_s, 3)
        out["client_cpu_s_per_m"] = _round(self.per_million(self.client_cpu_s))
        out["pg_cpu_s_per_m"] = _round(self.per_million(self.pg_cpu_s))
        out["kafka_cpu_s_per_m"] = _round(self.per_million(self.kafka_cpu_s))
        out["hdfs_cpu_s_per_m"] = _round(self.per_million(self.hdfs_cpu_s))
        out["other_cpu_s"] = _round(self.other_cpu_s)
        return out


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# -- /proc ------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (field 3 onwards), or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rindex(")") + 2 :].split()


def proc_cpu_s(pid: int, children: bool = False) -> float | None:
    """utime + stime of ``pid`` in seconds (plus its reaped children's when asked)."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / CLK_TCK


def peak_rss_bytes(pid: int) -> int | None:
    """VmHWM of ``pid``: the peak resident set size so far."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process."""
    out: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                out[int(entry.name)] = int(fields[1])
    return out


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ""


def _pid_file(name: str) -> int | None:
    try:
        pid = int((STACK_DIR / "pids" / f"{name}.pid").read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


def _machine_busy_s() -> float:
    """CPU seconds all CPUs spent not idle since boot (/proc/stat)."""
    parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(p) for p in parts[:8]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK


class ServerCpu:
    """CPU seconds of the stack's servers: PostgreSQL (postmaster and descendants), the
    Kafka broker and HDFS (NameNode + DataNode), and of the whole machine."""

    def __init__(self) -> None:
        marker = str(STACK_DIR / "postgres")
        parents = _parents()
        marked = {pid for pid in parents if marker in _cmdline(pid)}
        self.postmasters = sorted(pid for pid in marked if parents[pid] not in marked)
        self.kafka = _pid_file("kafka")
        self.hdfs = [p for p in (_pid_file("namenode"), _pid_file("datanode")) if p is not None]

    def postgres_s(self, exclude: set[int] | None = None) -> float:
        """The server's CPU so far; ``exclude``: backends not to count (our own probes)."""
        parents = _parents()
        children: dict[int, list[int]] = {}
        for pid, ppid in parents.items():
            children.setdefault(ppid, []).append(pid)
        total = 0.0
        for root in self.postmasters:
            total += proc_cpu_s(root, children=True) or 0.0
            todo = list(children.get(root, []))
            while todo:
                pid = todo.pop()
                if exclude is None or pid not in exclude:
                    total += proc_cpu_s(pid) or 0.0
                todo.extend(children.get(pid, []))
        return total

    def snapshot(self, exclude: set[int] | None = None) -> dict[str, float]:
        return {
            "pg": self.postgres_s(exclude),
            "kafka": (proc_cpu_s(self.kafka) or 0.0) if self.kafka else 0.0,
            "hdfs": sum(proc_cpu_s(p) or 0.0 for p in self.hdfs),
            "machine": _machine_busy_s(),
        }

    @staticmethod
    def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {k: after[k] - before[k] for k in before}


def apply_server_cpu(result: Result, delta: dict[str, float]) -> None:
    result.pg_cpu_s = delta["pg"]
    result.kafka_cpu_s = delta["kafka"]
    result.hdfs_cpu_s = delta["hdfs"]
    result.machine_busy_s = delta["machine"]


@contextmanager
def measured(result: Result, servers: ServerCpu) -> Iterator[None]:
    """Time the block, and count this process's and the servers' CPU in it."""
    before, cpu0, t0 = servers.snapshot(), time.process_time(), time.perf_counter()
    yield
    result.seconds = time.perf_counter() - t0
    result.client_cpu_s = time.process_time() - cpu0
    apply_server_cpu(result, ServerCpu.delta(before, servers.snapshot()))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)
