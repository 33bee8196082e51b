"""When the queue tries a message again, when it gives up, and when a delay notice is owed.

Pure functions over times passed in by the caller (the queue runner's clock), so tests need no
sleeping and no fake event loop. All datetimes are timezone-aware; naive ones are rejected because
mixing them with the store's UTC timestamps would shift schedules by the local offset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

# The default: after 1 min, 5 min, 15 min, 30 min, 1 h, 2 h, 4 h, then every 4 h (the
# last delay repeats). Short early retries catch greylisting (typically 1-5 min); the long tail
# keeps an unreachable domain from costing a connection every few minutes for days.
DEFAULT_DELAYS: tuple[timedelta, ...] = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=15),
    timedelta(minutes=30),
    timedelta(hours=1),
    timedelta(hours=2),
    timedelta(hours=4),
)
# RFC 5321 §4.5.4.1: "the give-up time generally needs to be at least 4-5 days".
DEFAULT_EXPIRE_AFTER = timedelta(days=5)
# RFC 3461 §4.1 leaves the delay threshold to the MTA; 4 h is what Postfix
# (delay_warning_time) and most providers use.
DEFAULT_DELAY_NOTICE_AFTER = timedelta(hours=4)


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    """`delays[i]` is the wait after the (i+1)-th failed attempt; the last one repeats."""

    delays: tuple[timedelta, ...] = DEFAULT_DELAYS
    expire_after: timedelta = DEFAULT_EXPIRE_AFTER
    delay_notice_after: timedelta = DEFAULT_DELAY_NOTICE_AFTER

    def __post_init__(self) -> None:
        if not self.delays:
            raise ValueError("the retry schedule needs at least one delay")
        if any(delay <= timedelta(0) for delay in self.delays):
            raise ValueError("retry delays must be positive")
        if self.expire_after <= timedelta(0):
            raise ValueError("the expiry must be positive")
        if self.delay_notice_after <= timedelta(0):
            raise ValueError("the delay notice threshold must be positive")

    @classmethod
    def from_seconds(
        cls,
        delays: Sequence[float],
        expire_after: float,
        delay_notice_after: float = DEFAULT_DELAY_NOTICE_AFTER.total_seconds(),
    ) -> RetrySchedule:
        """Build a schedule from config values in seconds (e.g. a `[delivery]` table)."""
        return cls(
            tuple(timedelta(seconds=delay) for delay in delays),
            timedelta(seconds=expire_after),
            timedelta(seconds=delay_notice_after),
        )


DEFAULT_SCHEDULE = RetrySchedule()


def _aware(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")


def expires_at(created_at: datetime, schedule: RetrySchedule = DEFAULT_SCHEDULE) -> datetime:
    """When the queue gives up on a message; also the DSN's Will-Retry-Until (RFC 3464 §2.3.9)."""
    _aware("created_at", created_at)
    return created_at + schedule.expire_after


def retry_delay(attempts: int, schedule: RetrySchedule = DEFAULT_SCHEDULE) -> timedelta:
    """The wait after the `attempts`-th failed attempt (1-based); 0 attempts means no wait."""
    if attempts < 0:
        raise ValueError("attempts must not be negative")
    if attempts == 0:
        return timedelta(0)
    return schedule.delays[min(attempts, len(schedule.delays)) - 1]


def next_attempt(
    created_at: datetime,
    attempts: int,
    now: datetime,
    schedule: RetrySchedule = DEFAULT_SCHEDULE,
) -> datetime | None:
    """When to try again after `attempts` attempts, the last of which ended (failed) at `now`.

    None means the message has expired: the caller bounces the still-pending recipients. An
    attempt that would fall after the expiry is moved to the expiry itself, so every message gets
    one last try at its deadline instead of being bounced up to 4 hours early.
    """
    _aware("created_at", created_at)
    _aware("now", now)
    deadline = expires_at(created_at, schedule)
    if now >= deadline:
        return None
    return min(now + retry_delay(attempts, schedule), deadline)


def delay_notice_wanted(notify: Sequence[str], authenticated: bool) -> bool:
    """Whether the sender wants to hear about delays (RFC 3461 §4.1).

    Without NOTIFY the MTA chooses between FAILURE and FAILURE,DELAY: our own users (authenticated
    submission) get delay notices, mail relayed for strangers does not.
    """
    requested = {item.upper() for item in notify}
    if "NEVER" in requested:
        return False
    if requested:
        return "DELAY" in requested
    return authenticated


def delay_dsn_due(
    created_at: datetime,
    now: datetime,
    *,
    sender: str,
    notify: Sequence[str],
    authenticated: bool,
    already_sent: bool,
    schedule: RetrySchedule = DEFAULT_SCHEDULE,
) -> bool:
    """Whether a "delayed" DSN is owed for a still-pending recipient now (sent once per recipient).

    `sender` is the envelope sender, "" for the null reverse-path: RFC 3461 §6.2 forbids any DSN
    to it (a notice about a bounce would start a loop).
    """
    _aware("created_at", created_at)
    _aware("now", now)
    if already_sent or not sender or sender == "<>":
        return False
    if not delay_notice_wanted(notify, authenticated):
        return False
    # A message that is about to expire gets a failure DSN instead of a delay notice.
    if now >= expires_at(created_at, schedule):
        return False
    return now - created_at >= schedule.delay_notice_after
