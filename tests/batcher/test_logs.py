"""Logs: secrets are scrubbed, JSON lines carry the flush's extra fields."""

from __future__ import annotations

import json
import logging

import pytest

from batcher.logs import JsonFormatter, SecretFilter


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("t", logging.INFO, __file__, 1, msg, args, None)
    rec.__dict__.update(extra)
    return rec


@pytest.mark.parametrize(
    ("msg", "args"),
    [
        pytest.param("conninfo host=h password=%s", ("s3cr3t-pw",), id="in-args"),
        pytest.param("failed: s3cr3t-pw rejected", (), id="in-message"),
    ],
)
def test_secret_values_never_reach_a_log_line(msg: str, args: tuple[object, ...]) -> None:
    rec = record(msg, *args)
    assert SecretFilter(["s3cr3t-pw"]).filter(rec)
    assert "s3cr3t-pw" not in rec.getMessage()
    assert "***" in rec.getMessage()


def test_json_lines_carry_extra_fields() -> None:
    rec = record("flushed", sink="postgres", topic="t", partition=2, first_offset=5, rows=3)
    out = json.loads(JsonFormatter().format(rec))
    assert out["msg"] == "flushed"
    assert (out["sink"], out["topic"], out["partition"], out["rows"]) == ("postgres", "t", 2, 3)
    assert out["ts"].endswith("Z")
