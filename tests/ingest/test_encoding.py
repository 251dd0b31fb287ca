"""encode_event and EmitterConfig: pure, no Kafka needed."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest

import ingest
from ingest import EmitterConfig, encode_event
from ingest.encoding import encode_key, format_event_time

TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
NOW = datetime(2024, 5, 1, 12, 30, 45, 123456, tzinfo=UTC)


def config(**overrides: Any) -> EmitterConfig:
    settings: dict[str, Any] = {"bootstrap_servers": "127.0.0.1:9", "topic": "events"}
    return EmitterConfig(**(settings | overrides))


def fixed_now() -> datetime:
    return NOW


def test_public_names() -> None:
    assert sorted(ingest.__all__) == ["DeliveryError", "Emitter", "EmitterConfig", "encode_event"]
    for name in ingest.__all__:
        assert getattr(ingest, name) is not None


def test_adds_event_id_and_time_when_missing() -> None:
    event = {"user_id": 7, "event_type": "click"}
    key, value = encode_event(event, config(), now=fixed_now)
    decoded = msgspec.json.decode(value)
    assert key is None
    assert uuid.UUID(decoded["event_id"]).version == 4
    assert decoded["ts"] == "2024-05-01T12:30:45.123456Z"
    assert {k: decoded[k] for k in event} == event
    assert event == {"user_id": 7, "event_type": "click"}  # the caller's dict is left alone


@pytest.mark.parametrize(
    ("event", "kept"),
    [
        pytest.param({"event_id": "e-1", "ts": "2020-01-01"}, ["event_id", "ts"], id="both"),
        pytest.param({"event_id": "e-1"}, ["event_id"], id="id-only"),
        pytest.param({"ts": "2020-01-01"}, ["ts"], id="ts-only"),
    ],
)
def test_keeps_fields_already_present(event: dict[str, Any], kept: list[str]) -> None:
    _, value = encode_event(event, config(), now=fixed_now, new_id=lambda: "fresh")
    decoded = msgspec.json.decode(value)
    for field in kept:
        assert decoded[field] == event[field]
    assert decoded["event_id"] == event.get("event_id", "fresh")


def test_adds_nothing_when_disabled() -> None:
    cfg = config(add_event_id=False, add_event_time=False)
    _, value = encode_event({"a": 1}, cfg)
    assert value == b'{"a":1}'


def test_field_names_are_configurable() -> None:
    cfg = config(event_id_field="id", event_time_field="occurred_at")
    _, value = encode_event({"a": 1}, cfg, now=fixed_now, new_id=lambda: "X")
    assert msgspec.json.decode(value) == {
        "a": 1,
        "id": "X",
        "occurred_at": "2024-05-01T12:30:45.123456Z",
    }


def test_default_time_is_now_in_utc() -> None:
    before = datetime.now(UTC)
    _, value = encode_event({}, config())
    ts = msgspec.json.decode(value)["ts"]
    assert TS.match(ts)
    moment = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert before <= moment <= datetime.now(UTC)


@pytest.mark.parametrize(
    ("value", "key"),
    [
        pytest.param("u-42", b"u-42", id="str"),
        pytest.param("ü", "ü".encode(), id="str-utf8"),
        pytest.param(42, b"42", id="int"),
        pytest.param(2.5, b"2.5", id="float"),
        pytest.param(True, b"true", id="bool"),
        pytest.param(b"\x00raw", b"\x00raw", id="bytes"),
        pytest.param(None, None, id="null"),
    ],
)
def test_encode_key(value: object, key: bytes | None) -> None:
    assert encode_key(value) == key


def test_key_comes_from_key_field() -> None:
    key, _ = encode_event({"user_id": 42, "a": 1}, config(key_field="user_id"))
    assert key == b"42"


def test_same_value_same_key_whatever_its_type() -> None:
    cfg = config(key_field="user_id")
    assert encode_event({"user_id": 42}, cfg)[0] == encode_event({"user_id": "42"}, cfg)[0]


def test_missing_key_field_means_no_key() -> None:
    assert encode_event({"other": 1}, config(key_field="user_id"))[0] is None


@pytest.mark.parametrize(
    "event",
    [
        pytest.param([1, 2], id="list"),
        pytest.param("text", id="str"),
        pytest.param({"when": object()}, id="unencodable-value"),
    ],
)
def test_rejects_what_is_not_a_json_object(event: Any) -> None:
    with pytest.raises(TypeError):
        encode_event(event, config())


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        pytest.param(NOW, "2024-05-01T12:30:45.123456Z", id="utc"),
        pytest.param(NOW.replace(microsecond=0), "2024-05-01T12:30:45.000000Z", id="whole-second"),
        pytest.param(
            NOW.astimezone(timezone(timedelta(hours=2))), "2024-05-01T12:30:45.123456Z", id="offset"
        ),
        pytest.param(NOW.replace(tzinfo=None), "2024-05-01T12:30:45.123456Z", id="naive-is-utc"),
    ],
)
def test_format_event_time(moment: datetime, text: str) -> None:
    assert format_event_time(moment) == text


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param({"topic": ""}, "topic", id="empty-topic"),
        pytest.param({"max_block_ms": -1}, "max_block_ms", id="negative-block"),
        pytest.param({"buffer_memory": 0}, "buffer_memory", id="no-buffer"),
        pytest.param({"compression": "brotli"}, "compression", id="unknown-codec"),
        pytest.param({"acks": 2}, "acks", id="bad-acks"),
        pytest.param({"producer_options": {"linger_ms": 5}}, "linger_ms", id="managed-option"),
    ],
)
def test_config_errors_name_the_field(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config(**overrides)


def test_producer_kwargs_pass_security_options_through() -> None:
    cfg = config(acks=1, producer_options={"security_protocol": "SASL_SSL"})
    kwargs = cfg.producer_kwargs()
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["max_block_ms"] == 100
    assert kwargs["api_version"]  # given, so KafkaProducer() does not connect in __init__
    assert kwargs["enable_idempotence"] is False  # acks=1 cannot be idempotent
