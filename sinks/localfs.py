"""LocalStore: the ``FileStore`` of ``sinks.files`` on a local (POSIX) filesystem.

Paths are absolute local paths. A write is fsynced with its directory, and a rename fsyncs both
parent directories, so after a power cut a committed rename never points at a file whose bytes
were lost. ``os.rename`` replaces an existing file (and an empty directory) silently, so
``rename`` checks that the destination is free first: check-then-rename is not atomic against
another process, which is fine because one worker owns a topic-partition at a time.

OS errors are translated here: permission and not-a-directory problems are ``FatalError``;
anything else (disk full, I/O error) is ``SinkUnavailable("local", ...)``. ``FileExistsError``
and ``FileNotFoundError`` pass through: the ``FileStore`` contract gives them meaning.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator

from batcher.errors import FatalError, SinkUnavailable

__all__ = ["LocalStore"]


@contextlib.contextmanager
def _os_errors(op: str, path: str) -> Iterator[None]:
    try:
        yield
    except (FileExistsError, FileNotFoundError):
        raise
    except (PermissionError, NotADirectoryError, IsADirectoryError) as exc:
        raise FatalError(f"local: {op} {path}: {exc}") from exc
    except OSError as exc:
        raise SinkUnavailable("local", f"{op} {path}: {exc}") from exc


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStore:
    """Files under a local directory tree."""

    kind = "local"

    def is_dir(self, path: str) -> bool | None:
        """True for a directory, False for anything else, None when nothing is there."""
        with _os_errors("stat", path):
            if not os.path.lexists(path):
                return None
            return os.path.isdir(path)

    def list(self, path: str) -> list[str]:
        """Names in the directory ``path``; empty when it does not exist."""
        with _os_errors("list", path):
            try:
                return sorted(os.listdir(path))
            except FileNotFoundError:
                return []

    def makedirs(self, path: str) -> None:
        with _os_errors("mkdirs", path):
            os.makedirs(path, exist_ok=True)

    def write(self, path: str, data: bytes) -> None:
        """Create or replace the file ``path`` (parent directories are created)."""
        with _os_errors("write", path):
            parent = os.path.dirname(path)
            os.makedirs(parent, exist_ok=True)
            with open(path, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            _fsync_dir(parent)

    def read(self, path: str) -> bytes:
        with _os_errors("read", path), open(path, "rb") as src:
            return src.read()

    def rename(self, src: str, dst: str) -> None:
        """Move ``src`` to ``dst``; FileExistsError if ``dst`` exists, FileNotFoundError if
        ``src`` or the parent of ``dst`` does not."""
        with _os_errors("rename", f"{src} -> {dst}"):
            if os.path.lexists(dst):
                raise FileExistsError(f"rename destination {dst} already exists")
            os.rename(src, dst)
            _fsync_dir(os.path.dirname(dst))
            _fsync_dir(os.path.dirname(src))

    def delete(self, path: str) -> None:
        """Remove ``path`` and everything under it; nothing there is fine."""
        with _os_errors("delete", path):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)

    def close(self) -> None:
        """Nothing to release."""
