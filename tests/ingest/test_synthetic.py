"""Synthetic events: the demo route's exact shape, reproducible, and bad records truly bad."""

from __future__ import annotations

import random
import re
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import msgspec
import pytest

from ingest import synthetic

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
INT64_MAX = 2**63 - 1
COUNTRY = re.compile(r"^[A-Z]{2}$")

Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=INT64_MAX)]


class DemoEvent(msgspec.Struct, forbid_unknown_fields=True):
    """The demo route as a strict schema: what the batcher accepts."""

    event_id: uuid.UUID
    ts: datetime
    user_id: Int64
    event_type: str
    amount: float
    country: str
    payload: dict[str, Any]


decode_demo = msgspec.json.Decoder(DemoEvent).decode


def events(n: int, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [synthetic.make_event(rng, NOW) for _ in range(n)]


def test_event_has_exactly_the_demo_columns() -> None:
    for event in events(500):
        assert list(event) == [
            "event_id",
            "ts",
            "user_id",
            "event_type",
            "amount",
            "country",
            "payload",
        ]
        assert uuid.UUID(event["event_id"]).version == 4
        assert isinstance(event["user_id"], int) and 0 < event["user_id"] <= INT64_MAX
        assert event["event_type"] in synthetic.EVENT_TYPES
        assert isinstance(event["amount"], float)
        assert COUNTRY.match(event["country"])
        assert isinstance(event["payload"], dict) and isinstance(event["payload"]["session"], dict)


def test_twenty_event_types_and_all_appear() -> None:
    assert len(set(synthetic.EVENT_TYPES)) == 20
    assert {e["event_type"] for e in events(20_000)} == set(synthetic.EVENT_TYPES)


def test_times_fall_within_the_day_before_now() -> None:
    for event in events(2_000):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", event["ts"])
        moment = datetime.strptime(event["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        assert NOW - timedelta(days=1) < moment <= NOW


def test_sizes_are_realistic() -> None:
    sample = events(2_000)
    value_sizes = [len(msgspec.json.encode(e)) for e in sample]
    payload_sizes = [len(msgspec.json.encode(e["payload"])) for e in sample]
    assert 260 <= statistics.mean(value_sizes) <= 300
    assert 90 <= statistics.mean(payload_sizes) <= 130


def test_same_seed_same_stream_other_seed_other_stream() -> None:
    one = list(synthetic.records(1_000, bad_ratio=0.2, seed=7, now=NOW))
    assert one == list(synthetic.records(1_000, bad_ratio=0.2, seed=7, now=NOW))
    assert one != list(synthetic.records(1_000, bad_ratio=0.2, seed=8, now=NOW))


def test_preformatted_records_equal_msgspec_encoding() -> None:
    """records() formats a template for speed; it must be msgspec's bytes for make_event."""
    rng = random.Random(3)
    expected = [synthetic.make_event(rng, NOW) for _ in range(3_000)]
    got = list(synthetic.records(3_000, seed=3, now=NOW))
    assert [value for _, value in got] == [msgspec.json.encode(e) for e in expected]
    assert [key for key, _ in got] == [str(e["user_id"]).encode() for e in expected]


@pytest.mark.parametrize(
    ("key_field", "key_of"),
    [
        pytest.param("user_id", lambda e: str(e["user_id"]).encode(), id="user_id"),
        pytest.param("country", lambda e: e["country"].encode(), id="country"),
        pytest.param(None, lambda e: None, id="no-key"),
    ],
)
def test_record_keys(key_field: str | None, key_of: Any) -> None:
    for key, value in synthetic.records(200, seed=5, now=NOW, key_field=key_field):
        assert key == key_of(msgspec.json.decode(value))


def test_good_records_pass_the_demo_schema() -> None:
    for _, value in synthetic.records(5_000, seed=11, now=NOW):
        decode_demo(value)


def test_bad_ratio_is_honoured() -> None:
    values = [value for _, value in synthetic.records(20_000, bad_ratio=0.1, seed=2, now=NOW)]
    bad = 0
    for value in values:
        try:
            decode_demo(value)
        except (msgspec.DecodeError, msgspec.ValidationError):
            bad += 1
    assert 1_700 <= bad <= 2_300


def _is_invalid_json(value: bytes) -> bool:
    try:
        msgspec.json.decode(value)
    except msgspec.DecodeError:
        return True
    return False


def _decoded(value: bytes) -> Any:
    return msgspec.json.decode(value)


# How each kind is bad, checked without the demo schema: the defect is the intended one.
DEFECTS = {
    "invalid_json": lambda v: _is_invalid_json(v) and v != b"",
    "not_object": lambda v: not isinstance(_decoded(v), dict),
    "missing_required": lambda v: "user_id" not in _decoded(v) and len(_decoded(v)) == 6,
    "wrong_type": lambda v: _decoded(v)["user_id"] == "abc",
    "null_in_non_null": lambda v: "event_type" in _decoded(v) and _decoded(v)["event_type"] is None,
    "invalid_utf8": lambda v: _is_invalid_json(v) and not _is_utf8(v) and v.startswith(b"{"),
    "bad_timestamp": lambda v: _decoded(v)["ts"] == "yesterday",
    "int_overflow": lambda v: _decoded(v)["user_id"] > INT64_MAX,
    "empty": lambda v: v == b"",
}


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_every_bad_kind_has_a_defect_check() -> None:
    assert set(DEFECTS) == set(synthetic.BAD_KINDS)


@pytest.mark.parametrize("kind", [pytest.param(kind, id=kind) for kind in synthetic.BAD_KINDS])
def test_bad_kind_is_bad(kind: str) -> None:
    rng = random.Random(kind)
    for _ in range(50):
        value = synthetic.make_bad(rng, NOW, kind=kind)
        assert DEFECTS[kind](value), value
        with pytest.raises((msgspec.DecodeError, msgspec.ValidationError)):
            decode_demo(value)


def test_make_bad_draws_every_kind() -> None:
    rng = random.Random(0)
    seen = set()
    for _ in range(500):
        value = synthetic.make_bad(rng, NOW)
        seen.update(kind for kind, defect in DEFECTS.items() if _safe(defect, value))
    assert seen == set(synthetic.BAD_KINDS)


def _safe(defect: Any, value: bytes) -> bool:
    try:
        return bool(defect(value))
    except (msgspec.DecodeError, KeyError, TypeError):
        return False


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"bad_ratio": 1.5}, id="ratio-above-1"),
        pytest.param({"bad_ratio": -0.1}, id="ratio-below-0"),
        pytest.param({"key_field": "payload"}, id="unkeyable-field"),
    ],
)
def test_records_rejects_bad_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        next(synthetic.records(1, **kwargs))


def test_generation_is_fast() -> None:
    """Generation must not be what limits `ingest gen` (aim: >100k/s; bound: 20k/s, for CI)."""
    count = 20_000
    started = time.perf_counter()
    for _ in synthetic.records(count, bad_ratio=0.05, seed=1, now=NOW):
        pass
    assert count / (time.perf_counter() - started) > 20_000
