"""``python -m bench [--n N] [--only x,y] [--profile]``: the throughput benchmark.

Preloads N events (default 1,000,000 or $BENCH_N) into a fresh 6-partition topic, then
measures, in this order: the raw stage limits (kafka, copy, parquet), the batcher end to end
(both, pg, hdfs) and the peers (naive, quix); optionally a py-spy profile of the daemon
(profile). Writes bench/results/<stamp>.json|.md|.png and latest.md|.png.
Names for --only: the runs above, or the groups raw, e2e, peers.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import endtoend, peers, raw, report
from bench import profile as profiler
from bench.common import PARTITIONS, PG_SCHEMA, REPO, RESULTS, Result, ServerCpu, Stack, log
from bench.preload import delete_topics, preload

GROUPS = {
    "raw": {"kafka", "kafka_confluent", "copy", "parquet"},
    "e2e": {"both", "pg", "hdfs"},
    "peers": {"naive", "quix"},
}
DEFAULT = GROUPS["raw"] | GROUPS["e2e"] | GROUPS["peers"]
KNOWN = DEFAULT | {"profile"}


def parse_only(text: str | None, profile: bool) -> set[str]:
    if not text:
        chosen = set(DEFAULT)
    else:
        chosen = set()
        for name in (part.strip() for part in text.split(",") if part.strip()):
            if name in GROUPS:
                chosen |= GROUPS[name]
            elif name in KNOWN:
                chosen.add(name)
            else:
                known = ", ".join(sorted(KNOWN | set(GROUPS)))
                raise SystemExit(f"bench: unknown run {name!r}; expected some of: {known}")
    return chosen | ({"profile"} if profile else set())


def settle(stack: Stack) -> None:
    """Between runs: write out the previous run's dirty pages so it does not bill the next
    one (CHECKPOINT needs superuser or pg_checkpoint; skipped without), and let the broker's
    and the JVMs' background work calm down."""
    with suppress(Exception), stack.connect() as conn:
        conn.execute("CHECKPOINT")
    time.sleep(1.0)


def _git() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def _cpu_model() -> str:
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in (
        "kafka-python",
        "psycopg",
        "pyarrow",
        "msgspec",
        "quixstreams",
        "confluent-kafka",
        "py-spy",
    ):
        with suppress(importlib.metadata.PackageNotFoundError):
            out[dist] = importlib.metadata.version(dist)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--n",
        type=int,
        default=int(os.environ.get("BENCH_N", 1_000_000)),
        help="events to preload (default $BENCH_N or 1,000,000)",
    )
    parser.add_argument("--only", help="comma-separated runs or groups (default: all but profile)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile the daemon with py-spy in an extra, unmeasured run",
    )
    parser.add_argument(
        "--profile-backend",
        choices=("kafka-python", "confluent"),
        default="kafka-python",
        help="kafka.backend of the profiled run (default kafka-python)",
    )
    parser.add_argument(
        "--max-age", type=float, default=2.0, help="cap on the daemon's flush max_age_s (default 2)"
    )
    parser.add_argument(
        "--e2e-budget",
        type=float,
        default=300.0,
        help="seconds one daemon run may take before it is cut off",
    )
    parser.add_argument(
        "--peer-budget",
        type=float,
        default=120.0,
        help="seconds a peer may run; slower ones are extrapolated",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    parser.add_argument(
        "--keep", action="store_true", help="keep the topic, tables and HDFS directories"
    )
    args = parser.parse_args(argv)
    only = parse_only(args.only, args.profile)
    if args.n <= 0:
        raise SystemExit("bench: --n must be positive")

    started = time.perf_counter()
    load_before = os.getloadavg()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_id = stamp.lower()
    stack = Stack.load()
    servers = ServerCpu()
    if not servers.postmasters:
        log("warning: no PostgreSQL process of .stack/postgres found; PG CPU will read 0")
    with stack.connect() as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {PG_SCHEMA}")
    topic = f"bench_{run_id}"
    settings = endtoend.Settings.from_local_toml(args.max_age, args.e2e_budget)

    log(f"preloading {args.n:,} events into {topic} ({PARTITIONS} partitions)")
    data = preload(stack, topic, args.n)
    log(f"  {data.value_bytes / 1e6:.0f} MB in {data.seconds:.1f} s")
    results: list[Result] = []
    profile: dict[str, Any] | None = None
    try:
        if only & GROUPS["raw"]:
            settle(stack)
            results += raw.run(stack, data, servers, run_id, only, PARTITIONS)
        data.values = []  # the daemons and peers read Kafka; free the memory
        for name in ("both", "pg", "hdfs"):
            if name in only:
                settle(stack)
                results += endtoend.run(stack, data, servers, run_id, {name}, settings, args.keep)
        for name in ("naive", "quix"):
            if name in only:
                settle(stack)
                results += peers.run(
                    stack, data, servers, run_id, {name}, args.peer_budget, args.keep
                )
        if "profile" in only:
            settle(stack)
            t0 = time.perf_counter()
            profile = profiler.run(
                stack, data, servers, run_id, settings, args.out / stamp, args.profile_backend
            )
            profile["wall_s"] = round(time.perf_counter() - t0, 1)
    finally:
        if not args.keep:
            delete_topics(stack, [topic])

    meta: dict[str, Any] = {
        "stamp": stamp,
        "events": data.events,
        "value_bytes": data.value_bytes,
        "value_mb": data.value_bytes / 1e6,
        "mean_event_bytes": data.mean_bytes,
        "partitions": PARTITIONS,
        "topic": topic,
        "runs": sorted(only),
        "preload_s": round(data.seconds, 2),
        "wall_s": round(time.perf_counter() - started, 1),
        "daemon": settings.as_dict(),
        "peer_budget_s": args.peer_budget,
        "git": _git(),
        "versions": _versions(),
        "machine": {
            "cpus": os.cpu_count() or 1,
            "cpu_model": _cpu_model(),
            "mem_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        },
    }
    paths = report.write(args.out, meta, results, profile)
    log(f"done in {meta['wall_s'] / 60:.1f} min: {paths['md']}")
    sys.stdout.write(paths["md"].read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
