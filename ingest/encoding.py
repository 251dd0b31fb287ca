"""Event -> Kafka record bytes: the pure half of the producer.

``encode_event`` turns an application event (a JSON-able dict) into the ``(key, value)`` pair
that :class:`ingest.Emitter` hands to Kafka. It does no I/O, so the format is tested without a
broker. Time and identity, the only impure inputs, can be passed in (``now``, ``new_id``).

- value: compact JSON (``msgspec.json``), with ``event_id`` (uuid4) and ``ts`` (ISO-8601 UTC
  with microseconds and ``Z``) added when missing. The input dict is never mutated.
- key: the value of ``config.key_field`` when set and present, so that all events with the same
  key land on the same partition (Kafka's murmur2 partitioner hashes the key bytes). Strings are
  UTF-8 encoded, bytes are taken as they are, anything else (numbers, booleans) as its JSON text,
  so ``user_id=42`` and ``user_id="42"`` share a partition.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from ingest.emitter import EmitterConfig

__all__ = ["encode_event", "format_event_time", "new_event_id"]

# One encoder for the process: msgspec.json.encode builds a fresh one per call.
_ENCODER = msgspec.json.Encoder()


def new_event_id() -> str:
    """A random event id (uuid4, canonical 36-character form)."""
    return str(uuid.uuid4())


def format_event_time(moment: datetime) -> str:
    """ISO-8601 UTC with microseconds and ``Z``: ``2024-05-01T12:00:00.000000Z``.

    A naive datetime is taken to be UTC already. The fraction is always present (``isoformat``
    drops it when it is zero), so every timestamp has the same width and parses the same way.
    """
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def encode_key(value: Any) -> bytes | None:
    """The Kafka key bytes for a key-field value; ``None`` (no key) for a missing/null value."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return _ENCODER.encode(value)


def encode_event(
    event: Mapping[str, Any],
    config: EmitterConfig,
    *,
    now: Callable[[], datetime] | None = None,
    new_id: Callable[[], str] = new_event_id,
) -> tuple[bytes | None, bytes]:
    """Encode ``event`` into Kafka ``(key, value)`` bytes according to ``config``.

    ``now`` and ``new_id`` supply the event time and id when they must be added (defaults: the
    current UTC time and a uuid4). Raises ``TypeError`` if the event is not a mapping or holds a
    value JSON cannot represent (msgspec's message names the type).
    """
    if not isinstance(event, Mapping):
        raise TypeError(f"an event must be a JSON object (dict), not {type(event).__name__}")
    if not isinstance(event, dict):
        event = dict(event)  # msgspec encodes dicts, not arbitrary mappings
    missing_id = config.add_event_id and event.get(config.event_id_field) is None
    missing_ts = config.add_event_time and event.get(config.event_time_field) is None
    if missing_id or missing_ts:
        event = dict(event)
        if missing_id:
            event[config.event_id_field] = new_id()
        if missing_ts:
            moment = now() if now is not None else datetime.now(UTC)
            event[config.event_time_field] = format_event_time(moment)
    key = encode_key(event.get(config.key_field)) if config.key_field is not None else None
    return key, _ENCODER.encode(event)
