"""How long a session's next read may wait: an idle timeout that only input progress restarts, under a
total deadline.

A timeout restarted by every octet lets a client that sends one octet just before each timeout hold its
connection slot for ever, and one that never ends its command line (a "slow drip") is never idle. So
the idle time counts from the last time the engine *consumed* input (a command line, a body line, a
literal's octets), which an unfinished line never is; and every session ends at its deadline however
active it is (``[limits] smtp_session_deadline``, ``pop3_session_deadline``, ``imap_session_deadline``).
"""

from __future__ import annotations

import time

__all__ = ["SessionClock"]


class SessionClock:
    def __init__(self, idle_timeout: float, session_deadline: float) -> None:
        now = time.monotonic()
        self.idle_timeout = idle_timeout
        self.ends = now + session_deadline
        self._last_progress = now
        self._unconsumed = 0  # octets the engine held right after the last read was fed to it

    def fed(self, engine_buffered: int) -> None:
        """Right after a read's data went into the engine: what it holds unparsed now."""
        self._unconsumed = engine_buffered

    def before_read(self, engine_buffered: int) -> float:
        """The timeout for the next read, given what the engine still holds unparsed: if it holds less
        than after the last read, it consumed input since, and the idle time starts again."""
        now = time.monotonic()
        if engine_buffered < self._unconsumed:
            self._last_progress = now
        self._unconsumed = engine_buffered
        return max(0.0, min(self._last_progress + self.idle_timeout, self.ends) - now)

    def progress(self) -> None:
        """Input was consumed in a way the engine's buffer does not show (a fresh engine after TLS)."""
        self._last_progress = time.monotonic()
        self._unconsumed = 0

    @property
    def deadline_passed(self) -> bool:
        """The session reached its total deadline (rather than its idle timeout)."""
        return time.monotonic() >= self.ends
