"""Prometheus and promtool from Debian's ``prometheus`` package, for the operators' kit tests.

``ensure_promtool()`` returns the directory holding both ``promtool`` and ``prometheus``,
installing the package with apt-get (as root, non-interactive) when either is missing.
``apt-get update`` runs only when the first install attempt fails (a stale or empty package
list), so a machine whose lists are fresh installs with one command.

The package's maintainer scripts would enable and start a system-wide Prometheus service;
where ``/usr/sbin/policy-rc.d`` forbids starting services (containers) nothing starts, and
the tests never use that service anyway: they run their own ``prometheus`` on a free port.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

PACKAGE = "prometheus"
BINARIES = ("promtool", "prometheus")
# Debian installs both here; PATH is searched first so a hand-installed pair also counts.
DEBIAN_BINDIR = Path("/usr/bin")


def bindir() -> Path | None:
    """The directory that holds both ``promtool`` and ``prometheus``, if any."""
    found = [shutil.which(b) for b in BINARIES]
    if all(found):
        dirs = {Path(f).resolve().parent for f in found if f}
        if len(dirs) == 1:
            return dirs.pop()
        promtool = found[0]
        assert promtool is not None
        return Path(promtool).resolve().parent
    if all((DEBIAN_BINDIR / b).is_file() for b in BINARIES):
        return DEBIAN_BINDIR
    return None


def _apt(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(["apt-get", *args], env=env, capture_output=True, text=True, check=False)


def ensure_promtool() -> Path:
    """Install Debian's prometheus package if promtool/prometheus are missing; return their dir.

    Raises SystemExit naming what to do when it cannot install (not root, apt-get failed).
    """
    found = bindir()
    if found is not None:
        return found
    if os.geteuid() != 0:
        raise SystemExit("promtool/prometheus not found: run `sudo apt-get install prometheus`")
    if shutil.which("apt-get") is None:
        raise SystemExit("promtool/prometheus not found and apt-get is missing: install Prometheus")
    print("installing Prometheus (promtool) from Debian's packages (apt-get)", flush=True)
    install = ["install", "-y", "-q", "--no-install-recommends", PACKAGE]
    out = _apt(install)
    if out.returncode != 0:
        update = _apt(["update", "-q"])
        if update.returncode != 0:
            raise SystemExit(f"apt-get update failed:\n{update.stdout}{update.stderr}")
        out = _apt(install)
    if out.returncode != 0:
        raise SystemExit(f"apt-get install {PACKAGE} failed:\n{out.stdout}{out.stderr}")
    found = bindir()
    if found is None:
        raise SystemExit(f"apt-get installed {PACKAGE} but promtool/prometheus were not found")
    return found


if __name__ == "__main__":
    print(ensure_promtool())
