"""A private PostgreSQL cluster for the local stack, from Debian's packages.

initdb and postgres refuse to run as root, so as root the cluster runs as the ``postgres``
system user (created by the Debian package). That user must traverse every directory above
the data directory; when the checkout sits under a directory it cannot enter (a 0700 home),
the cluster lives under /var/tmp instead, in a directory named after this checkout.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import secrets
import shutil
import subprocess
import time
from pathlib import Path

from stack import process
from stack.settings import StackSettings

NAME = "postgres"
USER = "ingest"  # the cluster's superuser, used by the CLIs and tests
DATABASE = "ingest"
MIN_MAJOR = 15


def bindir() -> Path | None:
    """The newest installed PostgreSQL server's bin directory (Debian layout), if any."""
    found = []
    for initdb in Path("/usr/lib/postgresql").glob("*/bin/initdb"):
        try:
            found.append((int(initdb.parent.parent.name), initdb.parent))
        except ValueError:
            continue
    found = [f for f in found if f[0] >= MIN_MAJOR]
    return max(found)[1] if found else None


def ensure_installed() -> Path:
    """Install Debian's postgresql package if no server >= 15 is present; return its bin dir."""
    found = bindir()
    if found is not None:
        return found
    if os.geteuid() != 0:
        raise SystemExit("PostgreSQL server not found: run `sudo apt-get install postgresql`")
    print("installing PostgreSQL from Debian's packages (apt-get)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql"],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    found = bindir()
    if found is None:
        raise SystemExit(f"apt-get installed postgresql but no server >= {MIN_MAJOR} was found")
    return found


def _as_root() -> bool:
    return os.geteuid() == 0


def _runas() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if _as_root() else []


def _traversable_by_others(path: Path) -> bool:
    return all(os.stat(p).st_mode & 0o001 for p in [path, *path.parents])


def home(s: StackSettings) -> Path:
    """Where the cluster lives: under .stack/ when the postgres user can reach it."""
    default = s.paths.root / "postgres"
    if not _as_root() or _traversable_by_others(s.paths.root):
        return default
    digest = hashlib.sha1(str(s.paths.root).encode()).hexdigest()[:10]
    return Path("/var/tmp") / f"bulk-ingest-stack-{digest}"


def password(s: StackSettings) -> str:
    """The cluster's password, generated once and kept in .stack/ (mode 0600)."""
    path = s.paths.root / "pg-password"
    if not path.exists():
        s.paths.root.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(18))
    return path.read_text().strip()


def _chown(path: Path) -> None:
    if _as_root():
        pw = pwd.getpwnam("postgres")
        os.chown(path, pw.pw_uid, pw.pw_gid)


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_runas() + cmd, capture_output=True, text=True, check=False)


def start(s: StackSettings) -> bool:
    """Initialise the cluster if needed and start it unless it runs; True if started now."""
    if process.recorded_pid(NAME, s.paths.pids) is not None:
        return False
    bins = ensure_installed()
    base = home(s)
    base.mkdir(parents=True, exist_ok=True)
    _chown(base)
    data = base / "data"
    if not (data / "PG_VERSION").exists():
        shutil.rmtree(data, ignore_errors=True)
        pwfile = base / "pwfile"
        pwfile.write_text(password(s) + "\n")
        _chown(pwfile)
        out = _run([str(bins / "initdb"), "-D", str(data), "-U", USER, "-E", "UTF8",
                    "--no-locale", "--auth-host=scram-sha-256", "--auth-local=trust",
                    f"--pwfile={pwfile}"])  # fmt: skip
        pwfile.unlink()
        if out.returncode != 0:
            raise SystemExit(f"initdb failed:\n{out.stdout}{out.stderr}")
        with open(data / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# bulk-ingest local stack\n"
                "shared_buffers = 256MB\nmax_connections = 200\n"
                "max_wal_size = 2GB\nlog_min_messages = warning\n"
            )
    log = base / "postgres.log"
    s.paths.logs.mkdir(parents=True, exist_ok=True)
    link = s.paths.logs / "postgres.log"
    if not link.is_symlink():
        link.unlink(missing_ok=True)
        link.symlink_to(log)
    opts = f"-p {s.ports.postgres} -h {s.host} -k {base}"
    out = _run([str(bins / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", opts,
                "-w", "-t", "60", "start"])  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"postgres did not start:\n{out.stdout}{out.stderr}\nsee {log}")
    pid = int((data / "postmaster.pid").read_text().split()[0])
    s.paths.pids.mkdir(parents=True, exist_ok=True)
    started = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    (s.paths.pids / f"{NAME}.pid").write_text(f"{pid} {started}\n")
    return True


def dsn(s: StackSettings, database: str = DATABASE) -> str:
    """A libpq connection string without the password (it travels as PGPASSWORD)."""
    return f"host={s.host} port={s.ports.postgres} user={USER} dbname={database}"


def wait_ready(s: StackSettings, deadline: float) -> None:
    """SELECT 1 as the stack's user, creating the stack's database on the first start."""
    import psycopg

    last: Exception | None = None
    pw = password(s)
    while time.monotonic() < deadline:
        if process.recorded_pid(NAME, s.paths.pids) is None:
            raise SystemExit(f"postgres exited during start; see {s.paths.logs}/postgres.log")
        try:
            with psycopg.connect(dsn(s, "postgres"), password=pw, autocommit=True) as conn:
                exists = conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
                ).fetchone()
                if not exists:
                    conn.execute(f'CREATE DATABASE "{DATABASE}"')
            with psycopg.connect(dsn(s), password=pw, connect_timeout=5) as conn:
                if conn.execute("SELECT 1").fetchone() == (1,):
                    return
        except psycopg.Error as exc:
            last = exc
        time.sleep(0.5)
    raise SystemExit(f"postgres not ready before the deadline: {last!r}")


def stop(s: StackSettings) -> bool:
    """A fast shutdown through pg_ctl, then make sure the recorded postmaster is gone."""
    if process.recorded_pid(NAME, s.paths.pids) is None:
        (s.paths.pids / f"{NAME}.pid").unlink(missing_ok=True)
        return False
    bins = bindir()
    data = home(s) / "data"
    if bins is not None:
        _run([str(bins / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "60", "stop"])
    return process.stop(NAME, s.paths.pids, timeout=10) or True


def clean(s: StackSettings) -> None:
    shutil.rmtree(home(s), ignore_errors=True)
