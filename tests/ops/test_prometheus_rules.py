"""The alert rules load in promtool, and its unit tests show every alert firing.

``promtool check rules`` validates config/prometheus/alerts.yml; ``promtool test rules``
runs config/prometheus/alerts_test.yml, whose series fixtures make each alert fire (and
others, healthy or merely noisy, not fire). promtool comes from Debian's ``prometheus``
package (``stack.prometheus.ensure_promtool``); the tests skip, saying why, only when it
cannot be installed.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.ops import (
    OPERATIONS_MD,
    PROMETHEUS_DIR,
    alert_rules,
    markdown_anchors,
    prometheus_bindir,
)

EXPECTED_ALERTS = {
    "BatcherDown",
    "BatcherLagGrowing",
    "BatcherNoRecentFlush",
    "BatcherFlushFailures",
    "BatcherDeadLetterRate",
    "BatcherPartitionPaused",
    "BatcherNotReady",
    "BatcherBufferNearBudget",
}


@pytest.fixture(scope="module")
def promtool() -> Path:
    return prometheus_bindir() / "promtool"


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_check_rules_passes(promtool: Path) -> None:
    out = _run([str(promtool), "check", "rules", "alerts.yml"])
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(EXPECTED_ALERTS)} rules found" in out.stdout, out.stdout


def test_promtool_check_config_passes(promtool: Path) -> None:
    out = _run([str(promtool), "check", "config", "prometheus.yml"])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "WARNING" not in out.stdout + out.stderr, out.stdout + out.stderr


def test_promtool_unit_tests_pass(promtool: Path) -> None:
    out = _run([str(promtool), "test", "rules", "alerts_test.yml"])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout, out.stdout


def test_the_unit_tests_break_when_a_rule_does(promtool: Path, tmp_path: Path) -> None:
    """The fixtures are exact: raising one threshold makes promtool report that alert."""
    rules = (PROMETHEUS_DIR / "alerts.yml").read_text()
    rate = "rate(batcher_dead_letters_total[5m]))"
    broken = rules.replace(f"{rate} > 1", f"{rate} > 100")
    assert broken != rules
    (tmp_path / "alerts.yml").write_text(broken)
    (tmp_path / "alerts_test.yml").write_text((PROMETHEUS_DIR / "alerts_test.yml").read_text())
    out = subprocess.run(
        [str(promtool), "test", "rules", "alerts_test.yml"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode != 0
    assert "alertname: BatcherDeadLetterRate" in out.stdout + out.stderr


def test_every_alert_has_a_summary_and_a_runbook_anchor_that_exists() -> None:
    rules = alert_rules()
    assert set(rules) == EXPECTED_ALERTS
    anchors = markdown_anchors(OPERATIONS_MD)
    for name, body in rules.items():
        assert re.search(r"^\s+summary:\s*\S", body, re.M), f"{name} has no summary"
        m = re.search(r'^\s+runbook_url:\s*"?docs/operations\.md#([\w-]+)"?\s*$', body, re.M)
        assert m, f"{name}: runbook_url must point into docs/operations.md#anchor"
        assert m.group(1) in anchors, f"{name}: docs/operations.md has no anchor {m.group(1)!r}"
        assert re.search(r"^\s+severity:\s*(warning|critical)\s*$", body, re.M), name


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    """Each alert has a test case expecting it to fire, and at least one expecting quiet."""
    text = (PROMETHEUS_DIR / "alerts_test.yml").read_text()
    firing: set[str] = set()
    quiet: set[str] = set()
    # A case: "alertname: X" followed by "exp_alerts: []" (quiet) or a non-empty list.
    for m in re.finditer(r"alertname:\s*(\w+)\s*[,\n]\s*exp_alerts:\s*(\[\])?", text):
        (quiet if m.group(2) else firing).add(m.group(1))
    assert firing == EXPECTED_ALERTS, f"never shown firing: {EXPECTED_ALERTS - firing}"
    assert quiet == EXPECTED_ALERTS, f"never shown quiet: {EXPECTED_ALERTS - quiet}"
