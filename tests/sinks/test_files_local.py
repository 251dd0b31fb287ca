"""ParquetFileSink over LocalStore (a tmp_path), and the contract every FileStore must pass.

``FileSinkContract`` holds the scenarios; ``TestLocal`` runs them on the local disk here and
``tests/sinks/test_files_hdfs.py`` runs them on the real HDFS of the local stack. Faults are
injected by ``FlakyStore``, a real store that fails one chosen call, before or after doing it
(an answer lost on the way back), so the tests need no mocks.
"""

from __future__ import annotations

import io
import logging
import posixpath
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from batcher.errors import ConfigError, FatalError, SinkUnavailable
from sinks.base import Batch, RejectedRow, TopicPartition
from sinks.files import FileStore, ParquetFileSink
from sinks.localfs import LocalStore
from sinks.parquet import FileName, encode_parquet

TP = TopicPartition("events", 3)
OTHER = TopicPartition("events", 4)
MAY_1 = datetime(2024, 5, 1, 12, tzinfo=UTC)
MAY_2 = datetime(2024, 5, 2, tzinfo=UTC)
SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("user_id", pa.int64()),
        ("payload", pa.string()),
    ]
)

MakeSink = Callable[..., ParquetFileSink]


def make_batch(
    offsets: list[int],
    times: Sequence[datetime | None] | None = None,
    *,
    tp: TopicPartition = TP,
    first: int | None = None,
    next_offset: int | None = None,
    event_time_column: str | None = "ts",
) -> Batch:
    """Rows with event_id ``e<offset>``; every row on May 1st unless ``times`` says else."""
    times = [MAY_1] * len(offsets) if times is None else times
    records = pa.RecordBatch.from_arrays(
        [
            pa.array([f"e{o}" for o in offsets], pa.string()),
            pa.array(times, SCHEMA.field("ts").type),
            pa.array([o % 7 for o in offsets], pa.int64()),
            pa.array([f"payload of {o}" for o in offsets], pa.string()),
        ],
        schema=SCHEMA,
    )
    return Batch(
        tp=tp,
        records=records,
        offsets=pa.array(offsets, pa.int64()),
        first_offset=offsets[0] if first is None else first,
        next_offset=offsets[-1] + 1 if next_offset is None else next_offset,
        event_time_column=event_time_column,
    )


def no_dead_letters(tp: TopicPartition, rows: list[RejectedRow]) -> None:
    raise AssertionError(f"a Parquet sink dead-lettered {rows} of {tp}")


def final_files(store: FileStore, root: str) -> dict[str, pa.Table]:
    """Every final file under ``root`` (path relative to it) -> its rows."""
    paths: list[str] = []
    for entry in store.list(root):
        if entry.startswith("dt="):
            paths.extend(f"{entry}/{name}" for name in store.list(posixpath.join(root, entry)))
        elif entry.endswith(".parquet"):
            paths.append(entry)
    return {p: pq.read_table(io.BytesIO(store.read(posixpath.join(root, p)))) for p in paths}


def stored_ids(store: FileStore, root: str) -> list[str]:
    """Event ids of every stored row, in file-name order (so duplicates would show)."""
    tables = final_files(store, root)
    return [i for p in sorted(tables) for i in tables[p].column("event_id").to_pylist()]


def copy_tree(store: FileStore, root: str, dest: Path) -> None:
    """A local copy of everything under ``root``, for readers that want a filesystem."""
    dest.mkdir(parents=True, exist_ok=True)
    for entry in store.list(root):
        path = posixpath.join(root, entry)
        if store.is_dir(path):
            copy_tree(store, path, dest / entry)
        else:
            (dest / entry).write_bytes(store.read(path))


class FlakyStore:
    """A real store whose ``nth`` call of ``op`` fails once: before doing it, or after (it
    happened but the answer was lost). ``op``: "write" (step 1), "commit" (the rename to
    _staged) or "publish" (a rename to a final place); a call that found no parent directory
    did nothing and is not counted."""

    def __init__(self, inner: FileStore, op: str, nth: int, after: bool) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.op, self.nth, self.after = op, nth, after
        self.calls = 0
        self.is_dir = inner.is_dir
        self.list = inner.list
        self.makedirs = inner.makedirs
        self.read = inner.read
        self.delete = inner.delete
        self.close = inner.close

    def write(self, path: str, data: bytes) -> None:
        self._call("write", lambda: self.inner.write(path, data))

    def rename(self, src: str, dst: str) -> None:
        op = "commit" if "/_staged/" in dst else "publish"
        self._call(op, lambda: self.inner.rename(src, dst))

    def _call(self, op: str, action: Callable[[], None]) -> None:
        chosen = op == self.op and self.calls + 1 == self.nth
        if chosen and not self.after:
            self.calls += 1
            raise SinkUnavailable(self.kind, f"injected: {op} #{self.nth} refused")
        action()  # FileNotFoundError: not counted
        if op == self.op:
            self.calls += 1
        if chosen and self.after:
            raise SinkUnavailable(self.kind, f"injected: {op} #{self.nth} answer lost")


class FileSinkContract:
    """Scenarios for ParquetFileSink over any FileStore; subclasses provide the fixtures
    ``store`` (a FileStore to inspect and prepare storage with) and ``root``."""

    @pytest.fixture
    def make_sink(self, store: FileStore, root: str) -> MakeSink:
        def make(over: FileStore | None = None) -> ParquetFileSink:
            sink = ParquetFileSink("files-test", over or store, root)
            sink.setup()
            return sink

        return make

    def test_write_makes_the_offset_durable(
        self, make_sink: MakeSink, store: FileStore, root: str
    ) -> None:
        sink = make_sink()
        assert sink.durable_offsets([TP, OTHER]) == {}
        assert sink.write(make_batch(list(range(10))), no_dead_letters) == 10
        assert sink.durable_offsets([TP, OTHER]) == {TP: 10}
        assert make_sink().durable_offsets([TP]) == {TP: 10}  # from storage, not memory
        assert list(final_files(store, root)) == [
            f"dt=2024-05-01/{FileName('events', 3, 0, 9).filename}"
        ]
        assert stored_ids(store, root) == [f"e{o}" for o in range(10)]

    @pytest.mark.parametrize(
        "fresh", [pytest.param(False, id="same-sink"), pytest.param(True, id="new-sink")]
    )
    def test_overlapping_replay_writes_only_new_rows(
        self, make_sink: MakeSink, store: FileStore, root: str, fresh: bool
    ) -> None:
        sink = make_sink()
        sink.write(make_batch(list(range(10))), no_dead_letters)
        if fresh:
            sink = make_sink()
        assert sink.write(make_batch(list(range(5, 15))), no_dead_letters) == 5
        assert sink.write(make_batch(list(range(0, 15))), no_dead_letters) == 0
        assert stored_ids(store, root) == [f"e{o}" for o in range(15)]
        assert sorted(final_files(store, root)) == [
            f"dt=2024-05-01/{FileName('events', 3, 0, 9).filename}",
            f"dt=2024-05-01/{FileName('events', 3, 10, 14).filename}",
        ]
        assert sink.durable_offsets([TP]) == {TP: 15}

    def test_batch_over_two_dates_makes_two_files_of_one_range(
        self, make_sink: MakeSink, store: FileStore, root: str, tmp_path: Path
    ) -> None:
        times: list[datetime | None] = [MAY_1, MAY_2 - timedelta(microseconds=1), MAY_2, None]
        make_sink().write(
            make_batch([20, 21, 23, 24], times, first=19, next_offset=26), no_dead_letters
        )
        name = FileName("events", 3, 19, 25).filename
        files = final_files(store, root)
        assert {p: t.column("event_id").to_pylist() for p, t in files.items()} == {
            f"dt=2024-05-01/{name}": ["e20", "e21"],
            f"dt=2024-05-02/{name}": ["e23"],
            f"dt=unknown/{name}": ["e24"],
        }
        copy_tree(store, root, tmp_path / "copy")
        table = ds.dataset(tmp_path / "copy", format="parquet", partitioning="hive").to_table()
        rows = sorted(
            zip(
                table["event_id"].to_pylist(),
                table["dt"].cast(pa.string()).to_pylist(),
                strict=True,
            )
        )
        assert rows == [
            ("e20", "2024-05-01"),
            ("e21", "2024-05-01"),
            ("e23", "2024-05-02"),
            ("e24", "unknown"),
        ]
        assert table.schema.field("ts").type == pa.timestamp("us", tz="UTC")

    def test_range_without_rows_is_made_durable_by_an_empty_file(
        self, make_sink: MakeSink, store: FileStore, root: str
    ) -> None:
        sink = make_sink()
        sink.write(make_batch([0, 1]), no_dead_letters)
        dead = make_batch([2]).records.slice(0, 0)
        empty = Batch(TP, dead, pa.array([], pa.int64()), 2, 9, "ts")
        assert sink.write(empty, no_dead_letters) == 0
        assert make_sink().durable_offsets([TP]) == {TP: 9}
        table = final_files(store, root)[f"dt=unknown/{FileName('events', 3, 2, 8).filename}"]
        assert (table.num_rows, table.schema) == (0, SCHEMA)
        assert sink.write(empty, no_dead_letters) == 0  # a replay writes nothing
        assert len(final_files(store, root)) == 2

    def test_route_without_event_time_writes_under_the_root(
        self, make_sink: MakeSink, store: FileStore, root: str
    ) -> None:
        sink = make_sink()
        sink.write(make_batch([0, 1], [MAY_1, None], event_time_column=None), no_dead_letters)
        sink.write(make_batch([2], event_time_column=None), no_dead_letters)
        assert sorted(final_files(store, root)) == [
            FileName("events", 3, 0, 1).filename,
            FileName("events", 3, 2, 2).filename,
        ]
        assert sink.durable_offsets([TP]) == {TP: 3}

    def test_recover_discards_tmp_and_rolls_staged_forward(
        self, make_sink: MakeSink, store: FileStore, root: str
    ) -> None:
        sink = make_sink()
        sink.write(make_batch(list(range(5))), no_dead_letters)
        staged = FileName("events", 3, 5, 9)
        uncommitted = FileName("events", 3, 10, 12)
        other_tmp = FileName("events", 4, 0, 3)
        on_may_1 = make_batch([5, 6], first=5, next_offset=10)
        on_may_2 = make_batch([8], [MAY_2])
        for stem, part in [
            (f"_staged/{staged.stem}/dt=2024-05-01.parquet", on_may_1),
            (f"_staged/{staged.stem}/dt=2024-05-02.parquet", on_may_2),
            (f"_tmp/{uncommitted.stem}/dt=2024-05-01.parquet", make_batch([10, 11, 12])),
            (f"_tmp/{other_tmp.stem}/dt=2024-05-01.parquet", make_batch([0], tp=OTHER)),
        ]:
            store.write(posixpath.join(root, stem), encode_parquet(part.records))
        # Crashed halfway through step 3: one staged file already at its final place.
        store.makedirs(posixpath.join(root, "dt=2024-05-02"))
        store.rename(
            posixpath.join(root, f"_staged/{staged.stem}/dt=2024-05-02.parquet"),
            posixpath.join(root, f"dt=2024-05-02/{staged.filename}"),
        )
        assert sink.durable_offsets([TP, OTHER]) == {TP: 10}  # staged counts, tmp does not

        sink.recover([TP])
        assert store.list(posixpath.join(root, "_staged")) == []
        assert store.list(posixpath.join(root, "_tmp")) == [other_tmp.stem]  # not ours to judge
        assert stored_ids(store, root) == ["e0", "e1", "e2", "e3", "e4", "e5", "e6", "e8"]
        assert sink.durable_offsets([TP, OTHER]) == {TP: 10}
        assert sink.write(make_batch(list(range(8, 12))), no_dead_letters) == 2
        assert sorted(stored_ids(store, root)) == sorted(f"e{o}" for o in [*range(7), 8, 10, 11])

    @pytest.mark.parametrize(
        ("op", "nth", "after", "retried_rows"),
        [
            pytest.param("write", 2, False, 15, id="step1-second-file"),
            pytest.param("commit", 1, False, 15, id="commit-refused"),
            pytest.param("commit", 1, True, 5, id="commit-answer-lost"),
            pytest.param("publish", 1, False, 5, id="publish-first-refused"),
            pytest.param("publish", 1, True, 5, id="publish-first-answer-lost"),
            pytest.param("publish", 2, True, 5, id="publish-last-answer-lost"),
        ],
    )
    def test_failed_write_then_longer_retry_stores_each_row_once(
        self,
        make_sink: MakeSink,
        store: FileStore,
        root: str,
        op: str,
        nth: int,
        after: bool,
        retried_rows: int,
    ) -> None:
        sink = make_sink(FlakyStore(store, op, nth, after))
        two_days = [MAY_1] * 5 + [MAY_2] * 5
        with pytest.raises(SinkUnavailable, match="injected"):
            sink.write(make_batch(list(range(10)), two_days), no_dead_letters)
        # The batcher retries, with more records buffered meanwhile.
        written = sink.write(make_batch(list(range(15)), two_days + [MAY_2] * 5), no_dead_letters)
        assert sorted(stored_ids(store, root)) == sorted(f"e{o}" for o in range(15))
        assert written == retried_rows  # 5 when the first write had committed
        assert store.list(posixpath.join(root, "_tmp")) == []
        assert store.list(posixpath.join(root, "_staged")) == []
        assert make_sink().durable_offsets([TP]) == {TP: 15}

    def test_setup_is_idempotent_and_refuses_a_file_root(self, store: FileStore, root: str) -> None:
        ParquetFileSink("a", store, root).setup()
        ParquetFileSink("a", store, root).setup()
        assert store.is_dir(posixpath.join(root, "_staged"))
        store.write(posixpath.join(root, "file"), b"x")
        with pytest.raises(ConfigError, match="not a directory"):
            ParquetFileSink("a", store, posixpath.join(root, "file")).setup()

    def test_each_write_is_logged_with_its_numbers(
        self, make_sink: MakeSink, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.INFO, logger="sinks.files"):
            make_sink().write(make_batch([0, 1, 2], [MAY_1, MAY_2, MAY_2]), no_dead_letters)
        (record,) = [r for r in caplog.records if r.msg.startswith("%s: wrote")]
        fields = {k: getattr(record, k) for k in ("sink", "topic", "partition", "first_offset")}
        assert fields == {
            "sink": "files-test",
            "topic": "events",
            "partition": 3,
            "first_offset": 0,
        }
        assert (record.last_offset, record.rows, record.files) == (2, 3, 2)  # type: ignore[attr-defined]
        assert record.bytes > 0 and record.seconds >= 0  # type: ignore[attr-defined]


class TestLocal(FileSinkContract):
    @pytest.fixture
    def store(self) -> LocalStore:
        return LocalStore()

    @pytest.fixture
    def root(self, tmp_path: Path) -> str:
        return str(tmp_path / "data" / "events")


def test_local_constructor_reads_what_it_wrote(tmp_path: Path) -> None:
    sink = ParquetFileSink.local(str(tmp_path / "events"), compression="zstd", compression_level=5)
    sink.setup()
    sink.write(make_batch([0, 1, 2]), no_dead_letters)
    sink.close()
    table = ds.dataset(tmp_path / "events", format="parquet", partitioning="hive").to_table()
    assert sorted(table["event_id"].to_pylist()) == ["e0", "e1", "e2"]


@pytest.mark.parametrize(
    ("root", "compression", "level", "message"),
    [
        pytest.param("relative/dir", "zstd", None, "absolute", id="relative-root"),
        pytest.param("/data", "lzma", None, "not available", id="codec"),
        pytest.param("/data", "zstd", 40, "compression_level", id="level"),
    ],
)
def test_bad_config_is_refused_at_construction(
    root: str, compression: str, level: int | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        ParquetFileSink("bad", LocalStore(), root, compression, level)


def test_a_root_below_a_file_is_fatal(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(FatalError, match="Not a directory"):
        ParquetFileSink.local(str(tmp_path / "file" / "events")).setup()
