"""Tests of the operators' kit: alert rules, dashboard, systemd unit, ``batcher dlq``.

Shared helpers live here (the files under ``tests/ops`` are the kit's only test modules).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import REPO

PROMETHEUS_DIR = REPO / "config" / "prometheus"
DASHBOARD = REPO / "config" / "grafana" / "batcher.json"
OPERATIONS_MD = REPO / "docs" / "operations.md"


def prometheus_bindir() -> Path:
    """Where ``promtool`` and ``prometheus`` are, installing Debian's package if needed;
    skips the test, saying why, when they cannot be had."""
    from stack.prometheus import ensure_promtool

    try:
        return ensure_promtool()
    except SystemExit as exc:
        pytest.skip(f"promtool/prometheus cannot be installed here: {exc}")


def markdown_anchors(path: Path) -> set[str]:
    """The anchors GitHub (and most Markdown renderers) give the headings of ``path``."""
    anchors = set()
    for line in path.read_text().splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            text = re.sub(r"[`*_]", "", m.group(1)).strip().lower()
            anchors.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text)))
        anchors.update(re.findall(r'<a\s+(?:name|id)="([^"]+)"', line))
    return anchors


def alert_rules(path: Path = PROMETHEUS_DIR / "alerts.yml") -> dict[str, str]:
    """Alert name -> the rule's text (from ``- alert:`` to the next rule), from the file
    whose layout we control (no YAML parser in the project's dependencies)."""
    text = path.read_text()
    rules: dict[str, str] = {}
    parts = re.split(r"^\s*- alert:\s*", text, flags=re.M)
    for part in parts[1:]:
        name, _, body = part.partition("\n")
        rules[name.strip()] = body
    return rules
