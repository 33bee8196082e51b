"""Fuzz: the SNI name index (surat.net.tlscontexts) answers any server name a client sends with a
certificate or None (the default), in two dictionary lookups, and never raises inside the handshake."""

from __future__ import annotations

import ssl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import fuzz_settings
from surat.net.tlscontexts import _NameIndex

pytestmark = pytest.mark.fuzz

EXACT, WILDCARD = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
INDEX = _NameIndex()
INDEX.add("mail.one.test", EXACT, "tls.certificates[0]")
INDEX.add("*.two.test", WILDCARD, "tls.certificates[1]")

_PIECES = st.sampled_from(
    ["mail", "one", "two", "test", ".", "*", "", "MAIL", "xn--bcher-kva", "\x00", "é", "-"]
)


@fuzz_settings()
@given(st.one_of(st.text(max_size=300), st.lists(_PIECES, max_size=12).map("".join)))
def test_any_server_name_gets_a_certificate_or_the_default(server_name: str) -> None:
    found = INDEX.find(server_name)
    assert found is None or found is EXACT or found is WILDCARD
    name = server_name.lower().rstrip(".")
    if found is EXACT:
        assert name == "mail.one.test"
    if found is WILDCARD:
        label, _, parent = name.partition(".")
        assert parent == "two.test" and label  # RFC 6125 §6.4.3: exactly one whole left-most label


@fuzz_settings()
@given(st.text(alphabet=st.characters(blacklist_characters="."), min_size=1, max_size=63))
def test_every_single_label_under_the_wildcard_matches(label: str) -> None:
    assert INDEX.find(f"{label}.two.test") is WILDCARD
    assert INDEX.find(f"{label}.x.two.test") is None
