"""Start detached server processes, record their PIDs, and stop exactly those.

A PID file holds the PID and the process's start time (from /proc), so a PID that the
kernel has since reused for another process is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime) counts after the parenthesised command name, which may hold spaces.
    return stat.rsplit(")", 1)[1].split()[19]


# Popen objects of the servers started by this process: kept so that a long-lived caller
# (the test suite restarting a server) never garbage-collects a running child's handle.
_SPAWNED: list[subprocess.Popen[bytes]] = []


def spawn(name: str, argv: Sequence[str], pid_dir: Path, log: Path, cwd: Path) -> int:
    """Start ``argv`` in its own session with output to ``log``; record its PID as ``name``."""
    pid_dir.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _SPAWNED.append(proc)
    (pid_dir / f"{name}.pid").write_text(f"{proc.pid} {_start_time(proc.pid)}\n")
    return proc.pid


def recorded_pid(name: str, pid_dir: Path) -> int | None:
    """The PID recorded for ``name`` if that very process is still alive, else None."""
    path = pid_dir / f"{name}.pid"
    try:
        pid_s, started = path.read_text().split()
    except (OSError, ValueError):
        return None
    pid = int(pid_s)
    if _start_time(pid) != started:
        return None
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None
    return None if state == "Z" else pid


def stop(name: str, pid_dir: Path, timeout: float = 30.0) -> bool:
    """SIGTERM the recorded process group, SIGKILL it after ``timeout``. True if one was running."""
    pid = recorded_pid(name, pid_dir)
    (pid_dir / f"{name}.pid").unlink(missing_ok=True)
    if pid is None:
        return False
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _start_time(pid) is None:
            break
        _reap(pid)
        time.sleep(0.1)
    else:
        _signal_group(pid, signal.SIGKILL)
    _reap(pid)
    return True


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the whole group when ``pid`` leads one (the JVMs we spawn), else just ``pid``."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
