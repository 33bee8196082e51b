"""The budget of IMAP commands that do nothing (NOOP, CHECK, CAPABILITY, ID): a token bucket.

SMTP and POP3 count such commands per session (``[limits] junk_commands``, as Postfix's
``smtpd_junk_command_limit``): their sessions are short. An IMAP session lives for hours and a client
without IDLE polls with NOOP all that time (RFC 9051 §6.1.2 recommends NOOP for polling), so a count per
session would cut off real clients. Instead the budget refills: ``junk_commands`` in a burst, then one a
second. A poller never runs dry; a flood of them does, and each one past the budget is answered BAD and
counts toward the bad-command limit, which ends the session. A command that does work (FETCH, STORE,
APPEND, SELECT, ...) fills the budget again, as Postfix resets its junk count after a delivery: a busy
client that polls between its work is not a flood, and its NOOPs must never be refused.
"""

from __future__ import annotations

import time

__all__ = ["JUNK_REFILL_PER_SECOND", "JunkBudget"]

JUNK_REFILL_PER_SECOND = 1.0


class JunkBudget:
    def __init__(self, burst: int) -> None:
        self.burst = float(burst)
        self._tokens = float(burst)
        self._at = time.monotonic()

    def spend(self) -> bool:
        """One junk command: False when the budget is spent (the command is refused)."""
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * JUNK_REFILL_PER_SECOND)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def refill(self) -> None:
        """A command that does work: the junk commands before it were not a flood."""
        self._tokens = self.burst
