"""Where the daemon's time goes: py-spy attached to one extra Postgres + HDFS run.

Not one of the measured runs (sampling costs a little CPU on a 2-core machine); it is
chosen with ``--only profile`` or added with ``--profile``. py-spy (``pip install py-spy``
into the venv; not a dependency of the bench group) samples every thread at 100 Hz without
pausing the process, skipping idle threads (sleeping, waiting on a socket or a lock). The
collapsed stacks are summarised by thread, by self time per function and by inclusive time
per function, and kept in full next to the results.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import REPO, Result, ServerCpu, Stack, log
from bench.endtoend import CommitProbe, DaemonRun, MetricsScraper, Settings, _cleanup
from bench.preload import Preloaded

RATE_HZ = 100
TOP = 15


def py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def summarise(collapsed: Path, top: int = TOP) -> dict[str, Any]:
    """Per-thread share, top self frames and top inclusive frames of py-spy's raw output."""
    threads: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = frames[0] if frames[0].startswith(("thread", "process")) else "?"
        body = frames[1:] if thread != "?" else frames
        total += count
        threads[_thread_name(thread, body)] += count
        if body:
            self_time[_short(body[-1])] += count
        for frame in {_short(f) for f in body}:
            if not frame.startswith(_WRAPPERS):
                inclusive[frame] += count

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return (
            [(k, round(100 * v / total, 1)) for k, v in counter.most_common(top)] if total else []
        )

    return {
        "samples": total,
        "threads_pct": share(threads),
        "self_pct": share(self_time),
        "inclusive_pct": share(inclusive),
    }


# Frames every sample of a thread passes through: they say nothing about where time goes.
_WRAPPERS = (
    "_run_module_as_main ",
    "_run_code ",
    "<module> (batcher/cli.py)",
    "main (batcher/cli.py)",
    "cmd_run (batcher/cli.py)",
    "Thread._bootstrap",
    "Thread.run (threading.py)",
    "Batcher.run (batcher/daemon.py)",
)
_FRAME = re.compile(r"^(?P<func>[^ ]+) \((?P<file>[^:)]+)(?::(?P<line>\d+))?\)$")


def _short(frame: str) -> str:
    """``func (path/to/file.py:12)`` -> ``func (package/file.py)``."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "/work/main/", "python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match['func']} ({path})"


def _thread_name(thread: str, body: list[str]) -> str:
    """The thread's own name (sink-postgres, kafka-io-..., http), or for the main thread
    whether it was in the consumer loop or still starting up."""
    name = thread.partition(": ")[2].strip() or thread
    if name == "MainThread":
        in_loop = any("batcher/daemon.py" in f for f in body)
        return "main: consumer loop" if in_loop else "main: start-up and other"
    if re.fullmatch(r"Thread-\d+.*", name) and any(
        "http/server" in f or "socketserver" in f for f in body
    ):
        return "http"
    return name


def run(
    stack: Stack,
    data: Preloaded,
    servers: ServerCpu,
    run_id: str,
    settings: Settings,
    out_stem: Path,
    backend: str = "kafka-python",
) -> dict[str, Any]:
    """Run the both-sinks daemon under py-spy; write ``<stem>-pyspy.txt`` (collapsed stacks)
    and return the summary (or why it did not run)."""
    exe = py_spy()
    if exe is None:
        return {"skipped": "py-spy is not installed (pip install py-spy into .venv)"}
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{run_id}-profile-"))
    daemon = DaemonRun("profile", stack, data.topic, run_id, True, True, settings, workdir, backend)
    probe = CommitProbe(stack, data.topic, daemon.group)
    scraper = MetricsScraper(daemon.port, probe.total)
    child = daemon.child()
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    raw = out_stem.with_name(out_stem.name + "-pyspy.txt")
    spy: subprocess.Popen[bytes] | None = None

    def attach(elapsed: float) -> None:
        nonlocal spy
        if spy is None and child.alive():
            spy = subprocess.Popen(
                [
                    exe,
                    "record",
                    "--pid",
                    str(child.pid),
                    "--rate",
                    str(RATE_HZ),
                    "--format",
                    "raw",
                    "--threads",
                    "--nonblocking",
                    "--output",
                    str(raw),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        scraper.tick(elapsed)

    log(f"profile: Postgres + HDFS ({backend}) under py-spy (not measured)")
    try:
        outcome = child.watch(
            probe.committed,
            probe.total,
            settings.budget_s,
            servers,
            tick=attach,
            final=scraper.final,
        )
    finally:
        probe.close()
        if child.alive():
            child.stop()
    err = b""
    if spy is not None:
        try:
            _, err = spy.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            spy.kill()
    _cleanup(daemon)
    if not raw.exists():
        return {"skipped": f"py-spy wrote nothing: {err.decode(errors='replace')[-300:]}"}
    result = Result("profile", "info", "profile", outcome.progress, outcome.seconds, 0)
    summary = summarise(raw)
    summary.update(
        {
            "collapsed_stacks": str(raw.relative_to(REPO) if raw.is_relative_to(REPO) else raw),
            "seconds": round(result.seconds, 2),
            "events_per_s_under_profiler": round(result.events_per_s),
            "daemon_cpu_s": outcome.cpu_s,
            "all_records_consumed_s": scraper.all_consumed_s,
            "flushes": scraper.flush_totals(),
        }
    )
    return summary
