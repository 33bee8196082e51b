"""The IMAP command table: every parsed command has a handler, allowed in the RFC 9051 §3 states."""

from __future__ import annotations

import typing

import pytest

from surat.imapd.dispatch import COMMANDS
from surat.imapd.state import State
from surat.proto.imap import commands as c

NOT_AUTH = State.NOT_AUTHENTICATED
AUTH = State.AUTHENTICATED
SELECTED = State.SELECTED


def test_every_command_has_a_handler() -> None:
    assert set(typing.get_args(c.Command)) == set(COMMANDS)


def test_no_command_runs_after_logout() -> None:
    assert all(State.LOGOUT not in states for _, _, states in COMMANDS.values())


@pytest.mark.parametrize(
    ("command", "allowed"),
    [
        (c.Capability, {NOT_AUTH, AUTH, SELECTED}),
        (c.Noop, {NOT_AUTH, AUTH, SELECTED}),
        (c.Logout, {NOT_AUTH, AUTH, SELECTED}),
        (c.StartTLS, {NOT_AUTH}),
        (c.Login, {NOT_AUTH}),
        (c.Authenticate, {NOT_AUTH}),
        (c.Enable, {AUTH}),  # RFC 5161 §3.1
        (c.Select, {AUTH, SELECTED}),
        (c.List, {AUTH, SELECTED}),
        (c.Append, {AUTH, SELECTED}),
        (c.Idle, {AUTH, SELECTED}),
        (c.Fetch, {SELECTED}),
        (c.Store, {SELECTED}),
        (c.Expunge, {SELECTED}),
        (c.UidExpunge, {SELECTED}),
        (c.Close, {SELECTED}),
        (c.Unselect, {SELECTED}),
        (c.SearchCommand, {SELECTED}),
    ],
)
def test_states(command: type, allowed: set[State]) -> None:
    assert COMMANDS[command][2] == allowed
