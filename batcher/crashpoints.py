"""Named crash points in the flush and commit path, for the fault tests only.

``BATCHER_CRASH_AT=<point>[,<point>...]`` arms them; ``BATCHER_CRASH_PROB`` (default 1.0)
is the chance that an armed point fires each time it is passed, ``BATCHER_CRASH_SKIP``
(default 0) how many passes to let through first. Firing is SIGKILL: no cleanup, no flush,
exactly what a power cut or an OOM kill does. Unset (production), a point costs one dict
lookup.
"""

from __future__ import annotations

import os
import random
import signal

POINTS = (
    "during_decode",
    "after_copy_before_pg_commit",
    "after_pg_commit",
    "after_hdfs_tmp_write",
    "after_hdfs_commit_rename",
    "after_hdfs_final_rename",
    "before_kafka_commit",
)

_armed = frozenset(p for p in os.environ.get("BATCHER_CRASH_AT", "").split(",") if p)
_prob = float(os.environ.get("BATCHER_CRASH_PROB", "1.0"))
_skip = {p: int(os.environ.get("BATCHER_CRASH_SKIP", "0")) for p in _armed}


def crash_point(name: str) -> None:
    """SIGKILL this process here if the point is armed (and the dice say so)."""
    if name not in _armed:
        return
    if _skip[name] > 0:
        _skip[name] -= 1
        return
    if random.random() < _prob:
        os.kill(os.getpid(), signal.SIGKILL)
