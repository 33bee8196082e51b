"""surat.message.address: the one address parser; `mailboxes` says whether a From parsed cleanly."""

from __future__ import annotations

import pytest

from surat.message.address import MISSING_DOMAIN, Address, Mailboxes, mailboxes, parse_address_list


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bob@example.test", Mailboxes(("bob@example.test",), clean=True)),
        ("Bob <bob@example.test>", Mailboxes(("bob@example.test",), clean=True)),
        (
            '"Bob, Jr." <bob@example.test>, a@b.example',
            Mailboxes(("bob@example.test", "a@b.example"), clean=True),
        ),
        ("bob@example.test (Bob <ceo@example.test>)", Mailboxes(("bob@example.test",), clean=True)),
        ('"ceo@example.test" <bob@example.test>', Mailboxes(("bob@example.test",), clean=True)),
        ('"a b"@example.test', Mailboxes(('"a b"@example.test',), clean=True)),
        ("a@[192.0.2.1]", Mailboxes(("a@[192.0.2.1]",), clean=True)),
        ("ünïcode@bücher.example", Mailboxes(("ünïcode@bücher.example",), clean=True)),  # RFC 6532
        # anything guessed is not clean
        ("bob@example.test ceo@example.test", Mailboxes((), clean=False)),
        ("Bob <bob@example.test", Mailboxes(("bob@example.test",), clean=False)),
        ("Name <a@one.example> <b@two.example>", Mailboxes(("a@one.example", "b@two.example"), clean=False)),
        ("bob", Mailboxes((), clean=False)),
        ("@example.test", Mailboxes((), clean=False)),
        ("undisclosed:;", Mailboxes((), clean=False)),  # a group is no mailbox-list
        ("team: bob@example.test;", Mailboxes(("bob@example.test",), clean=False)),
        ('"unclosed <bob@example.test>', Mailboxes((), clean=False)),
        ("bob@example.test (unclosed", Mailboxes(("bob@example.test",), clean=False)),
        ("<>", Mailboxes((), clean=False)),
        ("", Mailboxes((), clean=False)),
        ("bob@exa mple.test", Mailboxes(("bob@example.test",), clean=False)),
        ("bob . smith@example . test", Mailboxes(("bob.smith@example.test",), clean=True)),  # RFC 5322 §4.4
        ("bob@example.test;", Mailboxes(("bob@example.test",), clean=False)),
    ],
)
def test_mailboxes(value: str, expected: Mailboxes) -> None:
    assert mailboxes(value) == expected
    assert mailboxes(value.encode()) == expected


def test_the_lenient_list_is_what_imap_shows() -> None:
    assert parse_address_list(b"Bob <bob@example.test") == (Address("Bob", None, "bob", "example.test"),)
    assert parse_address_list("bob") == (Address(None, None, "bob", MISSING_DOMAIN),)
    assert parse_address_list(None) == ()
