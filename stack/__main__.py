"""``python -m stack up|down|clean|status|install|env``: the local Kafka, PostgreSQL and HDFS.

``up`` starts what is not running and waits, under a deadline, for a real round trip through
each server; run twice, the second run changes nothing and says so. ``down`` stops exactly the
processes recorded in ``.stack/pids``. Connection settings go to ``.stack/env``.
"""

from __future__ import annotations

import argparse
import getpass
import os
import shutil
import sys
import time

from stack import hdfs, kafka, postgres, process
from stack.fetch import ensure_jars
from stack.settings import HADOOP_VERSION, KAFKA_VERSION, StackSettings

READY_TIMEOUT_S = 180.0  # cold JVM starts on a busy 2-core machine take ~30 s; leave room
SERVICES = ("kafka", "namenode", "datanode", "postgres")


def hdfs_user() -> str:
    return os.environ.get("STACK_HDFS_USER") or getpass.getuser()


def write_env(s: StackSettings) -> str:
    p = s.ports
    lines = [
        "# Written by `make stack-up`: connection settings of the local stack (shell-sourceable).",
        f"export KAFKA_BOOTSTRAP={s.host}:{p.kafka}",
        f"export PGHOST={s.host}",
        f"export PGPORT={p.postgres}",
        f"export PGUSER={postgres.USER}",
        f"export PGDATABASE={postgres.DATABASE}",
        f"export PGPASSWORD={postgres.password(s)}",
        f"export HDFS_URL=http://{s.host}:{p.namenode_http}",
        f"export HDFS_USER={hdfs_user()}",
        f"export HDFS_RPC=hdfs://{s.host}:{p.namenode_rpc}",
    ]
    text = "\n".join(lines) + "\n"
    s.paths.env_file.parent.mkdir(parents=True, exist_ok=True)
    s.paths.env_file.touch(mode=0o600)
    s.paths.env_file.write_text(text)
    return text


def cmd_install(s: StackSettings) -> None:
    postgres.ensure_installed()
    ensure_jars(s.paths, "kafka", KAFKA_VERSION, s.paths.logs / "fetch-kafka.log")
    ensure_jars(s.paths, "hadoop", HADOOP_VERSION, s.paths.logs / "fetch-hadoop.log")
    print("stack: Kafka and Hadoop jars and PostgreSQL are installed")


def cmd_up(s: StackSettings) -> None:
    t0 = time.monotonic()
    s.paths.root.mkdir(parents=True, exist_ok=True)  # a fresh clone has no .stack/ yet
    started = {
        "postgres": postgres.start(s),
        "kafka": kafka.start(s),
        "hdfs": hdfs.start(s),
    }
    deadline = time.monotonic() + READY_TIMEOUT_S
    postgres.wait_ready(s, deadline)
    kafka.wait_ready(s, deadline)
    hdfs.wait_ready(s, deadline, hdfs_user())
    env = write_env(s)
    if any(started.values()):
        names = ", ".join(k for k, v in started.items() if v)
        print(f"stack: started {names}; all ready in {time.monotonic() - t0:.1f}s")
    else:
        print("stack: already up, nothing to do (all three answered a round trip)")
    print(f"stack: settings in {s.paths.env_file}:")
    print("".join(line + "\n" for line in env.splitlines() if "PGPASSWORD" not in line), end="")
    print("export PGPASSWORD=<in .stack/env>")


def cmd_down(s: StackSettings) -> None:
    stopped = [name for name, fn in (("hdfs", hdfs.stop), ("kafka", kafka.stop)) if fn(s)]
    if postgres.stop(s):
        stopped.append("postgres")
    left = [n for n in SERVICES if process.recorded_pid(n, s.paths.pids) is not None]
    if left:
        raise SystemExit(f"stack: still running after stop: {', '.join(left)}")
    print(f"stack: stopped {', '.join(stopped)}" if stopped else "stack: nothing was running")


def cmd_clean(s: StackSettings) -> None:
    cmd_down(s)
    postgres.clean(s)
    shutil.rmtree(s.paths.root, ignore_errors=True)
    print(f"stack: removed {s.paths.root} (jar cache kept in {s.paths.cache})")


def cmd_status(s: StackSettings) -> None:
    for name in SERVICES:
        pid = process.recorded_pid(name, s.paths.pids)
        print(f"{name:9} {'up, pid ' + str(pid) if pid else 'down'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack", description=__doc__)
    parser.add_argument("command", choices=["install", "up", "down", "clean", "status", "env"])
    args = parser.parse_args(argv)
    s = StackSettings.from_env()
    if args.command == "env":
        sys.stdout.write(s.paths.env_file.read_text())
        return 0
    {
        "install": cmd_install,
        "up": cmd_up,
        "down": cmd_down,
        "clean": cmd_clean,
        "status": cmd_status,
    }[args.command](s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
