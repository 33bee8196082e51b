"""The retry schedule and delay-notice timing, with explicit clocks."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone

import pytest

from surat.delivery.schedule import (
    DEFAULT_SCHEDULE,
    RetrySchedule,
    delay_dsn_due,
    delay_notice_wanted,
    expires_at,
    next_attempt,
    retry_delay,
)

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)


@pytest.mark.parametrize(
    ("attempts", "delay"),
    [
        (0, timedelta(0)),
        (1, 1 * MIN),
        (2, 5 * MIN),
        (3, 15 * MIN),
        (4, 30 * MIN),
        (5, 1 * HOUR),
        (6, 2 * HOUR),
        (7, 4 * HOUR),
        (8, 4 * HOUR),
        (50, 4 * HOUR),
    ],
)
def test_default_delays(attempts: int, delay: timedelta) -> None:
    assert retry_delay(attempts) == delay


def test_negative_attempts_rejected() -> None:
    with pytest.raises(ValueError):
        retry_delay(-1)


def test_next_attempt_counts_from_the_failed_attempt() -> None:
    failed_at = T0 + 3 * HOUR
    assert next_attempt(T0, 3, failed_at) == failed_at + 15 * MIN
    assert next_attempt(T0, 0, T0) == T0


def test_simulated_queue_life_follows_the_schedule_and_expires_after_five_days() -> None:
    now = T0
    attempts = 0
    times: list[datetime] = []
    while True:
        due = next_attempt(T0, attempts, now)
        if due is None:
            break
        assert due >= now
        times.append(due)
        now = due  # the attempt runs and fails instantly
        attempts += 1
    # First attempt at once, then the cumulative delays: 1, 6, 21, 51, 111, 231, 471 minutes.
    offsets = [int((t - T0).total_seconds() // 60) for t in times[:8]]
    assert offsets == [0, 1, 6, 21, 51, 111, 231, 471]
    # Then every 4 hours, with the last try moved to the deadline itself.
    gaps = {later - earlier for earlier, later in itertools.pairwise(times[6:-1])}
    assert gaps == {4 * HOUR}
    assert times[-1] == T0 + timedelta(days=5)
    assert times[-2] < times[-1] <= times[-2] + 4 * HOUR
    assert now == T0 + timedelta(days=5)
    assert next_attempt(T0, attempts, now) is None


def test_attempt_beyond_the_deadline_is_clamped_and_expiry_returns_none() -> None:
    deadline = T0 + timedelta(days=5)
    late = deadline - 10 * MIN
    assert next_attempt(T0, 9, late) == deadline
    assert next_attempt(T0, 9, deadline) is None
    assert next_attempt(T0, 9, deadline + MIN) is None
    assert expires_at(T0) == deadline


def test_custom_schedule() -> None:
    schedule = RetrySchedule.from_seconds([2, 10], expire_after=60, delay_notice_after=30)
    assert schedule.delays == (timedelta(seconds=2), timedelta(seconds=10))
    assert next_attempt(T0, 1, T0, schedule) == T0 + timedelta(seconds=2)
    assert next_attempt(T0, 2, T0 + timedelta(seconds=2), schedule) == T0 + timedelta(seconds=12)
    assert next_attempt(T0, 5, T0 + timedelta(seconds=55), schedule) == T0 + timedelta(seconds=60)
    assert next_attempt(T0, 6, T0 + timedelta(seconds=60), schedule) is None
    assert expires_at(T0, schedule) == T0 + timedelta(seconds=60)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"delays": ()},
        {"delays": (timedelta(0),)},
        {"delays": (MIN, -MIN)},
        {"expire_after": timedelta(0)},
        {"delay_notice_after": timedelta(seconds=-1)},
    ],
)
def test_invalid_schedules_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RetrySchedule(**kwargs)  # type: ignore[arg-type]


def test_naive_datetimes_rejected() -> None:
    naive = datetime(2026, 1, 1)
    with pytest.raises(ValueError):
        next_attempt(naive, 1, T0)
    with pytest.raises(ValueError):
        next_attempt(T0, 1, naive)


def test_other_timezones_compare_by_instant() -> None:
    plus_two = timezone(timedelta(hours=2))
    now = (T0 + HOUR).astimezone(plus_two)
    assert next_attempt(T0, 1, now) == T0 + HOUR + MIN


@pytest.mark.parametrize(
    ("notify", "authenticated", "wanted"),
    [
        ((), False, False),
        ((), True, True),
        (("DELAY",), False, True),
        (("FAILURE", "DELAY"), False, True),
        (("failure", "delay"), True, True),
        (("FAILURE",), True, False),
        (("SUCCESS",), True, False),
        (("NEVER",), True, False),
    ],
)
def test_delay_notice_wanted(notify: tuple[str, ...], authenticated: bool, wanted: bool) -> None:
    assert delay_notice_wanted(notify, authenticated) is wanted


def _due(now: datetime, **overrides: object) -> bool:
    args: dict[str, object] = {
        "sender": "alice@example.org",
        "notify": ("DELAY",),
        "authenticated": False,
        "already_sent": False,
    }
    args.update(overrides)
    return delay_dsn_due(T0, now, **args)  # type: ignore[arg-type]


def test_delay_dsn_due_after_four_hours_once() -> None:
    assert not _due(T0 + 4 * HOUR - timedelta(seconds=1))
    assert _due(T0 + 4 * HOUR)
    assert _due(T0 + 30 * HOUR)
    assert not _due(T0 + 30 * HOUR, already_sent=True)


def test_delay_dsn_default_only_for_authenticated_senders() -> None:
    assert not _due(T0 + 5 * HOUR, notify=())
    assert _due(T0 + 5 * HOUR, notify=(), authenticated=True)
    assert not _due(T0 + 5 * HOUR, notify=("NEVER",), authenticated=True)
    assert not _due(T0 + 5 * HOUR, notify=("FAILURE",), authenticated=True)


@pytest.mark.parametrize("sender", ["", "<>"])
def test_no_delay_dsn_to_the_null_sender(sender: str) -> None:
    assert not _due(T0 + 5 * HOUR, sender=sender, authenticated=True)


def test_no_delay_dsn_once_expired_and_custom_threshold() -> None:
    assert not _due(T0 + timedelta(days=5))
    schedule = RetrySchedule(delay_notice_after=30 * MIN)
    assert _due(T0 + 31 * MIN, schedule=schedule)
    assert not _due(T0 + 29 * MIN, schedule=schedule)
    assert DEFAULT_SCHEDULE.delay_notice_after == 4 * HOUR
