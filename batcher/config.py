"""The batcher's configuration: TOML, environment overrides, validated once at start.

Sources, later wins:
1. the TOML file (``config/batcher.toml``);
2. ``env_file`` named in it (``export K=V`` lines, e.g. the local stack's ``.stack/env``),
   which only fills variables the environment does not already set;
3. ``BATCHER__SECTION__KEY=value`` variables: any key, ``__`` separating levels (routes by
   index: ``BATCHER__ROUTES__0__TABLE``); values parse as TOML literals, else as strings.

String values may say ``${VAR}`` or ``${VAR:-default}``. Passwords never come from the
file: the Postgres password is read from ``$PGPASSWORD`` (or the variable ``password_env``
names), the SASL password from the variable ``sasl_password_env`` names. Every validation
error names the key (``routes.0.columns.2.type``) and what would fix it.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from batcher.errors import ConfigError
from batcher.schema import ColumnSpec, RouteSchema

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
ENV_PREFIX = "BATCHER__"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FlushConfig(_Model):
    """When a sink flushes a partition's buffer: whichever trigger fires first."""

    max_rows: int = Field(gt=0)
    max_bytes: int = Field(gt=0)
    max_age_s: float = Field(gt=0)


class KafkaConfig(_Model):
    bootstrap_servers: str
    group_id: str = "batcher"
    client_id: str = "batcher"
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    session_timeout_ms: int = Field(default=10_000, ge=1000)
    heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    max_poll_interval_ms: int = Field(default=300_000, ge=10_000)
    max_poll_records: int = Field(default=10_000, gt=0)
    fetch_max_bytes: int = Field(default=52_428_800, gt=0)
    max_partition_fetch_bytes: int = Field(default=8_388_608, gt=0)
    dlq_suffix: str = ".dlq"
    # The consumer client (batcher/consumer.py): kafka-python (pure Python, the default) or
    # confluent-kafka (librdkafka in C; its fetch path costs far less CPU per record), from
    # the optional extra: pip install 'bulk-ingest[fast]'.
    backend: Literal["kafka-python", "confluent"] = "kafka-python"
    # kafka-python only: read fetched v2 record batches with batcher/kafka_records.py's fused
    # loop instead of kafka-python's record-by-record reader (same records, less CPU).
    fast_record_reader: bool = True
    # Passed to kafka-python as is: security_protocol, sasl_mechanism, sasl_plain_username,
    # ssl_cafile, ssl_certfile, ... (never a password: see sasl_password_env).
    client_options: dict[str, Any] = Field(default_factory=dict)
    sasl_password_env: str | None = None

    @field_validator("client_options")
    @classmethod
    def _no_secrets(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in v:
            if "password" in key.lower():
                raise ValueError(f"{key!r} must not be in the file: set sasl_password_env")
        return v


class PostgresConfig(_Model):
    enabled: bool = True
    conninfo: str = "host=127.0.0.1 port=5432 dbname=postgres"
    password_env: str = "PGPASSWORD"
    offsets_table: str = "batcher_offsets"
    connect_timeout_s: float = Field(default=10, gt=0)
    # Parallel COPY connections; a partition always uses the same one (order per partition).
    # Two use both cores on Postgres' side (PERFORMANCE.md: 296k -> 468k rows/s).
    writers: int = Field(default=2, ge=1, le=16)
    flush: FlushConfig = FlushConfig(max_rows=100_000, max_bytes=32 << 20, max_age_s=5)

    @field_validator("conninfo")
    @classmethod
    def _no_password(cls, v: str) -> str:
        if re.search(r"(^|\s)password\s*=|:[^/@]*@", v):
            raise ValueError("the password must not be in conninfo: export it as PGPASSWORD")
        return v


class HdfsConfig(_Model):
    enabled: bool = True
    kind: Literal["webhdfs", "local"] = "webhdfs"
    url: str = "http://127.0.0.1:9870"
    user: str = "batcher"
    local_root: str = "/tmp/batcher-parquet"
    compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"
    # Parallel uploads; WebHDFS spends much of a small file's time waiting, not working.
    writers: int = Field(default=2, ge=1, le=16)
    flush: FlushConfig = FlushConfig(max_rows=1_000_000, max_bytes=128 << 20, max_age_s=60)


class ColumnConfig(_Model):
    name: str
    type: Literal[
        "text", "int16", "int32", "int64", "float32", "float64",
        "bool", "timestamp", "date", "uuid", "json",
    ]  # fmt: skip
    nullable: bool = True


class RouteConfig(_Model):
    topic: str
    table: str
    hdfs_dir: str
    columns: list[ColumnConfig] = Field(min_length=1)
    event_time: str | None = None
    unknown_fields: Literal["ignore", "keep", "reject"] = "ignore"
    keep_column: str = "extra"
    max_record_bytes: int = Field(default=1 << 20, gt=0)

    def route_schema(self) -> RouteSchema:
        cols = tuple(ColumnSpec(c.name, c.type, c.nullable) for c in self.columns)
        return RouteSchema(
            columns=cols,
            event_time=self.event_time,
            unknown_fields=self.unknown_fields,
            keep_column=self.keep_column,
        )


class LimitsConfig(_Model):
    memory_budget_bytes: int = Field(default=512 << 20, gt=0)
    # Stop rather than quietly dead-letter a broken topic: ratio over a sliding window of
    # records, or a run of consecutive bad records.
    bad_ratio_max: float = Field(default=0.5, gt=0, le=1)
    bad_ratio_window: int = Field(default=10_000, gt=0)
    bad_consecutive_max: int = Field(default=10_000, gt=0)
    # kafka-python 3 runs the revocation drain on its IO thread, where it holds up
    # heartbeats: keep it below kafka.session_timeout_ms, not only max_poll_interval_ms.
    revoke_budget_s: float = Field(default=8, gt=0)
    shutdown_budget_s: float = Field(default=60, gt=0)
    retry_initial_s: float = Field(default=0.5, gt=0)
    retry_max_s: float = Field(default=30, gt=0)


class MetricsConfig(_Model):
    host: str = "127.0.0.1"  # bind to loopback unless the operator says otherwise
    port: int = Field(default=9108, ge=0, le=65535)


class BatcherConfig(_Model):
    kafka: KafkaConfig
    postgres: PostgresConfig = PostgresConfig()
    hdfs: HdfsConfig = HdfsConfig()
    routes: list[RouteConfig] = Field(min_length=1)
    limits: LimitsConfig = LimitsConfig()
    metrics: MetricsConfig = MetricsConfig()
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    env_file: str | None = None

    @model_validator(mode="after")
    def _check(self) -> BatcherConfig:
        topics = [r.topic for r in self.routes]
        if len(set(topics)) != len(topics):
            raise ValueError("routes: each topic may have one route only")
        budget = self.limits.memory_budget_bytes
        for sink, flush in (("postgres", self.postgres.flush), ("hdfs", self.hdfs.flush)):
            if flush.max_bytes > budget:
                raise ValueError(
                    f"{sink}.flush.max_bytes ({flush.max_bytes}) exceeds "
                    f"limits.memory_budget_bytes ({budget}): lower it or raise the budget"
                )
        budget_ms = self.limits.revoke_budget_s * 1000
        if budget_ms >= min(self.kafka.max_poll_interval_ms, self.kafka.session_timeout_ms):
            raise ValueError(
                "limits.revoke_budget_s must stay below kafka.session_timeout_ms and "
                "kafka.max_poll_interval_ms (the drain holds up heartbeats)"
            )
        if not (self.postgres.enabled or self.hdfs.enabled):
            raise ValueError("enable at least one sink: postgres.enabled or hdfs.enabled")
        return self

    def postgres_password(self) -> str | None:
        return os.environ.get(self.postgres.password_env)

    def sasl_password(self) -> str | None:
        env = self.kafka.sasl_password_env
        return os.environ.get(env) if env else None

    def kafka_client_options(self) -> dict[str, Any]:
        """Pass-through options for kafka-python, with the SASL password from the env."""
        opts = dict(self.kafka.client_options)
        password = self.sasl_password()
        if password is not None:
            opts["sasl_plain_password"] = password
        return opts

    def dlq_topic(self, topic: str) -> str:
        return topic + self.kafka.dlq_suffix


def read_env_file(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("export "):
            line = line[len("export ") :]
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        env[key.strip()] = value.strip().strip("'\"")
    return env


def _expand(value: Any, where: str, env: dict[str, str]) -> Any:
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(f"{where}: ${{{name}}} is not set; export {name} or give a default")

        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: _expand(v, f"{where}.{k}" if where else k, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{where}.{i}", env) for i, v in enumerate(value)]
    return value


def _parse_literal(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _override(current: Any, raw: str) -> Any:
    """A string key stays a string (a group id of "123"); anything else parses as TOML."""
    return raw if isinstance(current, str) else _parse_literal(raw)


def _apply_env_overrides(data: dict[str, Any], environ: dict[str, str]) -> None:
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        node: Any = data
        for i, part in enumerate(path):
            last = i == len(path) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"{name}: no list item {part!r} at {'.'.join(path[:i])}")
                if last:
                    node[int(part)] = _override(node[int(part)], raw)
                else:
                    node = node[int(part)]
            elif last:
                node[part] = _override(node.get(part), raw)
            else:
                node = node.setdefault(part, {})


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key: remove it or check its spelling"
        elif err["type"] == "missing":
            msg = "required key is missing: add it"
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def load_config(path: str | Path, environ: dict[str, str] | None = None) -> BatcherConfig:
    """Read, merge, expand and validate; raises ConfigError naming every bad key."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    env_file = data.get("env_file")
    if env_file:
        env_path = (path.parent / env_file).resolve()
        if env_path.exists():
            for key, value in read_env_file(env_path).items():
                os.environ.setdefault(key, value)
    env = dict(os.environ if environ is None else environ)
    _apply_env_overrides(data, env)
    data = _expand(data, "", env)
    try:
        config = BatcherConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, str(path))) from None
    for i, route in enumerate(config.routes):
        try:
            route.route_schema()
        except ConfigError as exc:
            raise ConfigError(f"{path}: routes.{i}: {exc}") from None
    return config
