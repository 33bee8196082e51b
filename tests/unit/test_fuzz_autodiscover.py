"""Fuzz: any body given to the Autodiscover parser yields an address or AutodiscoverRequestError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import fuzz_settings
from surat.web.autoconfig import AutodiscoverRequestError, parse_autodiscover_request

pytestmark = pytest.mark.fuzz

_PIECES = st.sampled_from(
    [b"<Autodiscover>", b"</Autodiscover>", b"<Request>", b"</Request>", b"<EMailAddress>",
     b"</EMailAddress>", b"a@b.example", b"<!DOCTYPE a [", b"<!ENTITY x 'y'>", b"]>", b"&x;", b"&amp;",
     b"<?xml version='1.0'?>", b" xmlns='urn:x'", b"\x00", b"\xff", b"@", b" ", b"<", b">", b"/"]
)  # fmt: skip


@fuzz_settings()
@given(st.lists(_PIECES, max_size=40).map(b"".join))
def test_bodies_parse_or_raise_their_error(body: bytes) -> None:
    try:
        address = parse_autodiscover_request(body)
    except AutodiscoverRequestError:
        return
    assert address.count("@") == 1 and address == address.strip() and " " not in address
