"""Micro-benchmark: Kafka JSON values -> Arrow RecordBatch + rejects (batcher.decode), in rows/s.

The values are ingest.synthetic's demo events (about 285 B of JSON each), all good, then with
1% malformed (every bad kind of ingest.synthetic.BAD_KINDS). Only ``RecordDecoder.decode``
is timed, best of several runs. Run: `.venv/bin/python -m bench.decode [rows]`.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from datetime import UTC, datetime

from batcher.decode import RecordDecoder
from bench.common import SCHEMA
from ingest.synthetic import records

RUNS = 7
NOW = datetime(2024, 5, 1, 12, tzinfo=UTC)


def run(rows: int, bad_ratio: float) -> None:
    values = [value for _, value in records(rows, bad_ratio=bad_ratio, seed=7, now=NOW)]
    offsets = list(range(len(values)))
    decoder = RecordDecoder(SCHEMA)
    best = float("inf")
    for _ in range(RUNS):
        start = time.perf_counter()
        decoded = decoder.decode(values, offsets)
        best = min(best, time.perf_counter() - start)
    reasons = Counter(reject.reason for reject in decoded.rejects)
    good = decoded.records.num_rows
    print(
        f"bad_ratio {bad_ratio:.0%}: {rows} rows, {decoded.value_bytes / max(1, good):.0f}"
        f" B/row: best {best * 1e3:.1f} ms = {rows / best / 1e6:.2f}M rows/s"
        f" ({best / rows * 1e9:.0f} ns/row); {good} good, "
        f"{len(decoded.rejects)} rejected {dict(sorted(reasons.items()))}"
    )


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    run(rows, 0.0)
    run(rows, 0.01)


if __name__ == "__main__":
    main()
