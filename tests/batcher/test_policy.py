"""Flush triggers, backoff and the bad-input guard: pure decisions, no clock, no server."""

from __future__ import annotations

import pytest

from batcher.policy import Backoff, BadInputGuard, FlushPolicy, Trigger

POLICY = FlushPolicy(max_rows=100, max_bytes=1000, max_age_s=5.0)


@pytest.mark.parametrize(
    ("now", "rows", "nbytes", "oldest", "expected"),
    [
        pytest.param(10.0, 0, 0, None, None, id="empty"),
        pytest.param(10.0, 99, 999, 6.0, None, id="below-every-limit"),
        pytest.param(10.0, 100, 0, 9.0, Trigger.ROWS, id="rows"),
        pytest.param(10.0, 1, 1000, 9.0, Trigger.BYTES, id="bytes"),
        pytest.param(10.0, 1, 10, 5.0, Trigger.AGE, id="age-exactly"),
        pytest.param(10.0, 0, 0, 1.0, Trigger.AGE, id="all-rows-dead-lettered-still-ages"),
        pytest.param(10.0, 500, 5000, 0.0, Trigger.ROWS, id="rows-wins-ties"),
    ],
)
def test_flush_policy(
    now: float, rows: int, nbytes: int, oldest: float | None, expected: Trigger | None
) -> None:
    assert POLICY.due(now, rows, nbytes, oldest) == expected


def test_backoff_grows_to_cap_with_jitter_and_resets() -> None:
    b = Backoff(initial_s=0.5, max_s=4.0)
    lows = [b.next_delay(0.0) for _ in range(6)]
    assert lows == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    b.reset()
    assert b.next_delay(0.999) == pytest.approx(0.5, abs=0.001)


def test_guard_trips_on_consecutive_bad_across_batches() -> None:
    g = BadInputGuard(max_ratio=1.0, window=10**9, max_consecutive=5)
    assert g.observe(good=10, bad=3, trailing_bad=3) is None
    assert g.observe(good=0, bad=1, trailing_bad=1) is None
    reason = g.observe(good=0, bad=1, trailing_bad=1)
    assert reason is not None and "5 consecutive" in reason


def test_guard_consecutive_resets_after_a_good_record() -> None:
    g = BadInputGuard(max_ratio=1.0, window=10**9, max_consecutive=5)
    g.observe(good=0, bad=4, trailing_bad=4)
    assert g.observe(good=1, bad=4, trailing_bad=0) is None
    assert g.observe(good=0, bad=4, trailing_bad=4) is None


def test_guard_ratio_over_window() -> None:
    g = BadInputGuard(max_ratio=0.5, window=100, max_consecutive=10**9)
    assert g.observe(good=60, bad=39, trailing_bad=0) is None
    reason = g.observe(good=0, bad=30, trailing_bad=30)
    assert reason is not None and "ratio" in reason


def test_guard_ratio_below_limit_never_trips() -> None:
    g = BadInputGuard(max_ratio=0.5, window=100, max_consecutive=10**9)
    for _ in range(50):
        assert g.observe(good=90, bad=10, trailing_bad=1) is None
