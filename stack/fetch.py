"""Fetch the Kafka and Hadoop runtime jars from Maven Central into the stack's cache.

Maven resolves the transitive runtime dependencies of the POMs under ``stack/kafka`` and
``stack/hadoop`` and copies them into ``<cache>/<name>-<version>/lib``. A marker file
written last makes a half-finished fetch (interrupted, network error) count as missing.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from stack.settings import REPO, Paths

_MARKER = ".complete"


def ensure_jars(paths: Paths, name: str, version: str, log: Path) -> Path:
    """Return the lib directory for ``name``/``version``, fetching it with Maven if needed."""
    lib = paths.lib(name, version)
    if (lib / _MARKER).exists():
        return lib
    if shutil.which("mvn") is None:
        raise SystemExit("mvn not found: install Maven (apt-get install maven) to fetch the jars")
    if lib.exists():
        shutil.rmtree(lib)
    lib.mkdir(parents=True)
    pom = REPO / "stack" / name / "pom.xml"
    prop = f"-D{name}.version={version}"
    cmd = [
        "mvn", "-B", "-q", "-f", str(pom), prop,
        "dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={lib}",
    ]  # fmt: skip
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"fetching {name} {version} jars from Maven Central (log: {log})", flush=True)
    with open(log, "ab") as out:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False).returncode
    if rc != 0:
        raise SystemExit(f"fetching {name} {version} jars failed (mvn exit {rc}); see {log}")
    (lib / _MARKER).write_text(version + "\n")
    return lib
