"""ParquetFileSink over the real HDFS of the local stack (WebHDFS), and HdfsStore's error seam.

``TestHdfs`` runs the scenarios of ``FileSinkContract`` in a fresh HDFS directory per test
(``hdfs_dir``). The error translation is checked without a server: against a port nobody
listens on, and against the HdfsError values WebHDFS answers with.
"""

from __future__ import annotations

import posixpath
import socket
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest
from hdfs.util import HdfsError

from batcher.errors import ConfigError, FatalError, SinkUnavailable
from sinks.files import ParquetFileSink
from sinks.hdfs import HdfsStore, _hdfs_errors
from tests.sinks.test_files_local import (
    TP,
    FileSinkContract,
    copy_tree,
    make_batch,
    no_dead_letters,
)


@pytest.mark.integration
class TestHdfs(FileSinkContract):
    @pytest.fixture
    def store(self, hdfs_client: Any) -> HdfsStore:
        return HdfsStore(hdfs_client)

    @pytest.fixture
    def root(self, hdfs_dir: str) -> str:
        return posixpath.join(hdfs_dir, "data", "events")

    def test_hdfs_constructor_round_trip(
        self, stack_env: dict[str, str], store: HdfsStore, root: str, tmp_path: Path
    ) -> None:
        sink = ParquetFileSink.hdfs(stack_env["HDFS_URL"], stack_env["HDFS_USER"], root)
        sink.setup()
        assert sink.write(make_batch([0, 1, 2]), no_dead_letters) == 3
        assert sink.durable_offsets([TP]) == {TP: 3}
        sink.close()
        copy_tree(store, root, tmp_path)
        table = ds.dataset(tmp_path, format="parquet", partitioning="hive").to_table()
        assert sorted(table["event_id"].to_pylist()) == ["e0", "e1", "e2"]

    def test_rename_never_moves_into_an_existing_directory(
        self, store: HdfsStore, root: str
    ) -> None:
        # Plain WebHDFS RENAME would move src *into* dst; the commit point must refuse.
        store.makedirs(posixpath.join(root, "src"))
        store.makedirs(posixpath.join(root, "dst"))
        with pytest.raises(FileExistsError, match="already exists"):
            store.rename(posixpath.join(root, "src"), posixpath.join(root, "dst"))
        assert store.list(posixpath.join(root, "dst")) == []
        with pytest.raises(FileNotFoundError, match="parent"):
            store.rename(posixpath.join(root, "src"), posixpath.join(root, "no/such/dir"))

    def test_listing_a_file_is_fatal(self, store: HdfsStore, root: str) -> None:
        store.write(posixpath.join(root, "one"), b"1")
        assert store.list(root) == ["one"]  # one entry: LISTSTATUS alone tells dir from file
        with pytest.raises(FatalError, match="not a directory"):
            store.list(posixpath.join(root, "one"))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_namenode_that_is_down_is_unavailable() -> None:
    sink = ParquetFileSink.hdfs(f"http://127.0.0.1:{closed_port()}", "root", "/data/events")
    with pytest.raises(SinkUnavailable, match="hdfs unavailable: status /data/events"):
        sink.setup()
    with pytest.raises(SinkUnavailable, match="ConnectionError"):
        sink.durable_offsets([TP])
    with pytest.raises(SinkUnavailable, match="Connection refused"):
        sink.write(make_batch([0]), no_dead_letters)
    sink.close()


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("127.0.0.1:9870", id="no-scheme"),
        pytest.param("hdfs://127.0.0.1:8020", id="rpc-not-webhdfs"),
        pytest.param("http://", id="no-host"),
    ],
)
def test_a_bad_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="bad WebHDFS URL"):
        ParquetFileSink.hdfs(url, "root", "/data/events")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        pytest.param(
            HdfsError(
                "Cannot create file/x. Name node is in safe mode.", exception="SafeModeException"
            ),
            SinkUnavailable,
            id="safe-mode",
        ),
        pytest.param(
            HdfsError(
                "File /x could only be written to 0 of the 1 minReplication nodes. There are 0 "
                "datanode(s) running and 0 node(s) are excluded in this operation.",
                exception="RemoteException",
            ),
            SinkUnavailable,
            id="no-datanode",
        ),
        pytest.param(
            HdfsError(b"<html>502 Bad Gateway</html>"), SinkUnavailable, id="5xx-not-json"
        ),
        pytest.param(
            HdfsError("Operation category WRITE is not supported", exception="StandbyException"),
            SinkUnavailable,
            id="standby",
        ),
        pytest.param(
            HdfsError("The DiskSpace quota is exceeded", exception="DSQuotaExceededException"),
            SinkUnavailable,
            id="quota",
        ),
        pytest.param(
            HdfsError(
                "Permission denied: user=etl, access=WRITE, inode=/data",
                exception="AccessControlException",
            ),
            FatalError,
            id="permission",
        ),
        pytest.param(
            HdfsError("Authentication failure. Check your credentials."),
            FatalError,
            id="authentication",
        ),
        pytest.param(
            HdfsError(
                "/x (is not a directory)\n\tat org.apache...",
                exception="ParentNotDirectoryException",
            ),
            FatalError,
            id="parent-is-a-file",
        ),
        pytest.param(
            HdfsError(
                "rename destination /x already exists", exception="FileAlreadyExistsException"
            ),
            FileExistsError,
            id="exists",
        ),
        pytest.param(
            HdfsError("File /x does not exist.", exception="FileNotFoundException"),
            FileNotFoundError,
            id="missing",
        ),
    ],
)
def test_hdfs_errors_are_translated(error: HdfsError, expected: type[Exception]) -> None:
    with pytest.raises(expected) as caught, _hdfs_errors("write", "/x"):
        raise error
    assert "\n" not in str(caught.value)  # the first line, not a Java stack trace
    assert caught.value.__cause__ is error
