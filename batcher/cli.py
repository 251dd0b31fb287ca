"""``batcher run | check | status``: the daemon and the operator's two questions.

- ``run -c FILE``: consume, buffer, flush to the sinks, commit; SIGTERM/SIGINT stop cleanly.
- ``check -c FILE``: validate the config and reach Kafka, PostgreSQL and HDFS; the table
  must match the declared columns. Exits non-zero naming the problem.
- ``status -c FILE``: per partition, the log end offset, Kafka's committed offset, each
  sink's durable offset, and the lag.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from batcher.config import BatcherConfig, RouteConfig, load_config
from batcher.errors import BatcherError, ConfigError, FatalError, RetryableError
from sinks.base import Sink, TopicPartition

log = logging.getLogger("batcher")


def build_sinks(config: BatcherConfig, route: RouteConfig) -> list[Sink]:
    """The sinks of one route, as the config enables them."""
    from sinks.files import ParquetFileSink
    from sinks.postgres import PostgresCopySink

    sinks: list[Sink] = []
    if config.postgres.enabled:
        pg = config.postgres
        sinks.append(
            PostgresCopySink(
                route.table,
                route.route_schema(),
                pg.conninfo,
                config.postgres_password(),
                pg.offsets_table,
                pg.connect_timeout_s,
            )
        )
    if config.hdfs.enabled:
        h = config.hdfs
        compression = h.compression
        if h.kind == "webhdfs":
            sinks.append(ParquetFileSink.hdfs(h.url, h.user, route.hdfs_dir, compression))
        else:
            root = f"{h.local_root.rstrip('/')}/{route.hdfs_dir.lstrip('/')}"
            sinks.append(ParquetFileSink.local(root, compression))
    return sinks


def _secrets(config: BatcherConfig) -> list[str]:
    return [s for s in (config.postgres_password(), config.sasl_password()) if s]


def _bound_allocators() -> None:
    """Keep freed buffer memory from lingering in allocator caches, so RSS tracks the budget.

    glibc gives each thread its own arena (sink workers, kafka-python's IO thread), which
    inflates RSS well past what the buffers hold; two arenas cost nothing measurable here
    (measured: peak RSS 238 -> 218 MiB in tests/integration/test_memory.py).
    """
    import contextlib
    import ctypes
    import os

    import pyarrow as pa

    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to tame
        ctypes.CDLL("libc.so.6").mallopt(-8, 2)  # M_ARENA_MAX = 2
    # Arrow's bundled mimalloc keeps freed pages for reuse: peak RSS in make bench was
    # 725-810 MiB with it against 631-674 MiB with the system allocator, which hands the
    # large buffers of a flushed batch straight back, at no cost in throughput measured.
    # ARROW_DEFAULT_MEMORY_POOL (Arrow's own variable) still chooses when it is set.
    if not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        pa.set_memory_pool(pa.system_memory_pool())


def cmd_run(config: BatcherConfig) -> int:
    from batcher.daemon import Batcher
    from batcher.http import serve

    _bound_allocators()
    batcher = Batcher(config, lambda route: build_sinks(config, route))
    batcher.install_signal_handlers()
    server = serve(config.metrics.host, config.metrics.port, batcher.health)
    log.info("metrics on http://%s:%d/metrics", config.metrics.host, server.server_port)
    try:
        batcher.run()
    finally:
        server.shutdown()
    log.info("stopped cleanly")
    return 0


def cmd_check(config: BatcherConfig) -> int:
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    problems: list[str] = []
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=config.kafka.bootstrap_servers,
            request_timeout_ms=10_000,
            **config.kafka_client_options(),
        )
        topics = consumer.topics()
        consumer.close()
        for route in config.routes:
            if route.topic not in topics:
                problems.append(f"kafka: topic {route.topic!r} does not exist (yet)")
            dlq = config.dlq_topic(route.topic)
            if dlq not in topics:
                print(f"note: dead-letter topic {dlq!r} does not exist yet: create it, or the "
                      "broker must allow auto-creation")  # fmt: skip
        print(f"kafka: ok ({config.kafka.bootstrap_servers}, {len(topics)} topics)")
    except KafkaError as exc:
        problems.append(f"kafka: cannot reach {config.kafka.bootstrap_servers}: {exc}")
    for route in config.routes:
        for sink in build_sinks(config, route):
            try:
                issues = sink.check() if hasattr(sink, "check") else []
                if not issues:
                    sink.setup()
                problems += [f"{sink.name} ({route.table}): {i}" for i in issues]
                if not issues:
                    print(f"{sink.name}: ok for route {route.topic}")
            except (FatalError, RetryableError) as exc:
                problems.append(f"{sink.name} (route {route.topic}): {exc}")
            finally:
                sink.close()
    for p in problems:
        print(f"problem: {p}", file=sys.stderr)
    return 1 if problems else 0


def cmd_status(config: BatcherConfig) -> int:
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP

    consumer = KafkaConsumer(
        bootstrap_servers=config.kafka.bootstrap_servers,
        group_id=config.kafka.group_id,
        enable_auto_commit=False,
        **config.kafka_client_options(),
    )
    rows: list[list[str]] = []
    sink_names: list[str] = []
    for route in config.routes:
        parts = sorted(consumer.partitions_for_topic(route.topic) or [])
        ktps = [KTP(route.topic, p) for p in parts]
        tps = [TopicPartition(route.topic, p) for p in parts]
        ends = consumer.end_offsets(ktps) if ktps else {}
        durable: dict[str, dict[TopicPartition, int]] = {}
        for sink in build_sinks(config, route):
            durable[sink.name] = sink.durable_offsets(tps)
            sink.close()
        sink_names = list(durable)
        for ktp, tp in zip(ktps, tps, strict=True):
            committed = consumer.committed(ktp)
            end = ends[ktp]
            held = [durable[n].get(tp) for n in sink_names]
            low = min((h or 0) for h in held) if held else 0
            rows.append(
                [str(tp), str(end), "-" if committed is None else str(committed)]
                + ["-" if h is None else str(h) for h in held]
                + [str(end - low)]
            )
    consumer.close()
    header = ["partition", "end", "committed", *sink_names, "lag"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=False))
            )
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="batcher", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("run", "run the daemon"),
        ("check", "validate the config and reach every server"),
        ("status", "per-partition offsets of Kafka and of each sink, and lag"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("-c", "--config", required=True, help="TOML config file")
        p.add_argument("--log-format", choices=["text", "json"], help="override log_format")
    from batcher.dlqtool import add_dlq_parser, run_dlq

    add_dlq_parser(sub)
    args = parser.parse_args(argv)
    from batcher.logs import setup_logging

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"batcher: {exc}", file=sys.stderr)
        return 2
    setup_logging(args.log_format or config.log_format, config.log_level, _secrets(config))
    try:
        if args.command == "run":
            return cmd_run(config)
        if args.command == "check":
            return cmd_check(config)
        if args.command == "dlq":
            return run_dlq(args, config)
        return cmd_status(config)
    except BatcherError as exc:
        log.error("%s", exc)
        print(f"batcher: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
