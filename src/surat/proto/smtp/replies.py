"""SMTP replies (RFC 5321 §4.2) with enhanced status codes (RFC 2034, RFC 3463).

The SMTP vocabulary in one place: every reply the server sends, every outcome the outbound client and
the queue record for a recipient (and quote in DSNs), is a `Reply` named or made here, so that the
engines, the shells, the queue and the tests agree on them byte for byte. Only replies parsed off the
wire (`proto.smtp.client`) are built elsewhere.
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
# RFC 8689 §4.1: REQUIRETLS may only be given in a TLS session (RFC 3463/5248 X.7.10: encryption
# needed); it is not even advertised before STARTTLS.
REQUIRETLS_NEEDS_TLS = Reply(530, "5.7.10", "REQUIRETLS needs a TLS session: STARTTLS first")
AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
NON_ASCII_ADDRESS = Reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
NO_SUCH_USER = Reply(550, "5.1.1", "No such user here")
RELAY_DENIED = Reply(554, "5.7.1", "Relay access denied")
SENDER_NOT_OWNED = Reply(553, "5.7.1", "Sender address not owned by authenticated user")
FROM_NOT_OWNED = Reply(550, "5.7.1", "From: header address not owned by authenticated user")


# Submission and MX sessions (smtpd)
FROM_MISSING = Reply(550, "5.7.1", "Message has no usable From: header")
FROM_NOT_SINGLE = Reply(550, "5.7.1", "Message must have exactly one From: header field")
FROM_UNREADABLE = Reply(550, "5.7.1", "From: header field cannot be parsed")
TOO_MANY_AUTH_FAILURES = Reply(421, "4.7.0", "Too many authentication failures")
# RFC 4954 §6: 454 4.7.0 temporary authentication failure; the client's address is refused for now.
AUTH_BLOCKED = Reply(454, "4.7.0", "Too many failed authentication attempts from your address, try later")
# RFC 5321 §3.1: a server may answer the connection with 554 instead of its greeting.
EARLY_TALKER = Reply(554, "5.5.0", "Protocol error: client sent data before the greeting")
# The session reached [limits] smtp_session_deadline (RFC 5321 §4.2.5: 421 closes the channel).
SESSION_TOO_LONG = Reply(421, "4.4.2", "Session time limit reached, closing connection")
HARVESTING = Reply(421, "4.7.0", "Too many unknown recipients, closing connection")
INVALID_HELO = Reply(501, "5.5.2", "Invalid domain name in EHLO/HELO")


# Inbound authentication (smtpd)
DMARC_REJECT = Reply(550, "5.7.1", "Message rejected by the sender domain's DMARC policy")


# Store errors at the end of DATA (smtpd)
# Temporary: the user can make room, and the sender retries meanwhile (issue 3: 452 4.2.2).
MAILBOX_FULL = Reply(452, "4.2.2", "Mailbox full, try again later")
INSUFFICIENT_STORAGE = Reply(452, "4.3.1", "Insufficient system storage")


# Sending limits (smtpd)
# RFC 3463 X.7.1: delivery not authorized; 4yz: try again later.
SENDING_LIMIT_MESSAGES = Reply(
    451, "4.7.1", "Sending limit reached: too many messages in the last hour, try later"
)
SENDING_LIMIT_RECIPIENTS = Reply(
    451, "4.7.1", "Sending limit reached: too many recipients in the last hour, try later"
)


# Outcomes the outbound client records itself (never sent: each stands for a reply the server did
# not give), per recipient in the queue and quoted in DSNs.
CONNECTION_LOST = Reply(451, "4.4.2", "Connection lost")
TIMED_OUT = Reply(451, "4.4.2", "Timeout waiting for the server")
BAD_REPLY = Reply(451, "4.5.0", "Malformed reply from the server")
TLS_FAILED = Reply(451, "4.7.5", "TLS handshake failed")
TLS_NOT_OFFERED = Reply(451, "4.7.10", "TLS required but not offered by the server")
AUTH_NEEDS_TLS = Reply(451, "4.7.10", "Not sending credentials without TLS")
AUTH_NOT_OFFERED = Reply(451, "4.7.0", "No usable AUTH mechanism offered by the server")
NEEDS_SMTPUTF8 = Reply(550, "5.6.7", "Message needs SMTPUTF8, which the server does not support")
ADDRESS_NEEDS_SMTPUTF8 = Reply(
    553, "5.6.7", "Non-ASCII address needs SMTPUTF8, which the server does not support"
)
NEEDS_8BITMIME = Reply(554, "5.6.3", "8-bit message, and the server does not support 8BITMIME")
CLOSED_BEFORE_TRANSACTION = Reply(451, "4.4.2", "Connection closed before the transaction")
# RFC 8689 §4.2 and §6: a REQUIRETLS message is never handed to a next hop that does not take
# REQUIRETLS; X.7.30 "REQUIRETLS support required", permanent (it bounces at once).
REQUIRETLS_NOT_OFFERED = Reply(550, "5.7.30", "REQUIRETLS support required, and the server does not offer it")


# Routing outbound mail (delivery.mx): recorded per recipient, quoted in DSNs
# RFC 7505 §4.2 / RFC 7504: 556 + X.1.10 for a domain that publishes a null MX.
NULL_MX = Reply(556, "5.1.10", "Recipient domain does not accept mail (null MX)")
DOMAIN_NOT_FOUND = Reply(550, "5.1.2", "Recipient domain does not exist")
DNS_TEMPORARY = Reply(451, "4.4.3", "Temporary DNS failure looking up the recipient domain")
MAIL_LOOP = Reply(550, "5.4.6", "Mail for this domain loops back to this server")
NO_ADDRESS = Reply(550, "5.4.4", "No address found for the recipient domain's mail servers")
# RFC 3463 §3.5 X.4.4 "Unable to route". Permanent, like Postfix's "mail for ... loops back to myself"
# (5.4.6) for an MX that resolves to one of its own addresses: an address literal never changes, and
# an MX pointing at private space is not a passing failure either. Retrying would keep the bounce of
# a forged sender (the review's "[IPv6:::1]") in the queue for days for nothing.
REFUSED_DESTINATION = Reply(
    550, "5.4.4", "Recipient domain's mail servers are at private, loopback or this server's addresses"
)


# The queue's local outcomes (delivery.queue)
LOCAL_LOOP = Reply(550, "5.4.6", "Too many Received header fields: mail loop")
NO_SUCH_LOCAL_USER = Reply(550, "5.1.1", "No such local recipient")
LOCAL_MAILBOX_FULL = Reply(452, "4.2.2", "Mailbox full")
INTERNAL_ERROR = Reply(451, "4.3.0", "Local error in processing")
DELIVERED_LOCALLY = Reply(250, "2.0.0", "Delivered locally")


# Replies with variable text, made where they are needed (the text is client- or DNS-controlled in
# places: Reply.to_bytes refuses line breaks in it).


def greeting(hostname: str) -> Reply:
    """RFC 5321 §4.2: the 220 greeting (no enhanced code: RFC 2034 §3)."""
    return Reply(220, None, f"{hostname} ESMTP Surat")


def ehlo(lines: tuple[str, ...]) -> Reply:
    """RFC 5321 §4.1.1.1: the EHLO (our name, then the keywords) or HELO (our name) answer."""
    return Reply(250, None, lines if len(lines) > 1 else lines[0])


def closing(hostname: str) -> Reply:
    """RFC 5321 §4.1.1.10: the answer to QUIT."""
    return Reply(221, "2.0.0", f"{hostname} closing connection")


def chunk_received(size: int) -> Reply:
    """RFC 3030 §2: the answer to a BDAT chunk that is not the last."""
    return Reply(250, "2.0.0", f"{size} octets received")


def queued_as(queue_id: str) -> Reply:
    return Reply(250, "2.0.0", f"Message accepted, queued as {queue_id}")


def dnsbl_listed(peer: str, zone: str) -> Reply:
    """RFC 5321 §3.1: 554 instead of the greeting, naming the list (as Postfix and Exim do)."""
    return Reply(554, "5.7.1", f"Service unavailable; client [{peer}] blocked using {zone}")


# The longest Sieve reject reason quoted in a reply (RFC 5321 §4.5.3.1.5: a reply line is at most 512
# octets with its code; the rest of a longer reason is cut).
MAX_REJECT_REASON = 200


def sieve_rejected(reason: str) -> Reply:
    """RFC 5429 §2.1/§2.2: the recipient's Sieve script refused the message (reject/ereject) while the
    session is open: 550 5.7.1 with its reason, as one line of printable ASCII (a reply is ASCII,
    RFC 5321 §2.4; other characters become "?"), at most MAX_REJECT_REASON characters."""
    words = " ".join(reason.split())
    text = "".join(c if " " <= c <= "~" else "?" for c in words)[:MAX_REJECT_REASON].rstrip()
    return Reply(
        550,
        "5.7.1",
        f"Rejected by the recipient's filter: {text}" if text else "Rejected by the recipient's filter",
    )


def too_big_for_server(size: int, limit: int) -> Reply:
    """RFC 1870 §6: the server announced SIZE below the message's size (outbound client)."""
    return Reply(552, "5.3.4", f"Message size {size} exceeds the server's limit of {limit}")


def unexpected_reply(code: int) -> Reply:
    """A positive reply the outbound session could not go on with (RFC 3463 X.5.0: protocol error)."""
    return Reply(BAD_REPLY.code, BAD_REPLY.enhanced, f"Unexpected reply {code} from the server")


def timed_out_in(phase: str) -> Reply:
    """TIMED_OUT, naming the phase of the outbound session that timed out."""
    return Reply(TIMED_OUT.code, TIMED_OUT.enhanced, f"Timeout in phase {phase}")


def tls_failed_because(reason: str) -> Reply:
    """RFC 3463 X.7.5 cryptographic failure: the handshake failed or the certificate was refused."""
    return Reply(451, "4.7.5", f"TLS handshake failed: {reason}")


def tls_policy_unmet(policy: str, where: str, reason: str) -> Reply:
    """A transport security policy (MTA-STS RFC 8461 §5, DANE RFC 7672, require_tls_domains) was not
    met: the mail waits (RFC 3463 X.7.5) and bounces with this text if it never is."""
    return Reply(451, "4.7.5", f"{policy} not satisfied by {where}: {reason}")


def requiretls_unmet(domain: str, reason: str) -> Reply:
    """RFC 8689 §4.2.1: a REQUIRETLS message whose destination cannot be reached with the required
    security (no DNSSEC-validated MX and no MTA-STS policy) is returned (X.7.30)."""
    return Reply(550, "5.7.30", f"REQUIRETLS support required: {domain}: {reason}")


def cannot_connect(where: str, reason: str) -> Reply:
    """RFC 3463 X.4.1: no answer from the host (outbound)."""
    return Reply(451, "4.4.1", f"Cannot connect to {where}: {reason}")


def connection_lost(reason: str) -> Reply:
    return Reply(CONNECTION_LOST.code, CONNECTION_LOST.enhanced, f"Connection lost: {reason}")


def no_address_for_host(kind: str, host: str) -> Reply:
    """RFC 3463 X.4.4: a mail server's name has no address (yet: temporary)."""
    return Reply(451, "4.4.4", f"No address for the {kind} host {host}")


def bad_address_literal(literal: str) -> Reply:
    return Reply(550, "5.1.2", f"Bad address literal {literal}")
