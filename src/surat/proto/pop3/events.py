"""POP3 events (commands the shell must answer), states and response codes."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class State(enum.Enum):
    """RFC 1939 §3 session states, plus the end of the session."""

    AUTHORIZATION = "authorization"
    TRANSACTION = "transaction"
    UPDATE = "update"  # after QUIT in TRANSACTION; the shell expunges, then replies
    CLOSED = "closed"


class RespCode(enum.Enum):
    """Extended response codes, written "[CODE]" after -ERR (RFC 2449 §8)."""

    LOGIN_DELAY = "LOGIN-DELAY"  # RFC 2449 §8.1.1: logged in too recently
    IN_USE = "IN-USE"  # RFC 2449 §8.1.2: the maildrop is locked by another session
    SYS_TEMP = "SYS/TEMP"  # RFC 3206 §4: a transient system problem
    SYS_PERM = "SYS/PERM"  # RFC 3206 §4: a system problem that will not go away by retrying
    AUTH = "AUTH"  # RFC 3206 §5: credentials or an authentication policy problem
    UTF8 = "UTF8"  # RFC 6856 §5: the message needs UTF-8 mode


class NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA = NeedData.NEED_DATA
"""`next_event()` has no complete command: feed more bytes."""


@dataclass(frozen=True, slots=True)
class User:
    name: str


@dataclass(frozen=True, slots=True)
class Pass:
    user: str  # the name of the USER command this PASS follows (RFC 1939 §7)
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Auth:
    """RFC 5034 §4 AUTH. The shell runs the mechanism (surat.proto.sasl) and answers with
    `auth_challenge`, `ok` (success) or `login_failed`."""

    mechanism: str  # upper-cased, one of the configured mechanisms
    initial_response: bytes | None = field(repr=False)  # base64-decoded; b"" for "="; None if absent


@dataclass(frozen=True, slots=True)
class AuthResponse:
    """A client line answering an `auth_challenge`, base64-decoded."""

    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class AuthCancelled:
    """The AUTH exchange ends without a result: the client sent "*", a line that is not base64,
    or a line over the limit. RFC 5034 §4: the server rejects the AUTH command with -ERR, so the
    shell drops its mechanism state and replies `err(...)` (the reason is suitable text)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Stls:
    """RFC 2595 §4. The engine already refused it when TLS is active or unavailable."""


@dataclass(frozen=True, slots=True)
class Capa:
    """RFC 2449 §5; answer with `capabilities()`."""


@dataclass(frozen=True, slots=True)
class Utf8:
    """RFC 6856 §2.1; `ok()` turns UTF-8 mode on."""


@dataclass(frozen=True, slots=True)
class Quit:
    """In AUTHORIZATION: reply and close. In TRANSACTION the engine is now in UPDATE: the shell
    removes the messages marked deleted, then replies `ok` or `err` (RFC 1939 §6); either closes."""


@dataclass(frozen=True, slots=True)
class Stat:
    pass


@dataclass(frozen=True, slots=True)
class List:
    msg: int | None  # None: the whole scan listing


@dataclass(frozen=True, slots=True)
class Retr:
    msg: int


@dataclass(frozen=True, slots=True)
class Dele:
    msg: int


@dataclass(frozen=True, slots=True)
class Noop:
    pass


@dataclass(frozen=True, slots=True)
class Rset:
    pass


@dataclass(frozen=True, slots=True)
class Top:
    msg: int
    lines: int  # body lines after the header section, >= 0


@dataclass(frozen=True, slots=True)
class Uidl:
    msg: int | None  # None: the whole unique-id listing


@dataclass(frozen=True, slots=True)
class Close:
    """The session is over (after QUIT, or when the error budget is spent): flush
    `data_to_send()` and close the connection. The only event that takes no reply."""

    reason: str


Command = (
    User
    | Pass
    | Auth
    | AuthResponse
    | AuthCancelled
    | Stls
    | Capa
    | Utf8
    | Quit
    | Stat
    | List
    | Retr
    | Dele
    | Noop
    | Rset
    | Top
    | Uidl
)
Event = Command | Close
