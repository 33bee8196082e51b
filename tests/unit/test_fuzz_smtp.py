"""Fuzz: the SMTP server engine and envelope addresses.

Random, mutated and chunk-split command streams give events and well-formed replies (never an
exception), the same whatever the split; addresses parse or raise their documented SMTPSyntaxError.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import fuzz_settings
from surat.proto.smtp.address import (
    SMTPSyntaxError,
    has_controls,
    parse_mail_params,
    parse_path,
    parse_rcpt_params,
)
from surat.proto.smtp.server import MAX_AUTH_LINE, MAX_MAIL_RCPT_LINE
from unit.test_smtp_engine import MX, SUBMISSION, feed

pytestmark = pytest.mark.fuzz

_REPLY_LINE = re.compile(rb"[2-5][0-9]{2}[ -][^\r\n]*\r\n")

_TOKENS = st.sampled_from(
    [
        b"EHLO client.example\r\n",
        b"HELO x\r\n",
        b"MAIL FROM:<a@example.org>\r\n",
        b"MAIL FROM:<>\r\n",
        b"MAIL FROM:<a@[IPv6:::1%\rX-Evil: 1]>\r\n",
        b"MAIL FROM:<a@[192.0.2.1]> SIZE=100 BODY=8BITMIME SMTPUTF8\r\n",
        b"RCPT TO:<b@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@example.test\r\n",
        b"RCPT TO:<Postmaster>\r\n",
        b"DATA\r\n",
        b"BDAT 5\r\n",
        b"BDAT 0 LAST\r\n",
        b"BDAT 99999999999999999999\r\n",
        b"RSET\r\n",
        b"NOOP\r\n",
        b"VRFY x\r\n",
        b"QUIT\r\n",
        b"STARTTLS\r\n",
        b"AUTH PLAIN\r\n",
        b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n",
        b"AUTH SCRAM-SHA-256 biwsbj11c2VyLHI9YWJj\r\n",
        b"*\r\n",
        b"=\r\n",
        b"Subject: x\r\n\r\nbody\r\n",
        b".\r\n",
        b"\r\n.\r\n",
        b"..\r\n",
        b"\n.\n",
        b"\r",
        b"\n",
        b"\x00",
        b"\xff\xfe",
        b" ",
        b"<",
        b">",
        b"@",
        b"x" * 600,
        b"y" * MAX_MAIL_RCPT_LINE,
    ]
)


def _check_output(output: bytes) -> None:
    # every reply line is "code SP/- text CRLF": nothing the client sent breaks the framing
    assert _REPLY_LINE.sub(b"", output) == b"", output[-200:]


@fuzz_settings()
@given(st.lists(_TOKENS, max_size=30).map(b"".join), st.lists(st.integers(0, 4000), max_size=6))
def test_command_streams_give_events_and_wellformed_replies(stream: bytes, cuts: list[int]) -> None:
    whole = feed([stream], MX)
    _check_output(whole.output)
    offsets = sorted({min(cut, len(stream)) for cut in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *offsets], [*offsets, len(stream)], strict=True)]
    split = feed(pieces, MX)
    assert split.events == whole.events
    assert split.output == whole.output
    # RFC 5321 §4.5.3.1: the engine holds no more than a line's worth of unconsumed input
    assert split.engine.buffered <= max(MAX_AUTH_LINE, MAX_MAIL_RCPT_LINE) + len(stream)


@fuzz_settings()
@given(st.binary(max_size=2000))
def test_random_bytes_after_a_greeting(noise: bytes) -> None:
    for settings in (MX, SUBMISSION):
        run = feed([b"EHLO client.example\r\n" + noise], settings)
        _check_output(run.output)


_ADDRESS_ALPHABET = st.sampled_from(
    [
        *'<>@.:,[]"\\ %+-_=!a1Zé\r\n\x00\t',
        "IPv6:",
        "::",
        "ffff",
        "192.0.2.1",
        "example.org",
        "xn--",
        "@relay:",
    ]
)


@fuzz_settings()
@given(st.lists(_ADDRESS_ALPHABET, max_size=40).map("".join), st.booleans(), st.booleans())
def test_paths_parse_or_raise_their_error(text: str, sender: bool, utf8: bool) -> None:
    try:
        address, rest = parse_path(text, sender=sender, utf8=utf8, postmaster_ok=not sender)
    except SMTPSyntaxError as exc:
        assert exc.reply.code == 501
        return
    assert rest == "" or rest.startswith(" ")
    if address is not None:
        # nothing that parsed can carry a line break or NUL into a header field
        assert not has_controls(str(address))
        assert (
            address.domain == "" or address.domain.startswith("[") or address.domain == address.domain.lower()
        )


@fuzz_settings()
@given(
    st.lists(
        st.sampled_from(
            [
                *"=+ ;,:",
                "SIZE",
                "BODY",
                "RET",
                "ENVID",
                "AUTH",
                "NOTIFY",
                "ORCPT",
                "SMTPUTF8",
                "8BITMIME",
                "FULL",
                "NEVER",
                "rfc822",
                "+2B",
                "+ZZ",
                "1",
                "\x00",
            ]
        ),
        max_size=20,
    ).map("".join)
)
def test_parameters_parse_or_raise_their_error(text: str) -> None:
    for parse in (parse_mail_params, parse_rcpt_params):
        try:
            parse(text)
        except SMTPSyntaxError as exc:
            assert exc.reply.code in (501, 555)
