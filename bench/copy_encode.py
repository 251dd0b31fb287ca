"""Micro-benchmark: Arrow RecordBatch -> binary COPY bytes (sinks.pgcopy), in rows/s.

The batch has the shape of the events in ../shared/PERFORMANCE.md: uuid, timestamp, int64,
a short text (1 of 20), float64, a 2-letter text and ~100 B of JSON. Only the encoding is
timed, best of several runs. Run: `.venv/bin/python bench/copy_encode.py [rows]`.
"""

from __future__ import annotations

import sys
import time
import uuid

import numpy as np
import pyarrow as pa

from sinks.pgcopy import arrow_type, encode_copy_binary

COL_TYPES = ("uuid", "timestamp", "int64", "text", "float64", "text", "json")
NAMES = ("event_id", "ts", "user_id", "event_type", "amount", "country", "payload")
RUNS = 7


def make_batch(rows: int, seed: int = 0) -> pa.RecordBatch:
    rng = np.random.default_rng(seed)
    event_types = [f"event_type_{i}" for i in range(20)]
    countries = ["DE", "FR", "US", "GB", "JP", "BR", "IN", "NL"]
    payloads = [
        f'{{"session":"{rng.integers(1 << 40):x}","page":"/p/{i}","ref":"campaign-{i % 97}",'
        f'"items":[{i % 7},{i % 11}],"ok":true}}'
        for i in range(rows)
    ]
    columns = [
        [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(rows)],
        1_700_000_000_000_000 + rng.integers(0, 10**12, rows),
        rng.integers(0, 10**9, rows),
        [event_types[i] for i in rng.integers(0, 20, rows)],
        rng.random(rows) * 1000,
        [countries[i] for i in rng.integers(0, len(countries), rows)],
        payloads,
    ]
    arrays = [pa.array(c, type=arrow_type(t)) for c, t in zip(columns, COL_TYPES, strict=True)]
    return pa.RecordBatch.from_arrays(arrays, names=list(NAMES))


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    batch = make_batch(rows)
    best = float("inf")
    size = 0
    for _ in range(RUNS):
        start = time.perf_counter()
        size = len(encode_copy_binary(batch, COL_TYPES))
        best = min(best, time.perf_counter() - start)
    print(
        f"{rows} rows, {size / rows:.0f} B/row: best {best * 1e3:.1f} ms "
        f"= {rows / best / 1e6:.2f}M rows/s ({best / rows * 1e9:.0f} ns/row)"
    )


if __name__ == "__main__":
    main()
