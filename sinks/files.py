"""ParquetFileSink: Parquet files whose names carry the Kafka offsets they hold, on HDFS or a
local disk (a ``FileStore``: ``sinks.hdfs.HdfsStore`` or ``sinks.localfs.LocalStore``).

Layout under one root per route (``/data/events``)::

    <root>/dt=2024-05-01/<topic>+<partition>+<first:019d>+<last:019d>.parquet
    <root>/dt=unknown/...        rows whose event time is null
    <root>/<topic>+...parquet    a route without an event-time column (no dt directories)
    <root>/_tmp/<stem>/          a flush being written (not committed)
    <root>/_staged/<stem>/       a committed flush being moved to its final places

``first``/``last`` are the offsets the flush covers (``Batch.first_offset``,
``Batch.next_offset - 1``), so the names alone say what is durable: readers (Spark, DuckDB,
pyarrow.dataset) skip the ``_``-prefixed directories, and no two files overlap in offsets.

Commit protocol of one ``write`` (one file per UTC date of the event time, all or none):

1. write each file to ``_tmp/<stem>/dt=<date>.parquet`` (``undated.parquet`` without dates);
2. rename ``_tmp/<stem>`` to ``_staged/<stem>``: THE commit point (a no-replace rename);
3. rename each staged file to ``<root>/dt=<date>/<stem>.parquet`` (making the dt directory
   on a missing-parent failure; a final file already there was moved before a crash: done),
   then delete ``_staged/<stem>``.

A crash before 2 leaves only ``_tmp``, which ``recover`` deletes; a crash after 2 leaves
``_staged``, which ``recover`` rolls forward. ``durable_offsets`` counts final files and
staged directories: ``max(last) + 1`` per topic-partition.

A flush whose rows were all dead-lettered still advances the offsets: it writes a schema-only
file where a row without a date goes (``dt=unknown`` for a dated route, the root otherwise),
so every file of a root sits at the same depth (Spark refuses mixed depths under hive
partitioning) and the name carries the range.

Cost: ``durable_offsets`` and ``recover`` list the root, ``_tmp``, ``_staged`` and every dt
directory: one LISTSTATUS per day of data, and every file name crosses the wire. Fine for
months of daily partitions; beyond, list only recent days or keep a per-partition marker.
``write`` does not list: the durable offset per topic-partition is kept in memory after
``recover`` and after each write, and dropped when a write fails, so the next write recovers
that partition from storage first (a rename that succeeded but whose answer was lost).
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final, Protocol

import pyarrow as pa

from batcher.crashpoints import crash_point
from batcher.errors import ConfigError, SchemaMismatch, SinkUnavailable
from sinks.base import Batch, DeadLetterFn, TopicPartition
from sinks.hdfs import DEFAULT_TIMEOUT, HdfsStore
from sinks.localfs import LocalStore
from sinks.parquet import (
    PARTITION_KEY,
    SUFFIX,
    UNKNOWN_DATE,
    FileName,
    check_compression,
    encode_parquet,
    split_by_date,
)

__all__ = ["FileStore", "ParquetFileSink"]

log = logging.getLogger("sinks.files")

TMP_DIR: Final = "_tmp"
STAGED_DIR: Final = "_staged"
# The staged name of a route's undated file (dated ones are "dt=<date>.parquet").
_UNDATED: Final = "undated" + SUFFIX


class FileStore(Protocol):
    """The few file operations the sink needs. Errors are translated by the store into
    ``batcher.errors``, except FileExistsError / FileNotFoundError where documented."""

    kind: str  # "hdfs" / "local": the sink label in SinkUnavailable

    def is_dir(self, path: str) -> bool | None:
        """True for a directory, False for a file, None when nothing is there."""
        ...

    def list(self, path: str) -> list[str]:
        """Names in the directory ``path``; empty when it does not exist."""
        ...

    def makedirs(self, path: str) -> None: ...

    def write(self, path: str, data: bytes) -> None:
        """Create or replace the file ``path``, creating parent directories."""

    def read(self, path: str) -> bytes: ...

    def rename(self, src: str, dst: str) -> None:
        """Move; FileExistsError if ``dst`` exists, FileNotFoundError if ``src`` or the
        parent of ``dst`` does not."""

    def delete(self, path: str) -> None:
        """Remove recursively; nothing there is fine."""

    def close(self) -> None: ...


@dataclass
class _Listing:
    """Our names under a root, parsed: final files, staged and temporary directories."""

    final: list[FileName] = field(default_factory=list)
    staged: list[FileName] = field(default_factory=list)
    tmp: list[FileName] = field(default_factory=list)


def _next_offsets(names: Iterable[FileName], tps: set[TopicPartition]) -> dict[TopicPartition, int]:
    durable: dict[TopicPartition, int] = {}
    for name in names:
        tp = TopicPartition(name.topic, name.partition)
        if tp in tps:
            durable[tp] = max(durable.get(tp, 0), name.next_offset)
    return durable


class _Overtaken(Exception):
    """Storage already holds offsets this write was about to commit."""


class ParquetFileSink:
    """One route's Parquet directory; used from one worker thread."""

    def __init__(
        self,
        name: str,
        store: FileStore,
        root: str,
        compression: str = "zstd",
        compression_level: int | None = None,
    ) -> None:
        try:
            check_compression(compression, compression_level)
        except ValueError as exc:
            raise ConfigError(f"sink {name}: {exc} (set compression / compression_level)") from exc
        if not posixpath.isabs(root):
            raise ConfigError(f"sink {name}: root {root!r} must be an absolute path")
        self.name = name
        self._store = store
        self._root = posixpath.normpath(root)
        self._compression = compression
        self._compression_level = compression_level
        # Next offset durably stored per topic-partition, valid while this process owns it.
        self._durable: dict[TopicPartition, int] = {}

    @classmethod
    def hdfs(
        cls,
        url: str,
        user: str,
        root: str,
        compression: str = "zstd",
        compression_level: int | None = None,
        *,
        name: str = "hdfs",
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    ) -> ParquetFileSink:
        store = HdfsStore.connect(url, user, timeout=timeout)
        return cls(name, store, root, compression, compression_level)

    @classmethod
    def local(
        cls,
        path: str,
        compression: str = "zstd",
        compression_level: int | None = None,
        *,
        name: str = "local",
    ) -> ParquetFileSink:
        return cls(name, LocalStore(), path, compression, compression_level)

    def setup(self) -> None:
        with self._storage_errors():
            if self._store.is_dir(self._root) is False:
                raise ConfigError(f"sink {self.name}: root {self._root} is a file, not a directory")
            self._store.makedirs(self._path(TMP_DIR))
            self._store.makedirs(self._path(STAGED_DIR))

    def durable_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        with self._storage_errors():
            listing = self._list()
        return _next_offsets([*listing.final, *listing.staged], set(tps))

    def recover(self, tps: list[TopicPartition]) -> None:
        wanted = set(tps)
        for tp in wanted:
            self._durable.pop(tp, None)
        with self._storage_errors():
            listing = self._list()
            for name in listing.tmp:
                if TopicPartition(name.topic, name.partition) in wanted:
                    log.info("%s: deleting uncommitted %s", self.name, name.stem)
                    self._store.delete(self._path(TMP_DIR, name.stem))
            for name in listing.staged:
                if TopicPartition(name.topic, name.partition) in wanted:
                    log.info("%s: rolling forward committed %s", self.name, name.stem)
                    self._publish(name)
        durable = _next_offsets([*listing.final, *listing.staged], wanted)
        for tp in wanted:
            self._durable[tp] = durable.get(tp, 0)

    def write(self, batch: Batch, dead_letter: DeadLetterFn) -> int:
        started = time.perf_counter()
        tp = batch.tp
        try:
            if tp not in self._durable:
                self.recover([tp])
            todo = batch.from_offset(self._durable[tp])
            if todo.first_offset >= todo.next_offset:
                return 0
            name = FileName(tp.topic, tp.partition, todo.first_offset, todo.next_offset - 1)
            files = self._encode(todo)
            with self._storage_errors():
                staged_names = self._stage(name, files)
                self._durable[tp] = name.next_offset
                self._publish(name, staged_names)
        except _Overtaken:
            log.warning("%s: %s was stored meanwhile by another writer; retrying", self.name, tp)
            self._durable.pop(tp, None)
            return self.write(batch, dead_letter)
        except BaseException:
            # Unsure what storage holds now (a rename may have happened without an answer):
            # the next write recovers this partition from storage first.
            self._durable.pop(tp, None)
            raise
        size = sum(len(data) for _, data in files)
        log.info(
            "%s: wrote %s rows, offsets %s..%s of %s, %s files, %s bytes",
            self.name,
            todo.num_rows,
            name.first,
            name.last,
            tp,
            len(files),
            size,
            extra={
                "sink": self.name,
                "topic": tp.topic,
                "partition": tp.partition,
                "first_offset": name.first,
                "last_offset": name.last,
                "rows": todo.num_rows,
                "bytes": size,
                "files": len(files),
                "seconds": round(time.perf_counter() - started, 6),
            },
        )
        return todo.num_rows

    def close(self) -> None:
        self._store.close()

    # -- the commit protocol -------------------------------------------------------------

    def _encode(self, batch: Batch) -> list[tuple[str, bytes]]:
        """(staged file name, Parquet bytes) per event date of the batch."""
        try:
            # One chunk, on this worker's thread: Parquet pages cut at the buffer's small
            # poll-sized chunks would cost more than the copy.
            records = batch.records.combine_chunks()
            parts = split_by_date(records, batch.event_time_column)
            if not parts:  # every row of the range was dead-lettered: schema only
                parts = [(UNKNOWN_DATE, records)]
            return [
                (
                    _UNDATED if date is None else f"{PARTITION_KEY}={date}{SUFFIX}",
                    encode_parquet(rows, self._compression, self._compression_level),
                )
                for date, rows in parts
            ]
        except (KeyError, TypeError, pa.ArrowException) as exc:
            raise SchemaMismatch(f"sink {self.name}: {batch.tp}: {exc}") from exc

    def _stage(self, name: FileName, files: list[tuple[str, bytes]]) -> list[str] | None:
        """Steps 1 and 2: write into _tmp, then commit by renaming it to _staged. Returns
        the staged names, or None when an earlier attempt's staged dir stands instead."""
        tmp = self._path(TMP_DIR, name.stem)
        for staged_name, data in files:
            self._store.write(posixpath.join(tmp, staged_name), data)
        crash_point("after_hdfs_tmp_write")
        # Fence: a new owner of this partition (we were revoked and our flush outlived the
        # revocation budget) may have stored part of this range since we last looked.
        # Checked right before the commit rename, so the window is one round trip.
        held = self.durable_offsets([TopicPartition(name.topic, name.partition)])
        if held.get(TopicPartition(name.topic, name.partition), 0) > name.first:
            self._store.delete(tmp)
            raise _Overtaken(name.stem)
        try:
            self._move(tmp, self._path(STAGED_DIR, name.stem))
        except FileExistsError:
            # An earlier attempt at this very range committed (same offsets, same rows).
            self._store.delete(tmp)
            return None
        crash_point("after_hdfs_commit_rename")
        return [staged_name for staged_name, _ in files]

    def _publish(self, name: FileName, staged_names: list[str] | None = None) -> None:
        """Step 3: move each staged file to its final place, then drop the staged dir.
        ``staged_names``: what the staged dir holds, when known (saves listing it)."""
        staged = self._path(STAGED_DIR, name.stem)
        if staged_names is None:
            staged_names = sorted(self._store.list(staged))
        for staged_name in staged_names:
            final_dir = self._final_dir(staged_name)
            if final_dir is None:
                log.warning("%s: ignoring stray %s/%s", self.name, staged, staged_name)
                continue
            # Already there: moved before a crash, the same file.
            with contextlib.suppress(FileExistsError):
                self._move(
                    posixpath.join(staged, staged_name), posixpath.join(final_dir, name.filename)
                )
            crash_point("after_hdfs_final_rename")
        self._store.delete(staged)

    def _move(self, src: str, dst: str) -> None:
        """Rename, making the destination's directory when it is missing."""
        try:
            self._store.rename(src, dst)
        except FileNotFoundError:
            self._store.makedirs(posixpath.dirname(dst))
            self._store.rename(src, dst)

    def _final_dir(self, staged_name: str) -> str | None:
        if staged_name == _UNDATED:
            return self._root
        if staged_name.startswith(PARTITION_KEY + "=") and staged_name.endswith(SUFFIX):
            return self._path(staged_name.removesuffix(SUFFIX))
        return None

    # -- listing -------------------------------------------------------------------------

    def _list(self) -> _Listing:
        listing = _Listing()
        for entry in self._store.list(self._root):
            if entry.startswith(PARTITION_KEY + "="):
                files = self._store.list(self._path(entry))
                listing.final.extend(n for f in files if (n := FileName.from_filename(f)))
            elif name := FileName.from_filename(entry):
                listing.final.append(name)
        for entry in self._store.list(self._path(STAGED_DIR)):
            if name := FileName.from_stem(entry):
                listing.staged.append(name)
        for entry in self._store.list(self._path(TMP_DIR)):
            if name := FileName.from_stem(entry):
                listing.tmp.append(name)
        return listing

    def _path(self, *parts: str) -> str:
        return posixpath.join(self._root, *parts)

    @contextlib.contextmanager
    def _storage_errors(self) -> Iterator[None]:
        """A file that appeared or vanished under the sink (another writer, a human): retry
        after recovery. Everything else was translated by the store already."""
        try:
            yield
        except (FileExistsError, FileNotFoundError) as exc:
            raise SinkUnavailable(self._store.kind, f"{self._root} changed: {exc}") from exc
