"""The DNS records a domain hosted on Surat should publish, as pure functions.

`surat dns DOMAIN` and `surat quickstart` print `format_records(records_for(...))`. Nothing here
queries DNS; the output is for the operator to paste into a zone or a DNS provider's form.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from surat.delivery.dkim import DkimAlgorithm, DkimKey

DEFAULT_TTL = 3600

# RFC 6186 §3.1/RFC 8314 §5.1 service names, with the listener role that provides each.
# Lower priority is preferred (RFC 2782), so implicit TLS (RFC 8314 §3.3 asks clients to prefer it)
# gets 0 and STARTTLS 10; POP3 comes after IMAP (RFC 6186 §3.4 lets the domain say which it prefers).
_SRV_SERVICES: tuple[tuple[str, str, int], ...] = (
    ("_submissions", "submissions", 0),
    ("_submission", "submission", 10),
    ("_imaps", "imaps", 0),
    ("_imap", "imap", 10),
    ("_pop3s", "pop3s", 20),
    ("_pop3", "pop3", 30),
)

PRODUCTION_PORTS: Mapping[str, int] = {
    "smtp": 25,
    "submission": 587,
    "submissions": 465,
    "imap": 143,
    "imaps": 993,
    "pop3": 110,
    "pop3s": 995,
    "https": 443,
}


@dataclass(frozen=True, slots=True)
class DnsRecord:
    name: str  # fully qualified, with the trailing dot
    type: str  # "MX", "TXT", "SRV", ...
    value: str  # presentation format: TXT values quoted, host names with the trailing dot
    section: str  # the heading it is printed under
    optional: bool = False


@dataclass(frozen=True, slots=True)
class RecordSet:
    domain: str
    hostname: str
    records: tuple[DnsRecord, ...]
    notes: Mapping[str, Sequence[str]]  # section -> comment lines explaining why


def fqdn(name: str) -> str:
    return name.rstrip(".").lower() + "."


def _txt(text: str) -> str:
    # RFC 1035 §3.3.14: a character-string is at most 255 octets; longer values need splitting.
    chunks = [text[i : i + 255] for i in range(0, len(text), 255)] or [""]
    return " ".join('"' + chunk.replace("\\", "\\\\").replace('"', '\\"') + '"' for chunk in chunks)


def records_for(
    domain: str,
    hostname: str,
    ports: Mapping[str, int] | None = None,
    sts_id: str = "1",
    dkim_keys: Sequence[DkimKey] | None = None,
) -> RecordSet:
    """The records for `domain` whose mail is handled by the server `hostname`.

    `domain` and `hostname` must already be in A-label (IDNA) form. `ports` maps listener roles
    (as in `[listen]`) to the port clients should use; a role that is missing is not advertised.
    `sts_id` is the MTA-STS policy id (RFC 8461 §3.1): change it whenever the policy changes.
    `dkim_keys` are the domain's signing keys (`delivery.dkim.load_keys`); None when no store
    was at hand to read them from, () when the domain has none.
    """
    ports = PRODUCTION_PORTS if ports is None else ports
    zone = fqdn(domain)
    host = fqdn(hostname)
    postmaster = f"postmaster@{zone.rstrip('.')}"
    records: list[DnsRecord] = []
    notes: dict[str, list[str]] = {}

    def add(name: str, rtype: str, value: str, section: str, optional: bool = False) -> None:
        records.append(DnsRecord(name, rtype, value, section, optional))

    notes["MX"] = [
        f"Mail for {zone.rstrip('.')} goes to {host.rstrip('.')}, which itself needs A/AAAA records",
        "with this server's public addresses; those addresses need a PTR (reverse DNS) record",
        "naming it (set by your hosting provider): many receivers refuse mail without one.",
    ]
    add(zone, "MX", f"10 {host}", "MX")

    notes["SPF"] = [
        "SPF (RFC 7208): only the hosts named in the MX record send mail for the domain; -all asks",
        "receivers to reject everything else. The record on the host name covers bounces, which",
        "have an empty MAIL FROM and are checked against the HELO name (RFC 7208 §2.3).",
    ]
    add(zone, "TXT", _txt("v=spf1 mx -all"), "SPF")
    if host != zone:
        add(host, "TXT", _txt("v=spf1 a -all"), "SPF")

    if dkim_keys:
        algorithms = " and ".join(
            "RSA-2048" if key.algorithm is DkimAlgorithm.RSA else "Ed25519" for key in dkim_keys
        )
        notes["DKIM"] = [
            f"DKIM (RFC 6376): Surat signs outbound mail from {zone.rstrip('.')} with {algorithms}",
            "(RFC 8463); publish every record below. Verifiers join a TXT record's strings without",
            "separators (RFC 6376 §3.6.2.2): a 2048-bit RSA key does not fit one 255-octet string.",
            "Keys live in the store (SQLite: the data directory's dkim/; PostgreSQL: the database), one",
            "per algorithm for every node; a newer key gets a new dated selector, so keep the old",
            "record until mail signed with it has been read.",
        ]
        for key in dkim_keys:
            add(key.record_name, "TXT", _txt(key.txt_record), "DKIM")
    elif dkim_keys is None:
        notes["DKIM"] = [
            "DKIM: the signing keys are in the server's store; run `surat dns` with the",
            "server's config (without --hostname, or with --config) to print their records.",
        ]
    else:
        notes["DKIM"] = [
            f"DKIM: {zone.rstrip('.')} has no signing key yet; `surat domain add` creates one, and",
            "the server creates missing keys when it starts. Run `surat dns` again afterwards.",
        ]

    notes["DMARC"] = [
        "DMARC (RFC 7489): p=quarantine to start with, not reject: until the DKIM record is",
        "published, only SPF can pass, and SPF breaks on forwarding; quarantine sends such mail to",
        f"spam instead of bouncing it. Aggregate reports (rua) go to {postmaster}, so you see who",
        "sends mail in your domain's name. Move to p=reject once DKIM is published and the reports",
        "look clean.",
    ]
    add(f"_dmarc.{zone}", "TXT", _txt(f"v=DMARC1; p=quarantine; rua=mailto:{postmaster}"), "DMARC")

    web = bool(ports.get("https"))
    notes["Client autoconfiguration"] = [
        "SRV records (RFC 6186, RFC 8314 §5.1) let mail clients find the servers from the address",
        "alone. Lower priority is preferred: implicit TLS first, then STARTTLS; IMAP before POP3.",
    ]
    for service, role, priority in _SRV_SERVICES:
        port = ports.get(role)
        if port:
            add(f"{service}._tcp.{zone}", "SRV", f"{priority} 1 {port} {host}", "Client autoconfiguration")
    if web:
        notes["Client autoconfiguration"] += [
            f"Thunderbird asks https://autoconfig.{zone.rstrip('.')}/ and Outlook",
            f"https://autodiscover.{zone.rstrip('.')}/ (or the _autodiscover SRV record): both names",
            f"point at {host.rstrip('.')}, whose certificate must cover them.",
        ]
        for prefix in ("autoconfig", "autodiscover"):
            add(f"{prefix}.{zone}", "CNAME", host, "Client autoconfiguration")
        add(f"_autodiscover._tcp.{zone}", "SRV", f"0 1 {ports['https']} {host}", "Client autoconfiguration")
    else:
        notes["Client autoconfiguration"] += [
            "(Thunderbird's autoconfig and Outlook's autodiscover need the https listener: [listen] https.)"
        ]

    section = "MTA-STS and TLS reporting (optional)"
    if web:
        notes[section] = [
            "MTA-STS (RFC 8461) tells senders to insist on TLS with a valid certificate for your MX.",
            f"Surat serves the policy at https://mta-sts.{zone.rstrip('.')}/.well-known/mta-sts.txt",
            "([mta_sts] mode in the config: testing first, enforce once the TLS reports are clean);",
            f"mta-sts.{zone.rstrip('.')} points at {host.rstrip('.')}, whose certificate must cover it.",
            "The id changes whenever the policy does: publish the record again after changing [mta_sts]",
            f"or the hostname. TLS-RPT (RFC 8460) sends daily reports on TLS failures to {postmaster}.",
        ]
        add(f"mta-sts.{zone}", "CNAME", host, section, True)
    else:
        notes[section] = [
            "MTA-STS (RFC 8461) tells senders to insist on TLS with a valid certificate for your MX. It",
            f"needs https://mta-sts.{zone.rstrip('.')}/.well-known/mta-sts.txt: enable [listen] https, or serve",
            "it from another web server with:",
            "    version: STSv1",
            "    mode: testing        (enforce, once the TLS reports are clean)",
            f"    mx: {host.rstrip('.')}",
            "    max_age: 604800",
            "Change the id whenever the policy changes. TLS-RPT (RFC 8460) sends daily reports on TLS",
            f"failures to {postmaster}.",
        ]
    add(f"_mta-sts.{zone}", "TXT", _txt(f"v=STSv1; id={sts_id}"), section, True)
    add(f"_smtp._tls.{zone}", "TXT", _txt(f"v=TLSRPTv1; rua=mailto:{postmaster}"), section, True)
    return RecordSet(zone.rstrip("."), host.rstrip("."), tuple(records), notes)


_SECTION_ORDER = (
    "MX",
    "SPF",
    "DKIM",
    "DMARC",
    "Client autoconfiguration",
    "MTA-STS and TLS reporting (optional)",
)


def format_records(record_set: RecordSet, ttl: int = DEFAULT_TTL) -> str:
    """Zone-file text: each section's explanation as `;` comments, then its records."""
    width = max((len(record.name) for record in record_set.records), default=0)
    lines = [f"; DNS records for {record_set.domain} (mail server {record_set.hostname})"]
    for section in _SECTION_ORDER:
        lines.append("")
        lines.append(f"; --- {section}")
        lines.extend(f"; {line}" for line in record_set.notes.get(section, ()))
        for record in record_set.records:
            if record.section == section:
                lines.append(f"{record.name:<{width}}  {ttl}  IN  {record.type:<4} {record.value}")
    return "\n".join(lines) + "\n"
