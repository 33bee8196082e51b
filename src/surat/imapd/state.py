"""Session states (RFC 9051 §3) and what a command handler returns."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from surat.proto.imap.writer import ResponseCode

__all__ = ["ANY_STATE", "AUTHENTICATED_STATES", "SELECTED_ONLY", "Done", "State"]


class State(enum.Enum):
    NOT_AUTHENTICATED = "not_authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


ANY_STATE = frozenset({State.NOT_AUTHENTICATED, State.AUTHENTICATED, State.SELECTED})
AUTHENTICATED_STATES = frozenset({State.AUTHENTICATED, State.SELECTED})
SELECTED_ONLY = frozenset({State.SELECTED})


@dataclass(frozen=True, slots=True)
class Done:
    """A handler's success: the tagged OK's code and text; ``after`` runs once that line is on the wire
    (STARTTLS starts TLS, COMPRESS starts deflate, LOGOUT closes)."""

    text: str | None = None
    code: ResponseCode | None = None
    after: Callable[[], Awaitable[None]] | None = None
