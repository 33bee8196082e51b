"""surat.dnsrecords: the records `surat dns` prints, checked as data and as a parsed zone file."""

from __future__ import annotations

from datetime import UTC, datetime

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rdtypes.IN.SRV
import dns.zone
import pytest

from surat.delivery.dkim import DkimKey, generate_keys
from surat.dnsrecords import PRODUCTION_PORTS, DnsRecord, format_records, records_for


def _by(records: tuple[DnsRecord, ...], name: str, rtype: str) -> list[str]:
    return [r.value for r in records if r.name == name and r.type == rtype]


def test_mx_spf_dmarc_values() -> None:
    rs = records_for("example.com", "mail.example.com")
    assert rs.domain == "example.com"
    assert rs.hostname == "mail.example.com"
    assert _by(rs.records, "example.com.", "MX") == ["10 mail.example.com."]
    assert _by(rs.records, "example.com.", "TXT") == ['"v=spf1 mx -all"']
    # The HELO name gets its own SPF record, for bounces (empty MAIL FROM).
    assert _by(rs.records, "mail.example.com.", "TXT") == ['"v=spf1 a -all"']
    assert _by(rs.records, "_dmarc.example.com.", "TXT") == [
        '"v=DMARC1; p=quarantine; rua=mailto:postmaster@example.com"'
    ]
    assert _by(rs.records, "_smtp._tls.example.com.", "TXT") == [
        '"v=TLSRPTv1; rua=mailto:postmaster@example.com"'
    ]
    assert _by(rs.records, "_mta-sts.example.com.", "TXT") == ['"v=STSv1; id=1"']
    optional = {r.name for r in rs.records if r.optional}
    assert optional == {"mta-sts.example.com.", "_mta-sts.example.com.", "_smtp._tls.example.com."}


def test_web_host_records_need_the_https_listener() -> None:
    rs = records_for("example.com", "mail.example.com", {**PRODUCTION_PORTS, "https": 4443})
    cnames = {r.name: r.value for r in rs.records if r.type == "CNAME"}
    assert cnames == {
        "autoconfig.example.com.": "mail.example.com.",
        "autodiscover.example.com.": "mail.example.com.",
        "mta-sts.example.com.": "mail.example.com.",
    }
    assert _by(rs.records, "_autodiscover._tcp.example.com.", "SRV") == ["0 1 4443 mail.example.com."]
    assert "Surat serves the policy" in " ".join(rs.notes["MTA-STS and TLS reporting (optional)"])
    without = records_for("example.com", "mail.example.com", {"smtp": 25, "imaps": 993})
    assert not [r for r in without.records if r.type == "CNAME" or "autodiscover" in r.name]
    assert "[listen] https" in " ".join(without.notes["Client autoconfiguration"])


def test_dmarc_note_says_why_quarantine() -> None:
    rs = records_for("example.com", "mail.example.com")
    text = " ".join(rs.notes["DMARC"])
    assert "quarantine" in text
    assert "DKIM" in text
    assert "postmaster@example.com" in text
    # Without keys at hand the DKIM section says where they are instead of printing nothing.
    assert "--config" in " ".join(rs.notes["DKIM"])
    assert "domain add" in " ".join(
        records_for("example.com", "mail.example.com", dkim_keys=()).notes["DKIM"]
    )


def test_srv_records_prefer_implicit_tls_and_imap() -> None:
    rs = records_for("example.com", "mail.example.com")
    srv = {r.name: r.value for r in rs.records if r.type == "SRV"}
    assert srv == {
        "_submissions._tcp.example.com.": "0 1 465 mail.example.com.",
        "_submission._tcp.example.com.": "10 1 587 mail.example.com.",
        "_imaps._tcp.example.com.": "0 1 993 mail.example.com.",
        "_imap._tcp.example.com.": "10 1 143 mail.example.com.",
        "_pop3s._tcp.example.com.": "20 1 995 mail.example.com.",
        "_pop3._tcp.example.com.": "30 1 110 mail.example.com.",
        "_autodiscover._tcp.example.com.": "0 1 443 mail.example.com.",  # Outlook, on https
    }


def test_srv_follows_configured_ports_and_omits_disabled_roles() -> None:
    rs = records_for("example.com", "mx.example.com", {"smtp": 25, "submissions": 4650, "imaps": 9930})
    srv = {r.name: r.value for r in rs.records if r.type == "SRV"}
    assert srv == {
        "_submissions._tcp.example.com.": "0 1 4650 mx.example.com.",
        "_imaps._tcp.example.com.": "0 1 9930 mx.example.com.",
    }


def test_hostname_equal_to_domain_gets_one_spf_record() -> None:
    rs = records_for("Example.COM.", "example.com")
    assert _by(rs.records, "example.com.", "TXT") == ['"v=spf1 mx -all"']
    assert _by(rs.records, "example.com.", "MX") == ["10 example.com."]


def test_long_txt_is_split_into_255_octet_strings() -> None:
    rs = records_for("example.com", "mail.example.com", sts_id="x" * 300)
    value = _by(rs.records, "_mta-sts.example.com.", "TXT")[0]
    parts = value.split('" "')
    assert len(parts) == 2
    assert len(parts[0].lstrip('"')) == 255


@pytest.mark.parametrize(
    ("domain", "hostname"),
    [("example.com", "mail.example.com"), ("xn--bcher-kva.example", "mx.xn--bcher-kva.example")],
)
def test_formatted_text_is_a_valid_zone_file(domain: str, hostname: str) -> None:
    text = format_records(records_for(domain, hostname, sts_id="20240101"), ttl=300)
    zone = dns.zone.from_text(text, origin=domain, relativize=False, check_origin=False)
    origin = dns.name.from_text(domain)
    mx = zone.find_rdataset(origin, dns.rdatatype.MX)
    assert mx.ttl == 300
    assert [(r.preference, r.exchange.to_text()) for r in mx] == [(10, hostname + ".")]
    spf = zone.find_rdataset(origin, dns.rdatatype.TXT)
    assert [b"".join(r.strings) for r in spf if isinstance(r, dns.rdtypes.ANY.TXT.TXT)] == [b"v=spf1 mx -all"]
    dmarc = zone.find_rdataset(dns.name.from_text("_dmarc." + domain), dns.rdatatype.TXT)
    assert [b"".join(r.strings) for r in dmarc if isinstance(r, dns.rdtypes.ANY.TXT.TXT)] == [
        f"v=DMARC1; p=quarantine; rua=mailto:postmaster@{domain}".encode()
    ]
    srv = zone.find_rdataset(dns.name.from_text("_imaps._tcp." + domain), dns.rdatatype.SRV)
    assert [
        (r.priority, r.weight, r.port, r.target.to_text())
        for r in srv
        if isinstance(r, dns.rdtypes.IN.SRV.SRV)
    ] == [(0, 1, PRODUCTION_PORTS["imaps"], hostname + ".")]
    # Every record of the set is in the zone, nothing more.
    count = sum(len(rdataset) for _, rdataset in zone.iterate_rdatasets())
    assert count == len(records_for(domain, hostname).records)


def test_formatted_text_has_comments_for_every_section() -> None:
    text = format_records(records_for("example.com", "mail.example.com"))
    for heading in ("MX", "SPF", "DKIM", "DMARC", "Client autoconfiguration", "MTA-STS"):
        assert f"; --- {heading}" in text
    assert "PTR" in text  # reverse DNS is not ours to publish, but must be explained
    assert "/.well-known/mta-sts.txt" in text


@pytest.fixture(scope="module")
def keys() -> tuple[DkimKey, DkimKey]:
    return generate_keys("example.com", datetime(2026, 11, 26, tzinfo=UTC))


def test_dkim_records_parse_as_a_zone_and_carry_each_key(keys: tuple[DkimKey, DkimKey]) -> None:
    rs = records_for("example.com", "mail.example.com", dkim_keys=keys)
    names = [r.name for r in rs.records if r.section == "DKIM"]
    assert names == ["s20261126r._domainkey.example.com.", "s20261126e._domainkey.example.com."]
    zone = dns.zone.from_text(format_records(rs), origin="example.com", relativize=False, check_origin=False)
    for key in keys:
        (rdata,) = zone.find_rdataset(dns.name.from_text(key.record_name), dns.rdatatype.TXT)
        assert isinstance(rdata, dns.rdtypes.ANY.TXT.TXT)
        # RFC 1035 §3.3.14: no character-string over 255 octets; joined, they are the record.
        assert all(len(part) <= 255 for part in rdata.strings)
        assert b"".join(rdata.strings).decode() == key.txt_record
    rsa, ed25519 = (zone.find_rdataset(dns.name.from_text(k.record_name), dns.rdatatype.TXT) for k in keys)
    assert len(next(iter(rsa)).strings) == 2  # RSA-2048 does not fit one string
    assert len(next(iter(ed25519)).strings) == 1
    assert b"k=ed25519" in b"".join(next(iter(ed25519)).strings)
    assert "RSA-2048 and Ed25519" in " ".join(rs.notes["DKIM"])
    count = sum(len(rdataset) for _, rdataset in zone.iterate_rdatasets())
    assert count == len(rs.records)
