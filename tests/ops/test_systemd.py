"""config/systemd/batcher@.service: systemd accepts it, and it says what operations need.

``systemd-analyze verify`` loads an instance of the template as systemd would (unknown keys,
bad values, a missing executable are reported). It needs no running systemd; the test skips,
saying why, where the tool is absent. The unit's ExecStart names the production install
(/opt/batcher/bin/batcher), which this machine lacks, so the verified copy points at this
checkout's ``batcher`` instead; nothing else is changed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

UNIT = REPO / "config" / "systemd" / "batcher@.service"
PROD_BINARY = "/opt/batcher/bin/batcher"


def _directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z]+)=(.*)$", line.strip())
        if m:
            found.setdefault(m.group(1), []).append(m.group(2).strip())
    return found


def _local_batcher() -> str:
    local = Path(sys.executable).parent / "batcher"
    if local.exists():
        return str(local)
    found = shutil.which("batcher")
    if found is None:
        pytest.skip("no `batcher` executable installed (pip install -e .) to verify ExecStart")
    return found


def test_systemd_analyze_verify_accepts_an_instance(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd) to verify the unit")
    text = UNIT.read_text()
    assert PROD_BINARY in text
    (tmp_path / UNIT.name).write_text(text.replace(PROD_BINARY, _local_batcher()))
    out = subprocess.run(
        [tool, "verify", str(tmp_path / "batcher@events.service")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    report = (out.stdout + out.stderr).strip()
    assert out.returncode == 0, report
    # Unknown keys and bad values are only warnings ("..., ignoring"): none may appear.
    assert report == "", report


def test_the_unit_runs_one_instance_per_config_and_stops_cleanly() -> None:
    d = _directives(UNIT.read_text())
    assert d["ExecStart"] == [f"{PROD_BINARY} run -c /etc/batcher/%i.toml --log-format json"]
    assert d["Restart"] == ["on-failure"]
    assert d["KillSignal"] == ["SIGTERM"]
    # Longer than the daemon's default shutdown budget (limits.shutdown_budget_s = 60 s).
    from batcher.config import LimitsConfig

    assert int(d["TimeoutStopSec"][0]) > LimitsConfig().shutdown_budget_s + 10
    assert any("%i" in f for f in d["EnvironmentFile"]), "per-instance secrets file"
    assert all(f.startswith("-") for f in d["EnvironmentFile"]), "secrets files are optional"


def test_the_unit_is_hardened() -> None:
    d = _directives(UNIT.read_text())
    want = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictSUIDSGID": "yes",
        "CapabilityBoundingSet": "",
    }
    for key, value in want.items():
        assert d.get(key) == [value], f"{key}={value}"
    assert d["User"] != ["root"]
