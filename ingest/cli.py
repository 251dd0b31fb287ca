"""The ``ingest`` command: send JSON lines to Kafka (``emit``) or synthetic load (``gen``).

::

    ingest emit --topic events [--key-field user_id] [FILE|-]
    ingest gen  --topic events --count 1000000 [--rate 50000] [--bad-ratio 0.01] [--seed 7]

``--bootstrap`` defaults to ``$KAFKA_BOOTSTRAP`` (``set -a; . .stack/env`` sets it for the local
stack). Exit status: 0 all sent, 1 some records failed, 2 usage error or Kafka unreachable.

``emit`` goes through :class:`ingest.Emitter` (the path applications use). ``gen`` drives a
``KafkaProducer`` directly with pre-encoded bytes and large batches: per-event work is the
template formatting in :mod:`ingest.synthetic` plus ``send()``, which is what it takes to reach
tens of thousands of events/s from one Python process.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import IO, Any

import msgspec
from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError
from tqdm import tqdm

from ingest import synthetic
from ingest.emitter import DEFAULT_API_VERSION, DeliveryError, Emitter, EmitterConfig

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# A CLI is not a request path: it may wait for Kafka (a broker restart, a topic being created).
CLI_MAX_BLOCK_MS = 10_000
CONNECT_TIMEOUT_S = CLI_MAX_BLOCK_MS / 1000  # one metadata attempt
# gen: large batches amortize kafka-python's per-request cost; 50 ms of linger fills them.
GEN_BATCH_SIZE = 256 * 1024
GEN_LINGER_MS = 50
# gen: kafka-python 3 has no buffer_memory, so bound the records in flight ourselves: wait for
# the oldest of every WINDOW_STEP-th record once this many are outstanding (~56 MB at 280 B).
GEN_MAX_IN_FLIGHT = 200_000
GEN_WINDOW_STEP = 1_000


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    bootstrap = args.bootstrap or os.environ.get("KAFKA_BOOTSTRAP")
    if not bootstrap:
        parser.error(
            "no Kafka address: pass --bootstrap HOST:PORT or set KAFKA_BOOTSTRAP "
            "(for the local stack: set -a; . .stack/env)"
        )
    try:
        if args.command == "emit":
            return _emit(args, bootstrap)
        return _gen(args, bootstrap)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ingest", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--topic", required=True, help="Kafka topic to write to")
    common.add_argument("--bootstrap", help="Kafka HOST:PORT (default: $KAFKA_BOOTSTRAP)")

    emit = sub.add_parser("emit", parents=[common], help="send JSON lines, one object each")
    emit.add_argument("file", nargs="?", default="-", help="file of JSON lines; - is stdin")
    emit.add_argument("--key-field", help="event field whose value is the Kafka key")

    gen = sub.add_parser("gen", parents=[common], help="send synthetic events")
    gen.add_argument("--count", type=_non_negative_int, required=True, help="events to send")
    gen.add_argument("--rate", type=float, default=0.0, help="events/s; 0 = unlimited")
    gen.add_argument("--bad-ratio", type=_ratio, default=0.0, help="share of malformed records")
    gen.add_argument("--seed", type=int, help="random seed, for a reproducible stream")
    gen.add_argument(
        "--partitions-key",
        default="user_id",
        choices=["user_id", "event_id", "event_type", "country", "none"],
        help="event field used as the Kafka key (default: user_id; none: no key)",
    )
    gen.add_argument("--compression", choices=["gzip", "snappy", "lz4", "zstd"])
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _ratio(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within 0..1, got {value}")
    return value


# --- emit -------------------------------------------------------------------------------------


def _emit(args: argparse.Namespace, bootstrap: str) -> int:
    try:
        lines = _open(args.file)
    except OSError as exc:
        print(f"ingest: cannot read {args.file}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    config = EmitterConfig(
        bootstrap_servers=bootstrap,
        topic=args.topic,
        key_field=args.key_field,
        max_block_ms=CLI_MAX_BLOCK_MS,
    )
    late_failures: list[str] = []  # appended on the producer's I/O thread
    emitter = Emitter(config, on_error=lambda _event, exc: late_failures.append(str(exc)))
    with lines, emitter:
        try:
            emitter.connect(CONNECT_TIMEOUT_S)
        except DeliveryError as exc:
            print(f"ingest: {exc}", file=sys.stderr)
            return EXIT_USAGE
        started = time.monotonic()
        bad_lines = _emit_lines(emitter, lines)
        emitter.flush()
        elapsed = time.monotonic() - started
    for error in late_failures[:10]:
        print(f"ingest: delivery failed: {error}", file=sys.stderr)
    print(
        f"sent {emitter.stats.delivered} events to {args.topic} in {elapsed:.1f} s; "
        f"{bad_lines} bad lines, {len(late_failures)} failed after sending"
    )
    return EXIT_FAILED if bad_lines or late_failures else EXIT_OK


def _emit_lines(emitter: Emitter, lines: Iterable[bytes]) -> int:
    """Emit each JSON line; report bad ones (undecodable or refused) by line number; count them."""
    decode = msgspec.json.Decoder().decode  # bytes in: invalid UTF-8 is an error, not replaced
    half_buffer = emitter.config.buffer_memory // 2
    bad = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event: Any = decode(line)
            if not isinstance(event, dict):
                raise ValueError(f"expected a JSON object, got {type(event).__name__}")
            if emitter.stats.pending_bytes > half_buffer:
                emitter.flush()  # a file can outrun Kafka; wait rather than overflow the buffer
            emitter.emit(event)
        except (ValueError, TypeError, DeliveryError) as exc:
            bad += 1
            print(f"ingest: line {number}: {exc}", file=sys.stderr)
    return bad


def _open(path: str) -> IO[bytes]:
    if path == "-":
        return os.fdopen(os.dup(sys.stdin.fileno()), "rb")  # closing it leaves stdin open
    return open(path, "rb")


# --- gen --------------------------------------------------------------------------------------


class _Failures:
    """Counts records that failed after send(); the one per-record callback of ``gen``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # taken on failures only
        self.count = 0
        self.first: BaseException | None = None

    def __call__(self, exc: BaseException) -> None:
        with self._lock:
            self.count += 1
            if self.first is None:
                self.first = exc


def _gen(args: argparse.Namespace, bootstrap: str) -> int:
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        api_version=DEFAULT_API_VERSION,
        max_block_ms=CLI_MAX_BLOCK_MS,
        batch_size=GEN_BATCH_SIZE,
        linger_ms=GEN_LINGER_MS,
        compression_type=args.compression,
    )
    try:
        try:
            producer.partitions_for(args.topic)
        except KafkaError as exc:
            print(f"ingest: Kafka at {bootstrap} unreachable: {exc}", file=sys.stderr)
            return EXIT_USAGE
        key_field = None if args.partitions_key == "none" else args.partitions_key
        records = synthetic.records(
            args.count, bad_ratio=args.bad_ratio, seed=args.seed, key_field=key_field
        )
        quiet = args.quiet or not sys.stderr.isatty()
        if not args.quiet and importlib.util.find_spec("crc32c") is None:
            print(
                "ingest: note: the crc32c package is not installed, so kafka-python checksums "
                "each batch in pure Python (~2.5x slower); pip install crc32c",
                file=sys.stderr,
            )
        started = time.monotonic()
        sent, failures = _produce(producer, args.topic, records, args.count, args.rate, quiet)
        producer.flush()
        elapsed = time.monotonic() - started
    finally:
        producer.close()
    failed = failures.count + (args.count - sent)
    if failures.first is not None:
        print(f"ingest: first delivery failure: {failures.first}", file=sys.stderr)
    print(
        f"sent {sent - failures.count} of {args.count} events to {args.topic} "
        f"({failed} failed) in {elapsed:.1f} s: {sent / max(elapsed, 1e-9):,.0f} events/s"
    )
    return EXIT_FAILED if failed else EXIT_OK


def _produce(
    producer: KafkaProducer,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes]],
    count: int,
    rate: float,
    quiet: bool,
) -> tuple[int, _Failures]:
    """Send the records, paced to ``rate`` events/s (0: as fast as possible)."""
    failures = _Failures()
    window: deque[Any] = deque()  # futures of every GEN_WINDOW_STEP-th record, oldest first
    send = producer.send
    # Progress (and pacing) every `step` records: often enough to be smooth, rare enough to be
    # cheap at full speed.
    step = max(1, min(GEN_WINDOW_STEP, int(rate) // 20)) if rate > 0 else GEN_WINDOW_STEP
    started = time.monotonic()
    sent = 0
    with tqdm(total=count, unit="ev", unit_scale=True, disable=quiet, smoothing=0.1) as bar:
        for key, value in records:
            try:
                future = send(topic, value=value, key=key)
            except KafkaTimeoutError as exc:
                print(f"ingest: send failed: {exc}", file=sys.stderr)
                break
            future.add_errback(failures)
            sent += 1
            if sent % GEN_WINDOW_STEP == 0:
                window.append(future)
                if len(window) * GEN_WINDOW_STEP > GEN_MAX_IN_FLIGHT:
                    _await(window.popleft())
            if sent % step == 0:
                bar.update(step)
                if rate > 0:
                    ahead = started + sent / rate - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)  # pacing, not waiting for a condition
        bar.update(sent % step)
    return sent, failures


def _await(future: Any) -> None:
    """Wait for one record's outcome; a failure is counted by its errback already."""
    with contextlib.suppress(KafkaError):
        future.get()


if __name__ == "__main__":
    sys.exit(main())
