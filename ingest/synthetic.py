"""Synthetic events in the demo route's shape, and malformed records, for load tests and demos.

Pure: every function draws from the ``random.Random`` it is given, and event times are spread
over the day before ``now`` (a parameter), so a seed and a ``now`` reproduce the same stream.

A good event has exactly the demo route's columns and serializes to about 280 bytes::

    {"event_id": "<uuid4>", "ts": "2024-05-01T12:00:00.123456Z", "user_id": 4821337,
     "event_type": "page_view", "amount": 0.0, "country": "DE",
     "payload": {"page": "/page/1234", "ref": "google", "session": {...}, "device": {...}}}

A bad record is one of :data:`BAD_KINDS`, each breaking the record in one way the batcher must
dead-letter (and never crash on). :func:`records` mixes both at a given ratio, fast enough
(well over 100k records/s) to drive Kafka at full speed from one process.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

__all__ = [
    "BAD_KINDS",
    "COUNTRIES",
    "EVENT_TYPES",
    "corrupt",
    "make_bad",
    "make_event",
    "records",
]

EVENT_TYPES: tuple[str, ...] = (
    "page_view", "click", "search", "add_to_cart", "remove_from_cart",
    "checkout_start", "purchase", "refund", "login", "logout",
    "signup", "video_play", "video_pause", "share", "like",
    "comment", "rating", "wishlist_add", "coupon_apply", "support_ticket",
)  # fmt: skip
# Browsing dominates real traffic; money moves in a few percent of events.
_EVENT_WEIGHTS = (30, 20, 10, 6, 2, 3, 3, 1, 4, 2, 1, 5, 2, 2, 3, 1, 1, 2, 1, 1)
_MONEY_EVENTS = frozenset({"add_to_cart", "remove_from_cart", "purchase", "refund", "coupon_apply"})
COUNTRIES: tuple[str, ...] = (
    "US", "GB", "DE", "FR", "IN", "BR", "JP", "CA", "AU", "ES",
    "IT", "NL", "SE", "PL", "MX", "KR", "ZA", "NG", "AR", "SG",
)  # fmt: skip
_COUNTRY_WEIGHTS = (25, 8, 8, 6, 10, 6, 5, 4, 3, 3, 3, 2, 1, 2, 3, 2, 1, 2, 1, 1)
_PAGE_PREFIX = {name: name.split("_")[0] for name in EVENT_TYPES}
_REFERRERS = ("direct", "google", "bing", "newsletter", "facebook", "partner")
_OSES = ("ios", "android", "web", "macos", "windows")


def _table(names: tuple[str, ...], weights: tuple[int, ...]) -> tuple[str, ...]:
    """Names repeated by weight: a uniform pick from it is a weighted pick, at ~50 ns."""
    return tuple(name for name, weight in zip(names, weights, strict=True) for _ in range(weight))


_EVENT_TABLE = _table(EVENT_TYPES, _EVENT_WEIGHTS)
_COUNTRY_TABLE = _table(COUNTRIES, _COUNTRY_WEIGHTS)
_VARIANT = "89ab"  # RFC 4122 variant nibble
_DAY_US = 86_400 * 1_000_000
_ENCODER = msgspec.json.Encoder()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_USEC = timedelta(microseconds=1)


def _uuid4(rng: random.Random) -> str:
    """A version-4 UUID from ``rng`` (uuid.uuid4 reads os.urandom: not reproducible)."""
    h = "%032x" % rng.getrandbits(128)  # noqa: UP031 (2x faster than an f-string here)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[rng.getrandbits(2)]}{h[17:20]}-{h[20:]}"


@functools.lru_cache(maxsize=64)
def _day_prefix(day: int) -> str:
    return (_EPOCH + timedelta(days=day)).strftime("%Y-%m-%dT")


def _format_us(epoch_us: int) -> str:
    """ISO-8601 UTC with microseconds and 'Z'; 3x faster than datetime.strftime."""
    day, rem = divmod(epoch_us, _DAY_US)
    sec, frac = divmod(rem, 1_000_000)
    hour, sec = divmod(sec, 3600)
    minute, sec = divmod(sec, 60)
    return "%s%02d:%02d:%02d.%06dZ" % (_day_prefix(day), hour, minute, sec, frac)  # noqa: UP031


def _now_us(now: datetime | None) -> int:
    moment = now if now is not None else datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _USEC


# The draws of one event, in the order they are made, so that the dict (make_event) and the
# preformatted bytes (records) of one seed are the same event.
_Draws = tuple[str, str, int, str, float, str, str, int, str, int, int, str]


def _draw(rng: random.Random, now_us: int) -> _Draws:
    rand = rng.random
    event_type = _EVENT_TABLE[int(rand() * len(_EVENT_TABLE))]
    amount = round(rng.lognormvariate(3.0, 1.0), 2) if event_type in _MONEY_EVENTS else 0.0
    # A fifth of the traffic comes from a thousand heavy users: keys repeat, partitions skew.
    user_id = 1 + int(rand() * (1_000 if rand() < 0.2 else 50_000_000))
    return (
        _uuid4(rng),
        _format_us(now_us - int(rand() * _DAY_US)),
        user_id,
        event_type,
        -amount if event_type == "refund" else amount,
        _COUNTRY_TABLE[int(rand() * len(_COUNTRY_TABLE))],
        _PAGE_PREFIX[event_type],
        int(rand() * 100_000),
        _REFERRERS[int(rand() * len(_REFERRERS))],
        rng.getrandbits(48),
        1 + int(rand() * 200),
        _OSES[int(rand() * len(_OSES))],
    )


def _as_dict(d: _Draws) -> dict[str, Any]:
    return {
        "event_id": d[0],
        "ts": d[1],
        "user_id": d[2],
        "event_type": d[3],
        "amount": d[4],
        "country": d[5],
        "payload": {
            "page": f"/{d[6]}/{d[7]}",
            "ref": d[8],
            "session": {"id": f"{d[9]:012x}", "seq": d[10]},
            "device": {"os": d[11], "app": "4.2.1"},
        },
    }


# msgspec's output for _as_dict, byte for byte (a test checks it): formatting a template is
# about twice as fast as building the dict and encoding it. Every string is plain ASCII.
_TEMPLATE = (
    '{"event_id":"%s","ts":"%s","user_id":%d,"event_type":"%s","amount":%r,"country":"%s",'
    '"payload":{"page":"/%s/%d","ref":"%s","session":{"id":"%012x","seq":%d},'
    '"device":{"os":"%s","app":"4.2.1"}}}'
)


def make_event(rng: random.Random, now: datetime | None = None) -> dict[str, Any]:
    """One good event, its time within the day before ``now`` (default: the current time)."""
    return _as_dict(_draw(rng, _now_us(now)))


# Each bad kind breaks a good event one way. Keys are the dead-letter reasons the batcher is
# expected to report; the values take the good event and return the record's bytes.
def _invalid_json(event: dict[str, Any], rng: random.Random) -> bytes:
    good = _ENCODER.encode(event)
    return good[: rng.randrange(1, len(good) - 1)]  # a strict prefix of an object never parses


def _not_object(event: dict[str, Any], rng: random.Random) -> bytes:
    shapes: tuple[object, ...] = ([event], event["user_id"], event["event_type"], None, [1, 2, 3])
    return _ENCODER.encode(shapes[int(rng.random() * len(shapes))])


def _drop_user_id(event: dict[str, Any], rng: random.Random) -> bytes:
    del event["user_id"]
    return _ENCODER.encode(event)


def _set(field: str, value: object) -> Callable[[dict[str, Any], random.Random], bytes]:
    def bad(event: dict[str, Any], rng: random.Random) -> bytes:
        event[field] = value
        return _ENCODER.encode(event)

    return bad


def _invalid_utf8(event: dict[str, Any], rng: random.Random) -> bytes:
    # Valid JSON syntax, but a string holds bytes that are not UTF-8 (a latin-1 "Mü" and a lone
    # continuation byte).
    marker = "\x00COUNTRY\x00"
    event["country"] = marker
    return _ENCODER.encode(event).replace(b"\\u0000COUNTRY\\u0000", b"M\xfc\x80")


def _empty(event: dict[str, Any], rng: random.Random) -> bytes:
    return b""


BAD_KINDS: dict[str, Callable[[dict[str, Any], random.Random], bytes]] = {
    "invalid_json": _invalid_json,
    "not_object": _not_object,
    "missing_required": _drop_user_id,
    "wrong_type": _set("user_id", "abc"),
    "null_in_non_null": _set("event_type", None),
    "invalid_utf8": _invalid_utf8,
    "bad_timestamp": _set("ts", "yesterday"),
    "int_overflow": _set("user_id", 2**70),  # > int64 max (2**63 - 1)
    "empty": _empty,
}
_BAD_NAMES = tuple(BAD_KINDS)
# Fields that can key a record, and where they are in _Draws.
_KEY_INDEX = {"event_id": 0, "user_id": 2, "event_type": 3, "country": 5}


def corrupt(kind: str, event: dict[str, Any], rng: random.Random) -> bytes:
    """The bytes of ``event`` broken as ``kind`` (a key of :data:`BAD_KINDS`); mutates event."""
    return BAD_KINDS[kind](event, rng)


def make_bad(rng: random.Random, now: datetime | None = None, kind: str | None = None) -> bytes:
    """One malformed record, of ``kind`` or of a kind chosen at random."""
    if kind is None:
        kind = _BAD_NAMES[int(rng.random() * len(_BAD_NAMES))]
    return corrupt(kind, make_event(rng, now), rng)


def records(
    count: int,
    *,
    bad_ratio: float = 0.0,
    seed: int | None = None,
    now: datetime | None = None,
    key_field: str | None = "user_id",
) -> Iterator[tuple[bytes | None, bytes]]:
    """``count`` Kafka ``(key, value)`` pairs, a ``bad_ratio`` share of them malformed.

    The key is the text of the event's ``key_field`` (None: no key). A bad record keeps the key
    of the event it was made from, as a buggy producer would. Reproducible given seed and now.
    """
    if not 0.0 <= bad_ratio <= 1.0:
        raise ValueError(f"bad_ratio must be within 0..1, got {bad_ratio}")
    rng = random.Random(seed)
    now_us = _now_us(now)
    key_index = _KEY_INDEX.get(key_field) if key_field is not None else None
    if key_field is not None and key_index is None:
        raise ValueError(f"key_field {key_field!r} is not one of {sorted(_KEY_INDEX)}")
    template, names, rand = _TEMPLATE, _BAD_NAMES, rng.random
    for _ in range(count):
        d = _draw(rng, now_us)
        key = None if key_index is None else str(d[key_index]).encode()
        if bad_ratio and rand() < bad_ratio:
            yield key, corrupt(names[int(rand() * len(names))], _as_dict(d), rng)
        else:
            yield key, (template % d).encode()
