"""SMTP replies (RFC 5321 §4.2) with enhanced status codes (RFC 2034, RFC 3463).

Every reply the server sends is a `Reply`; the ones used in more than one place are named here so
that the engine, the shell and the tests agree on them byte for byte.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    # RFC 2034 §3: every 2xx/4xx/5xx reply carries one, except the greeting and the HELO/EHLO reply;
    # 3xx intermediate replies (354, 334) carry none either.
    enhanced: str | None
    text: str | tuple[str, ...]

    @property
    def lines(self) -> tuple[str, ...]:
        return (self.text,) if isinstance(self.text, str) else self.text

    @property
    def is_positive(self) -> bool:
        """2xx or 3xx: the command was accepted (completely or so far)."""
        return self.code < 400

    @property
    def is_transient(self) -> bool:
        return 400 <= self.code < 500

    def to_bytes(self) -> bytes:
        """RFC 5321 §4.2.1: all but the last line use "code-", the last "code SP"."""
        lines = self.lines or ("",)
        prefix = f"{self.enhanced} " if self.enhanced else ""
        out = []
        for index, line in enumerate(lines):
            # A CR or LF inside the text would let whoever controls it inject a reply.
            clean = line.replace("\r", " ").replace("\n", " ")
            separator = " " if index == len(lines) - 1 else "-"
            out.append(f"{self.code}{separator}{prefix}{clean}\r\n")
        return "".join(out).encode("utf-8")

    def __str__(self) -> str:
        prefix = f" {self.enhanced}" if self.enhanced else ""
        return f"{self.code}{prefix} {self.lines[0] if self.lines else ''}"


def auth_challenge(data: bytes) -> Reply:
    """RFC 4954 §4: a server challenge is "334 SP base64"."""
    return Reply(334, None, base64.b64encode(data).decode("ascii"))


# -- positive
OK = Reply(250, "2.0.0", "OK")
SENDER_OK = Reply(250, "2.1.0", "Sender OK")
RECIPIENT_OK = Reply(250, "2.1.5", "Recipient OK")
RESET_OK = Reply(250, "2.0.0", "Flushed")
QUEUED = Reply(250, "2.0.0", "Message accepted")
START_DATA = Reply(354, None, "End data with <CR><LF>.<CR><LF>")
READY_FOR_TLS = Reply(220, "2.0.0", "Ready to start TLS")
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
VRFY_CANNOT = Reply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery")
HELP = Reply(
    214,
    "2.0.0",
    ("Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY STARTTLS AUTH", "See RFC 5321"),
)

# -- transient
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing connection")
IDLE_TIMEOUT = Reply(421, "4.4.2", "Idle timeout, closing connection")
SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down, closing connection")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
LOCAL_ERROR = Reply(451, "4.3.0", "Local error in processing, try again later")
TLS_UNAVAILABLE = Reply(454, "4.7.0", "TLS not available")
# RFC 3463 X.4.6 "routing loop detected": an alias cycle is a configuration error the postmaster can
# fix, so the sender is told to retry rather than that the address does not exist.
ALIAS_LOOP = Reply(451, "4.4.6", "Alias loop for this address, try again later")

# -- permanent: syntax and sequence (these count against the bad-command budget)
UNRECOGNIZED = Reply(500, "5.5.1", "Command unrecognized")
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")
INVALID_UTF8 = Reply(500, "5.5.2", "Invalid UTF-8 in command")
CONTROL_CHARACTER = Reply(501, "5.5.2", "Control character (CR, LF, NUL...) in command line")
SYNTAX_ERROR = Reply(501, "5.5.4", "Syntax error in parameters or arguments")
BAD_SENDER_SYNTAX = Reply(501, "5.1.7", "Bad sender address syntax")
BAD_RECIPIENT_SYNTAX = Reply(501, "5.1.3", "Bad recipient address syntax")
BAD_BASE64 = Reply(501, "5.5.2", "Invalid base64 data")
AUTH_CANCELLED = Reply(501, "5.0.0", "Authentication cancelled")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")
BAD_SEQUENCE = Reply(503, "5.5.1", "Bad sequence of commands")
ALREADY_AUTHENTICATED = Reply(503, "5.5.1", "Already authenticated")
UNKNOWN_MECHANISM = Reply(504, "5.5.4", "Unrecognized authentication mechanism")
UNKNOWN_PARAMETER = Reply(555, "5.5.4", "Unsupported MAIL/RCPT parameter")
NO_VALID_RECIPIENTS = Reply(554, "5.5.1", "No valid recipients")

# -- permanent: policy
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
TLS_REQUIRED = Reply(530, "5.7.0", "Must issue a STARTTLS command first")
AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
NON_ASCII_ADDRESS = Reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
NO_SUCH_USER = Reply(550, "5.1.1", "No such user here")
RELAY_DENIED = Reply(554, "5.7.1", "Relay access denied")
SENDER_NOT_OWNED = Reply(553, "5.7.1", "Sender address not owned by authenticated user")
FROM_NOT_OWNED = Reply(550, "5.7.1", "From: header address not owned by authenticated user")
