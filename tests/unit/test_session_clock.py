"""surat.net.deadline: the idle time restarts when input is consumed, never past the session deadline."""

from __future__ import annotations

import pytest

from surat.net import deadline
from surat.net.deadline import SessionClock


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock_time(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr(deadline, "time", fake)
    return fake


def test_unconsumed_octets_do_not_restart_the_idle_time(clock_time: FakeTime) -> None:
    clock = SessionClock(idle_timeout=300, session_deadline=3600)
    assert clock.before_read(0) == 300
    # A slow drip: one octet a minute, never a whole line; the engine holds them all.
    for held in range(1, 5):
        clock_time.now += 60
        clock.fed(held)
        assert clock.before_read(held) == 300 - 60 * held
    clock_time.now += 60
    clock.fed(5)
    assert clock.before_read(5) == 0
    assert not clock.deadline_passed  # the idle timeout, not the deadline


def test_consumed_input_restarts_the_idle_time(clock_time: FakeTime) -> None:
    clock = SessionClock(idle_timeout=300, session_deadline=3600)
    clock_time.now += 200
    clock.fed(12)  # "NOOP\r\nNOO" and more arrived ...
    assert clock.before_read(3) == 300  # ... and the engine consumed a line of it
    clock_time.now += 100
    clock.progress()  # e.g. a fresh engine after STARTTLS
    assert clock.before_read(0) == 300


def test_the_session_deadline_caps_every_read(clock_time: FakeTime) -> None:
    clock = SessionClock(idle_timeout=300, session_deadline=1000)
    for _ in range(4):
        clock_time.now += 200
        clock.fed(10)
        clock.before_read(0)  # busy: a command every 200 s
    assert clock.before_read(0) == 200  # 800 s gone: 200 left, not 300
    clock_time.now += 200
    assert clock.before_read(0) == 0 and clock.deadline_passed


def test_imap_junk_budget_refills_one_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    from surat.imapd import junk

    fake = FakeTime()
    monkeypatch.setattr(junk, "time", fake)
    budget = junk.JunkBudget(3)
    assert [budget.spend() for _ in range(4)] == [True, True, True, False]
    fake.now += 1.0
    assert budget.spend() and not budget.spend()
    fake.now += 3600  # refills up to the burst, not beyond
    assert [budget.spend() for _ in range(4)] == [True, True, True, False]
    budget.refill()  # a command that did work: the burst is there again at once
    assert [budget.spend() for _ in range(4)] == [True, True, True, False]
