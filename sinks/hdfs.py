"""HdfsStore: the ``FileStore`` of ``sinks.files`` over WebHDFS (``hdfs.InsecureClient``).

Every WebHDFS and requests error is translated here, at one seam (``_hdfs_errors``):

- connection refused/reset, timeouts, safe mode, "could only be written to 0 of the 1
  minReplication nodes" (no live DataNode), standby or retriable NameNode, a 5xx without a
  JSON body, and any other HdfsError -> ``SinkUnavailable("hdfs", ...)``: wait and retry;
- permissions (``AccessControlException``), authentication, a malformed URL, a path that is a
  file where a directory belongs, an invalid path -> ``FatalError``: a human must act;
- ``FileAlreadyExistsException`` / ``FileNotFoundException`` -> the builtin
  ``FileExistsError`` / ``FileNotFoundError``, which the ``FileStore`` contract gives meaning to.

Two WebHDFS details shape this module. ``RENAME`` without options moves the source *into* the
destination when that is an existing directory (``mv`` semantics) and answers ``false`` when the
destination is a file; with ``renameoptions=NONE`` the NameNode runs ``rename2`` instead, which
fails atomically with ``FileAlreadyExistsException`` if the destination exists: the no-replace
rename the commit protocol needs. ``hdfs`` 2.7's ``Client.rename`` cannot pass it, so ``rename``
calls the generated ``_rename`` endpoint (stable across hdfs 2.x, pinned in pyproject). And
``Client.list`` sends an extra ``GETFILESTATUS`` for every directory with exactly one entry (an
HttpFS workaround); ``list`` reads ``LISTSTATUS`` directly, since the sink lists one dt dir
after another and most of them hold few files.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Final
from urllib.parse import urlsplit

import requests
from hdfs import InsecureClient
from hdfs.util import HdfsError

from batcher.errors import ConfigError, FatalError, SinkUnavailable

__all__ = ["HdfsStore"]

# (connect, read) seconds. requests waits forever by default, and a NameNode that hangs must
# surface as SinkUnavailable, not a stuck worker. Reads are long: a large CREATE streams the
# whole file to a DataNode before it answers.
DEFAULT_TIMEOUT: Final = (10.0, 300.0)

# Remote exception classes that no retry will fix.
_FATAL_EXCEPTIONS: Final = frozenset(
    {
        "AccessControlException",
        "AuthorizationException",
        "SecurityException",
        "InvalidPathException",
        "IllegalArgumentException",
        "UnsupportedOperationException",
        "ParentNotDirectoryException",
    }
)
# Messages (without a remote exception class) that no retry will fix.
_FATAL_MESSAGES: Final = ("Authentication failure", "is not a directory", "Permission denied")


def _first_line(text: object) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    lines = str(text).strip().splitlines()
    return lines[0][:300] if lines else "no message"


@contextlib.contextmanager
def _hdfs_errors(op: str, path: str) -> Iterator[None]:
    """Translate whatever WebHDFS or requests raises during ``op`` on ``path``."""
    try:
        yield
    except HdfsError as exc:
        remote = exc.exception or ""
        detail = f"{op} {path}: {_first_line(exc.message)}"
        if remote == "FileAlreadyExistsException":
            raise FileExistsError(detail) from exc
        if remote == "FileNotFoundException":
            raise FileNotFoundError(detail) from exc
        if remote in _FATAL_EXCEPTIONS or any(m in detail for m in _FATAL_MESSAGES):
            raise FatalError(f"hdfs: {detail} ({remote or 'no remote exception'})") from exc
        # Safe mode, no DataNode, standby/retriable NameNode, quota, a 5xx: wait it out.
        raise SinkUnavailable("hdfs", detail) from exc
    except (
        requests.exceptions.InvalidURL,
        requests.exceptions.InvalidSchema,
        requests.exceptions.MissingSchema,
    ) as exc:
        raise ConfigError(f"hdfs: bad WebHDFS URL ({exc}); expected http://namenode:9870") from exc
    except requests.exceptions.RequestException as exc:
        # ConnectionError (refused, reset, DataNode unreachable), Timeout, broken chunking.
        raise SinkUnavailable("hdfs", f"{op} {path}: {type(exc).__name__}: {exc}") from exc


class HdfsStore:
    """Files on HDFS through WebHDFS; paths are absolute HDFS paths. One per sink."""

    kind = "hdfs"

    def __init__(self, client: Any, session: requests.Session | None = None) -> None:
        self._client = client
        self._session = session  # closed with the store when the store made it

    @classmethod
    def connect(
        cls, url: str, user: str, timeout: tuple[float, float] = DEFAULT_TIMEOUT
    ) -> HdfsStore:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"hdfs: bad WebHDFS URL {url!r}; expected http://namenode:9870")
        # Its own requests session: a sink runs on one worker thread, and a Session is not
        # meant to be shared across threads.
        session = requests.Session()
        return cls(InsecureClient(url, user=user, timeout=timeout, session=session), session)

    def is_dir(self, path: str) -> bool | None:
        """True for a directory, False for a file, None when nothing is there."""
        with _hdfs_errors("status", path):
            status = self._client.status(path, strict=False)
        return None if status is None else status["type"] == "DIRECTORY"

    def list(self, path: str) -> list[str]:
        """Names in the directory ``path``; empty when it does not exist."""
        try:
            with _hdfs_errors("list", path):
                response = self._client._list_status(path)
        except FileNotFoundError:
            return []
        statuses: list[dict[str, Any]] = response.json()["FileStatuses"]["FileStatus"]
        if len(statuses) == 1 and not statuses[0]["pathSuffix"]:
            raise FatalError(f"hdfs: list {path}: is a file, not a directory")
        return [str(s["pathSuffix"]) for s in statuses]

    def makedirs(self, path: str) -> None:
        with _hdfs_errors("mkdirs", path):
            self._client.makedirs(path)

    def write(self, path: str, data: bytes) -> None:
        """Create or replace the file ``path`` (parent directories are created)."""
        with _hdfs_errors("write", path):
            self._client.write(path, data=data, overwrite=True)

    def read(self, path: str) -> bytes:
        with _hdfs_errors("read", path), self._client.read(path) as reader:
            return bytes(reader.read())

    def rename(self, src: str, dst: str) -> None:
        """Move ``src`` to ``dst``, atomically; FileExistsError if ``dst`` exists,
        FileNotFoundError if ``src`` or the parent of ``dst`` does not."""
        with _hdfs_errors("rename", f"{src} -> {dst}"):
            destination = self._client.resolve(dst)
            self._client._rename(src, destination=destination, renameoptions="NONE")

    def delete(self, path: str) -> None:
        """Remove ``path`` and everything under it; nothing there is fine."""
        with _hdfs_errors("delete", path):
            self._client.delete(path, recursive=True)

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
