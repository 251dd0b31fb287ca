"""A measured subprocess (the daemon or a peer): start it, wait until a condition holds or a
time budget runs out, sample its CPU and peak RSS while it still runs, then SIGTERM it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from bench.common import REPO, ServerCpu, peak_rss_bytes, proc_cpu_s

POLL_S = 0.2


@dataclass
class Outcome:
    """What one watched run did."""

    done: bool  # the condition held before the budget ran out
    seconds: float  # start of the process -> condition (or -> budget end)
    cpu_s: float | None  # the process's utime + stime just before SIGTERM
    peak_rss: int | None  # VmHWM just before SIGTERM
    servers: dict[str, float]  # server CPU deltas over the run
    exited: int | None  # exit status if it died on its own before the end
    shutdown_s: float  # SIGTERM -> exit
    progress: int  # what the condition last reported (rows or offsets)


class Child:
    def __init__(self, argv: Sequence[str], env: dict[str, str], log_path: Path) -> None:
        self.argv = list(argv)
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    @classmethod
    def python(cls, module_args: Sequence[str], env: dict[str, str], log_path: Path) -> Child:
        return cls([sys.executable, "-m", *module_args], env, log_path)

    def start(self) -> None:
        self.started = time.perf_counter()
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                self.argv, cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 90) -> tuple[int | None, float]:
        """SIGTERM, wait; SIGKILL after ``timeout``. Returns (exit status, seconds taken)."""
        assert self.proc is not None
        t0 = time.perf_counter()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        return self.proc.returncode, time.perf_counter() - t0

    def watch(
        self,
        progress: Callable[[], int],
        target: int,
        budget_s: float,
        servers: ServerCpu,
        exclude: Callable[[], set[int]] | None = None,
        tick: Callable[[float], None] | None = None,
        interval: Callable[[], float] | None = None,
        final: Callable[[], None] | None = None,
    ) -> Outcome:
        """Start the process and poll ``progress()`` until it reaches ``target`` or
        ``budget_s`` passes; sample, then stop the process.

        ``exclude``: Postgres backends not to count (a probe's own connection);
        ``tick(elapsed)``: called every poll (e.g. to scrape metrics);
        ``interval()``: seconds to the next poll (default POLL_S);
        ``final()``: called after the samples, before SIGTERM."""
        before = servers.snapshot(exclude() if exclude else None)
        self.start()
        last, exited = 0, None
        deadline = self.started + budget_s
        while True:
            time.sleep(interval() if interval else POLL_S)
            if self.proc is not None and self.proc.poll() is not None:
                exited = self.proc.returncode
            with suppress(Exception):  # not ready yet (no table, no group)
                last = progress()
            now = time.perf_counter()
            if tick is not None:
                tick(now - self.started)
            if last >= target or exited is not None or now >= deadline:
                break
        seconds = now - self.started
        cpu = proc_cpu_s(self.pid)
        rss = peak_rss_bytes(self.pid)
        after = servers.snapshot(exclude() if exclude else None)
        if final is not None and self.alive():
            final()
        status, shutdown_s = self.stop()
        return Outcome(
            done=last >= target,
            seconds=seconds,
            cpu_s=cpu,
            peak_rss=rss,
            servers=ServerCpu.delta(before, after),
            exited=exited if exited is not None else (None if status in (0, -15) else status),
            shutdown_s=shutdown_s,
            progress=last,
        )
