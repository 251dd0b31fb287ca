"""``batcher dlq inspect | replay``: look into the dead-letter topics and send records back.

- ``dlq inspect -c FILE [--topic T] [--samples N]`` reads ``<topic><dlq_suffix>`` of every
  route (or of ``T`` only) from the beginning up to its current end, without a consumer
  group (assign + seek: nothing is committed), and prints the counts by reason and by origin
  partition, how far the replay group got, and a few sample records (headers, key, value
  truncated).
- ``dlq replay -c FILE [--reason R ...] [--since ISO-TIME] [--to TOPIC]`` re-publishes the
  dead letters that match to their origin topic (header ``dlq.origin.topic``) or to ``--to``,
  with their original key and value and two added headers: ``dlq.replayed=true`` and
  ``dlq.replayed.from=<dlq topic>:<partition>:<offset>``.

Replay progress is the committed offset of the consumer group ``batcher-dlq-replay``
(``--group`` to use another) on each dead-letter partition: a run starts where the last one
stopped and commits, in chunks, only after Kafka acknowledged (acks=all) every record of the
chunk, so a record is never replayed by two runs. The committed offset is a watermark: a
record that a run passed over because it did not match ``--reason``/``--since`` is not
offered again to the same group (the run says how many it passed over; ``--dry-run`` shows
the counts first, and a new ``--group`` starts from the beginning again). A crash between an
acknowledgement and the commit of its chunk replays that chunk again on the next run (at
most ``COMMIT_EVERY`` records). Run one replay per dead-letter topic at a time: the group
uses manual assignment, so two concurrent runs would not split the partitions.

The CLI (``batcher/cli.py``) wires this in with :func:`add_dlq_parser` and :func:`run_dlq`.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from batcher.config import BatcherConfig
from batcher.errors import BatcherError

REPLAY_GROUP = "batcher-dlq-replay"
COMMIT_EVERY = 1000  # records acknowledged between two commits of the replay group
IDLE_TIMEOUT_S = 30.0  # no record while below the end offsets for this long: give up
VALUE_PREVIEW = 200  # bytes of a sample's value (and of each header) that inspect prints
HEADER_REPLAYED = "dlq.replayed"
HEADER_REPLAYED_FROM = "dlq.replayed.from"


class DlqError(BatcherError):
    """A dead-letter topic could not be read or a replay could not be published."""


# -- what a dead letter says -----------------------------------------------------------------
@dataclass(frozen=True)
class Letter:
    """One record of a dead-letter topic."""

    topic: str  # the dead-letter topic
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @classmethod
    def from_record(cls, record: Any) -> Letter:
        return cls(
            record.topic,
            record.partition,
            record.offset,
            int(record.timestamp or 0),
            record.key,
            record.value,
            tuple((k, v if v is not None else b"") for k, v in (record.headers or [])),
        )

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v.decode("utf-8", "replace")
        return None

    @property
    def reason(self) -> str:
        return self.header("dlq.reason") or "(none)"

    @property
    def origin(self) -> str:
        topic = self.header("dlq.origin.topic") or "?"
        return f"{topic}[{self.header('dlq.origin.partition') or '?'}]"

    @property
    def source(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"


def _clip(data: bytes | None, limit: int = VALUE_PREVIEW) -> str:
    if data is None:
        return "(null)"
    text = data[:limit].decode("utf-8", "replace")
    more = len(data) - limit
    return repr(text) + (f" ... (+{more} bytes)" if more > 0 else "")


# -- reading a topic from a position to its end -----------------------------------------------
def _consumer(config: BatcherConfig, group: str | None) -> Any:
    from kafka import KafkaConsumer

    return KafkaConsumer(
        bootstrap_servers=config.kafka.bootstrap_servers,
        group_id=group,
        client_id="batcher-dlq",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **config.kafka_client_options(),
    )


def _dlq_topics(config: BatcherConfig, only: str | None) -> list[str]:
    """The dead-letter topic of each route; ``only`` names a route's topic or its DLQ."""
    topics = [config.dlq_topic(r.topic) for r in config.routes]
    if only is None:
        return topics
    for route in config.routes:
        if only in (route.topic, config.dlq_topic(route.topic)):
            return [config.dlq_topic(route.topic)]
    raise DlqError(
        f"--topic {only!r} is not a route's topic nor its dead-letter topic"
        f" (routes: {', '.join(r.topic for r in config.routes)})"
    )


def _partitions(consumer: Any, topic: str) -> list[Any]:
    """The topic's partitions; empty when it does not exist (never creates it)."""
    from kafka import TopicPartition as KTP

    if topic not in consumer.topics():
        return []
    return [KTP(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]


def _read(consumer: Any, starts: dict[Any, int], ends: dict[Any, int]) -> Iterator[Letter]:
    """Every record from ``starts`` up to (not including) ``ends``, in order per partition."""
    import time

    todo = {tp for tp in starts if starts[tp] < ends[tp]}
    if not todo:
        return
    consumer.assign(list(todo))
    for tp in todo:
        consumer.seek(tp, starts[tp])
    last_progress = time.monotonic()
    while todo:
        polled = consumer.poll(timeout_ms=500)
        got = False
        for tp, records in polled.items():
            for record in records:
                if record.offset >= ends[tp]:
                    break
                got = True
                yield Letter.from_record(record)
        for tp in list(todo):
            if consumer.position(tp) >= ends[tp]:
                todo.discard(tp)
                consumer.pause(tp)
        if got:
            last_progress = time.monotonic()
        elif todo and time.monotonic() - last_progress > IDLE_TIMEOUT_S:
            left = {f"{tp.topic}[{tp.partition}]": consumer.position(tp) for tp in todo}
            raise DlqError(f"no records for {IDLE_TIMEOUT_S:.0f}s below the end offsets: {left}")


# -- inspect ----------------------------------------------------------------------------------
@dataclass
class Inspection:
    """What one dead-letter topic holds."""

    topic: str
    total: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    by_origin: Counter[str] = field(default_factory=Counter)
    samples: list[Letter] = field(default_factory=list)
    # Per partition: (log start, replay group's committed offset or None, log end).
    positions: dict[int, tuple[int, int | None, int]] = field(default_factory=dict)

    @property
    def not_replayed(self) -> int:
        """Records at or after the replay group's position (all, where it has none)."""
        return sum(end - max(start, c or 0) for start, c, end in self.positions.values())


def inspect(
    config: BatcherConfig,
    topic: str | None = None,
    samples: int = 5,
    out: TextIO | None = None,
    group: str = REPLAY_GROUP,
) -> list[Inspection]:
    """Read each dead-letter topic from the beginning; print and return what it holds."""
    out = out or sys.stdout
    results = []
    consumer = _consumer(config, group=None)
    progress = _consumer(config, group=group)  # only to read the replay group's offsets
    try:
        for dlq in _dlq_topics(config, topic):
            result = Inspection(dlq)
            tps = _partitions(consumer, dlq)
            if tps:
                starts = consumer.beginning_offsets(tps)
                ends = consumer.end_offsets(tps)
                for tp in tps:
                    result.positions[tp.partition] = (starts[tp], progress.committed(tp), ends[tp])
                per_reason_sample: dict[str, Letter] = {}
                first: list[Letter] = []
                for letter in _read(consumer, starts, ends):
                    result.total += 1
                    result.by_reason[letter.reason] += 1
                    result.by_origin[letter.origin] += 1
                    per_reason_sample.setdefault(letter.reason, letter)
                    if len(first) < samples:
                        first.append(letter)
                # One sample of each reason first, then the earliest records.
                chosen = list(per_reason_sample.values())[:samples]
                chosen += [s for s in first if s not in chosen][: samples - len(chosen)]
                result.samples = sorted(chosen, key=lambda s: (s.partition, s.offset))
            _print_inspection(result, out, exists=bool(tps), group=group)
            results.append(result)
    finally:
        consumer.close()
        progress.close()
    return results


def _print_inspection(r: Inspection, out: TextIO, exists: bool, group: str) -> None:
    if not exists:
        print(f"{r.topic}: no such topic (nothing was ever dead-lettered)", file=out)
        return
    print(f"{r.topic}: {r.total} dead letter(s)", file=out)
    for p, (start, committed, end) in sorted(r.positions.items()):
        held = f"offsets {start}..{end - 1}" if end > start else "empty"
        done = "has not started" if committed is None else f"is at offset {committed}"
        print(f"  partition {p}: {held}; {group} {done}", file=out)
    print(f"  not yet replayed nor passed over by {group}: {r.not_replayed}", file=out)
    if not r.total:
        return
    width = max(len(k) for k in [*r.by_reason, *r.by_origin])
    print("  by reason:", file=out)
    for reason, n in r.by_reason.most_common():
        print(f"    {reason:<{width}}  {n}", file=out)
    print("  by origin partition:", file=out)
    for origin, n in sorted(r.by_origin.items()):
        print(f"    {origin:<{width}}  {n}", file=out)
    print(f"  samples ({len(r.samples)}):", file=out)
    for s in r.samples:
        when = datetime.fromtimestamp(s.timestamp_ms / 1000, UTC).isoformat(timespec="seconds")
        print(f"  - {s.source}  dead-lettered {when}", file=out)
        for k, v in s.headers:
            print(f"      {k}: {_clip(v)}", file=out)
        print(f"      key: {_clip(s.key)}", file=out)
        print(f"      value: {_clip(s.value)}", file=out)


# -- replay -----------------------------------------------------------------------------------
@dataclass
class ReplayResult:
    topic: str  # the dead-letter topic
    replayed: int = 0
    passed_over: int = 0  # did not match --reason / --since: committed past, not sent
    to: Counter[str] = field(default_factory=Counter)  # target topic -> records sent


def parse_since(text: str) -> datetime:
    """An ISO-8601 time; without a zone it is UTC."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise DlqError(f"--since {text!r}: not an ISO-8601 time ({exc})") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def replay(
    config: BatcherConfig,
    reasons: Sequence[str] | None = None,
    since: datetime | None = None,
    to: str | None = None,
    topic: str | None = None,
    group: str = REPLAY_GROUP,
    dry_run: bool = False,
    progress: bool = True,
    out: TextIO | None = None,
) -> list[ReplayResult]:
    """Re-publish the matching dead letters of each route; return what each topic did."""
    from kafka import KafkaProducer

    out = out or sys.stdout
    wanted = set(reasons or [])
    since_ms = int(since.timestamp() * 1000) if since is not None else None

    def matches(letter: Letter) -> bool:
        if wanted and letter.reason not in wanted:
            return False
        return since_ms is None or letter.timestamp_ms >= since_ms

    consumer = _consumer(config, group=group)
    producer = None
    if not dry_run:
        producer = KafkaProducer(
            bootstrap_servers=config.kafka.bootstrap_servers,
            client_id="batcher-dlq-replay",
            acks="all",
            linger_ms=20,
            max_block_ms=30_000,
            **config.kafka_client_options(),
        )
    results = []
    try:
        for dlq in _dlq_topics(config, topic):
            result = ReplayResult(dlq)
            results.append(result)
            tps = _partitions(consumer, dlq)
            if not tps:
                print(f"{dlq}: no such topic, nothing to replay", file=out)
                continue
            firsts = consumer.beginning_offsets(tps)
            ends = consumer.end_offsets(tps)
            starts = {tp: max(consumer.committed(tp) or 0, firsts[tp]) for tp in tps}
            total = sum(max(0, ends[tp] - starts[tp]) for tp in tps)
            _replay_topic(consumer, producer, result, starts, ends, total, matches, to, progress)
            verb = "would replay" if dry_run else "replayed"
            targets = ", ".join(f"{n} to {t}" for t, n in sorted(result.to.items())) or "none"
            print(
                f"{dlq}: {verb} {result.replayed} ({targets}); passed over "
                f"{result.passed_over} not matching the filters",
                file=out,
            )
    finally:
        if producer is not None:
            producer.close(timeout=30)
        consumer.close()
    return results


def _replay_topic(
    consumer: Any,
    producer: Any,
    result: ReplayResult,
    starts: dict[Any, int],
    ends: dict[Any, int],
    total: int,
    matches: Callable[[Letter], bool],
    to: str | None,
    progress: bool,
) -> None:
    from kafka import OffsetAndMetadata
    from kafka import TopicPartition as KTP
    from kafka.errors import KafkaError
    from tqdm import tqdm

    pending: list[Any] = []  # futures of the chunk not yet acknowledged
    position: dict[Any, int] = {}  # next offset per partition, once handled

    def checkpoint() -> None:
        """Wait for every send of the chunk, then commit past everything handled."""
        if producer is None:  # a dry run commits nothing
            return
        try:
            producer.flush(timeout=60)
            for fut in pending:
                fut.get(timeout=60)
        except KafkaError as exc:
            raise DlqError(f"replay not acknowledged, nothing more committed: {exc}") from exc
        pending.clear()
        if position:
            consumer.commit({tp: OffsetAndMetadata(off, "", -1) for tp, off in position.items()})

    with tqdm(total=total, unit="rec", desc=f"replay {result.topic}", disable=not progress,
              file=sys.stderr) as bar:  # fmt: skip
        for handled, letter in enumerate(_read(consumer, starts, ends), start=1):
            if matches(letter):
                target = to or letter.header("dlq.origin.topic")
                if not target:
                    raise DlqError(
                        f"{letter.source} has no dlq.origin.topic header: give --to TOPIC"
                    )
                if producer is not None:
                    pending.append(
                        producer.send(
                            target,
                            key=letter.key,
                            value=letter.value,
                            headers=[
                                (HEADER_REPLAYED, b"true"),
                                (HEADER_REPLAYED_FROM, letter.source.encode()),
                            ],
                        )
                    )
                result.replayed += 1
                result.to[target] += 1
            else:
                result.passed_over += 1
            position[KTP(letter.topic, letter.partition)] = letter.offset + 1
            bar.update(1)
            if handled % COMMIT_EVERY == 0:
                checkpoint()
        # Partitions whose remaining offsets held no record (compaction, transaction
        # markers) are done too.
        for tp, end in ends.items():
            if starts[tp] < end:
                position[tp] = end
        checkpoint()


# -- the command line -------------------------------------------------------------------------
def add_dlq_parser(subparsers: Any) -> None:
    """Add ``dlq inspect`` and ``dlq replay`` to the ``batcher`` command's subparsers.

    Both take ``-c/--config`` and ``--log-format`` like the other commands; the chosen
    action is in ``args.dlq_command``.
    """
    dlq = subparsers.add_parser("dlq", help="inspect or replay the dead-letter topics")
    actions = dlq.add_subparsers(dest="dlq_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("-c", "--config", required=True, help="TOML config file")
        p.add_argument("--log-format", choices=["text", "json"], help="override log_format")
        p.add_argument("--topic", help="only this route (its topic or its dead-letter topic)")

    ins = actions.add_parser(
        "inspect", help="counts by reason and origin partition, and sample records"
    )
    common(ins)
    ins.add_argument("--samples", type=int, default=5, help="sample records to print (5)")
    ins.add_argument("--group", default=REPLAY_GROUP, help="replay group to report on")

    rep = actions.add_parser(
        "replay", help="re-publish dead letters to their origin topic (or --to)"
    )
    common(rep)
    rep.add_argument("--reason", action="append", help="only this dlq.reason (repeatable)")
    rep.add_argument(
        "--since", type=parse_since, help="only dead-lettered at or after (ISO-8601; UTC)"
    )
    rep.add_argument("--to", help="publish to this topic instead of dlq.origin.topic")
    rep.add_argument(
        "--group", default=REPLAY_GROUP,
        help=f"consumer group keeping the replay's progress ({REPLAY_GROUP})",
    )  # fmt: skip
    rep.add_argument("--dry-run", action="store_true", help="count only: send, commit nothing")
    rep.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_dlq(args: argparse.Namespace, config: BatcherConfig) -> int:
    """Run ``batcher dlq inspect|replay``; 0 on success, 1 with the reason on stderr."""
    from kafka.errors import KafkaError

    try:
        if args.dlq_command == "inspect":
            inspect(config, args.topic, max(0, args.samples), group=args.group)
            return 0
        replay(
            config,
            reasons=args.reason,
            since=args.since,
            to=args.to,
            topic=args.topic,
            group=args.group,
            dry_run=args.dry_run,
            progress=not args.no_progress,
        )
        return 0
    except (DlqError, KafkaError) as exc:
        print(f"batcher dlq {args.dlq_command}: {exc}", file=sys.stderr)
        return 1
