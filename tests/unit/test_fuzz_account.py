"""Fuzz: what users and DNS hand the account pages and `surat dns --check`: app password names are
stored cleaned or refused with AppPasswordNameError; any published record, of any type, compares to
a check status and never raises."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import fuzz_settings
from surat.apppasswords import AppPasswordNameError, check_name
from surat.dnscheck import CheckStatus, check_record
from surat.dnsrecords import DnsRecord
from surat.store.base import MAX_APP_PASSWORD_NAME

pytestmark = pytest.mark.fuzz

_EXPECTED = (
    DnsRecord("example.test.", "TXT", '"v=spf1 mx -all"', "SPF"),
    DnsRecord("_dmarc.example.test.", "TXT", '"v=DMARC1; p=quarantine; rua=mailto:p@example.test"', "DMARC"),
    DnsRecord("example.test.", "MX", "10 mail.example.test.", "MX"),
    DnsRecord("_imaps._tcp.example.test.", "SRV", "0 1 993 mail.example.test.", "SRV"),
    DnsRecord("autoconfig.example.test.", "CNAME", "mail.example.test.", "CNAME"),
)
# Pieces of record texts, valid and not: quotes, escapes, tags, names, numbers, controls.
_PIECES = st.sampled_from(
    ['"', "\\", "\\0", ";", " ", "v=", "spf1", "DMARC1", "p=", "mx", "-all", "10", "0", "65536",
     "mail.example.test.", ".", "..", "xn--", "\x00", "é", "\t", "a" * 70, "1 1 993"]
)  # fmt: skip


class _Published:
    def __init__(self, texts: list[str]) -> None:
        self.texts = texts

    async def presentation(self, name: str, rdtype: str) -> list[str]:
        return self.texts


@fuzz_settings()
@given(st.text(max_size=200))
def test_app_password_names_are_cleaned_or_refused(name: str) -> None:
    try:
        cleaned = check_name(name)
    except AppPasswordNameError:
        return
    assert cleaned == name.strip() and 0 < len(cleaned) <= MAX_APP_PASSWORD_NAME and cleaned.isprintable()


@fuzz_settings()
@given(st.sampled_from(_EXPECTED), st.lists(st.lists(_PIECES, max_size=12).map("".join), max_size=4))
def test_any_published_text_compares_to_a_status(record: DnsRecord, texts: list[str]) -> None:
    check = asyncio.run(check_record(record, _Published(texts)))
    assert check.status in (CheckStatus.OK, CheckStatus.MISSING, CheckStatus.DIFFERENT)
    assert check.status is not CheckStatus.DIFFERENT or check.published
