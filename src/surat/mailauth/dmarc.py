"""DMARC (RFC 7489): does an authenticated identity align with the From domain, and what does its owner ask?

Where DMARCbis (draft-ietf-dmarc-dmarcbis) differs, this module follows RFC 7489 and says so:
- Policy discovery uses the Public Suffix List (RFC 7489 §3.2, §6.6.3) from the `publicsuffixlist` package, which
  ships the list (no network fetch). DMARCbis replaces it with a DNS tree walk; the results agree for nearly all
  real domains.
- `pct` sampling is honoured (RFC 7489 §6.6.4), including "a sampled-out reject is applied as quarantine".
  DMARCbis drops pct for `t=y` (testing), which we also honour: it lowers the policy one step.
- An invalid `sp` falls back to `p` (DMARCbis §5.3 behaviour; RFC 7489 would discard the whole record).
- DMARCbis's `np` (policy for non-existent subdomains) is parsed but not applied: that needs another lookup.
- The SPF identity is the one SPF checked: the MAIL FROM domain, or the HELO name for the null sender
  (RFC 7489 §3.1.2 footnote). DMARCbis uses MAIL FROM only.
"""

from __future__ import annotations

import enum
import functools
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from email.utils import getaddresses

from publicsuffixlist import PublicSuffixList

from surat.dns.base import DNSError, DNSErrorKind, Resolver
from surat.mailauth.dkim_canon import ParsedMessage
from surat.mailauth.dkim_verify import DKIMResult, DKIMStatus
from surat.mailauth.spf import SPFResult, SPFStatus


class DMARCStatus(enum.Enum):
    """RFC 8601 / RFC 7489 §11.2 result keywords for dmarc=."""

    PASS = "pass"  # noqa: S105 - a result keyword, not a password
    FAIL = "fail"
    NONE = "none"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


class Policy(enum.Enum):
    NONE = "none"
    QUARANTINE = "quarantine"
    REJECT = "reject"


_STRICTNESS = {Policy.NONE: 0, Policy.QUARANTINE: 1, Policy.REJECT: 2}


@dataclass(frozen=True, slots=True)
class DMARCRecord:
    policy: Policy  # p=
    subdomain_policy: Policy | None = None  # sp=
    nonexistent_policy: Policy | None = None  # np= (DMARCbis; parsed, not applied)
    pct: int = 100
    adkim_strict: bool = False  # adkim=s
    aspf_strict: bool = False  # aspf=s
    testing: bool = False  # t=y (DMARCbis)
    rua: tuple[str, ...] = ()
    ruf: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DMARCResult:
    status: DMARCStatus
    from_domain: str  # the RFC 5322.From domain evaluated ("" if there was none)
    policy: Policy  # what to do with the message: NONE unless status is FAIL and the sample selected it
    reason: str
    record: DMARCRecord | None = None
    record_domain: str = ""  # where the record was found: the From domain or its organizational domain
    requested_policy: Policy | None = None  # the p/sp the record asks for, before pct/t=
    spf_aligned: bool = False
    dkim_aligned: bool = False
    dkim_domain: str = ""  # d= of the aligned DKIM pass, for the report


class DMARCRecordError(ValueError):
    """A record beginning with v=DMARC1 that is not usable (→ permerror)."""


# Records are read with str methods and regexes that have one way to match each input, so a hostile
# record (an attacker's own domain can publish one) costs time linear in its length. A lazy value
# followed by "\s*$" used to retry the tail at every position of a long run of spaces (quadratic).
_TAG_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*")  # RFC 7489 §6.4 tag names
_VERSION = re.compile(r"\s*v\s*=\s*DMARC1\s*(?:;|$)")
_MAILTO_SIZE = re.compile(r"[0-9]+[kmgt]?", re.IGNORECASE)  # RFC 7489 §6.4 dmarc-uri size suffix


def _split_tag(part: str) -> tuple[str, str] | None:
    """One RFC 7489 §6.4 tag-spec, "name = value" with optional WSP, as (name, value); None if malformed."""
    name, equals, value = part.partition("=")
    name = name.strip()
    if not equals or _TAG_NAME.fullmatch(name) is None:
        return None
    return name, value.strip()


def _is_mailto(uri: str) -> bool:
    """A usable RFC 7489 §6.4 dmarc-uri: "mailto:" address with an "@", optional "!size"."""
    if uri[:7].lower() != "mailto:":
        return False
    address, bang, size = uri[7:].partition("!")
    if bang and _MAILTO_SIZE.fullmatch(size) is None:
        return False
    if any(char.isspace() or char == "," for char in address):
        return False
    return "@" in address[1:-1]  # something on both sides of an "@"


def is_dmarc_record(txt: str) -> bool:
    # RFC 7489 §6.6.3 step 3: records that do not start with a v=DMARC1 tag are discarded
    return _VERSION.match(txt) is not None


def _policy(value: str) -> Policy | None:
    try:
        return Policy(value.lower())
    except ValueError:
        return None


# Cached by the record's text: an unchanged record (the usual case per TTL) is parsed once.
@functools.lru_cache(maxsize=1024)
def parse_record(txt: str) -> DMARCRecord:
    """RFC 7489 §6.3. Unknown tags are ignored, invalid optional values fall back to their defaults."""
    if not is_dmarc_record(txt):
        raise DMARCRecordError("not a DMARC record (no leading v=DMARC1)")
    tags: dict[str, str] = {}
    for part in txt.split(";")[1:]:
        if not part.strip():
            continue
        tag = _split_tag(part)
        if tag is None:
            raise DMARCRecordError(f"malformed tag {part.strip()!r}")
        tags.setdefault(tag[0].lower(), tag[1])
    rua = tuple(uri.strip() for uri in tags.get("rua", "").split(",") if _is_mailto(uri.strip()))
    ruf = tuple(uri.strip() for uri in tags.get("ruf", "").split(",") if _is_mailto(uri.strip()))
    policy = _policy(tags.get("p", ""))
    if policy is None:
        # RFC 7489 §6.6.3 step 6: without a valid p, a record with a valid rua acts as p=none
        if not rua:
            raise DMARCRecordError("p= missing or invalid" if "p" in tags else "no p= tag")
        policy = Policy.NONE
    pct = 100
    if re.fullmatch(r"\d{1,3}", tags.get("pct", "").strip()):
        pct = min(int(tags["pct"]), 100)
    return DMARCRecord(
        policy=policy,
        subdomain_policy=_policy(tags.get("sp", "")),
        nonexistent_policy=_policy(tags.get("np", "")),
        pct=pct,
        adkim_strict=tags.get("adkim", "r").lower() == "s",
        aspf_strict=tags.get("aspf", "r").lower() == "s",
        testing=tags.get("t", "n").lower() == "y",
        rua=rua,
        ruf=ruf,
    )


@functools.cache
def _psl() -> PublicSuffixList:
    return PublicSuffixList()  # loads the bundled list once; no network


@functools.lru_cache(maxsize=4096)  # asked several times per message for the same few domains
def organizational_domain(domain: str) -> str:
    """RFC 7489 §3.2: the registrable domain (public suffix + one label); a public suffix is its own."""
    domain = domain.lower().removesuffix(".")
    org = _psl().privatesuffix(domain)
    return org if org else domain


def aligned(identity: str, from_domain: str, *, strict: bool) -> bool:
    """RFC 7489 §3.1: strict is an exact match; relaxed compares organizational domains."""
    identity = identity.lower().removesuffix(".")
    from_domain = from_domain.lower().removesuffix(".")
    if not identity or not from_domain:
        return False
    if strict or identity == from_domain:
        return identity == from_domain
    return organizational_domain(identity) == organizational_domain(from_domain)


def _ascii_domain(domain: str) -> str:
    domain = domain.strip().lower().removesuffix(".")
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain


def from_domains(message: bytes, parsed: ParsedMessage | None = None) -> list[str]:
    """The domains of every address in every From header field of `message` (in order, duplicates kept once).

    RFC 7489 §6.6.1: a message may carry several From addresses; the caller passes them all to check_dmarc.
    `parsed` is `parse_message(message)` when the caller has it already.
    """
    if parsed is not None:
        unfolded = (value.replace(b"\r\n", b" ") for value in parsed.values(b"from"))
        return _domains_of([value.decode("utf-8", "replace") for value in unfolded])
    header_block = re.split(rb"\r?\n\r?\n", message, maxsplit=1)[0]
    values: list[str] = []
    current: list[str] | None = None
    for raw_line in re.split(rb"\r?\n", header_block):
        line = raw_line.decode("utf-8", "replace")
        if line[:1] in (" ", "\t") and current is not None:
            current.append(line)
            continue
        if current is not None:
            values.append(" ".join(current))
            current = None
        name, colon, value = line.partition(":")
        if colon and name.strip().lower() == "from":
            current = [value]
    if current is not None:
        values.append(" ".join(current))
    return _domains_of(values)


# The usual From forms, "addr@domain", "<addr@domain>" and "Plain Name <addr@domain>", with no quoting or
# comments to interpret: the domain is read directly; anything else goes to the full RFC 5322 parser.
# Matched against the value stripped of its outer WSP: a leading "[ \t]*" before a display name that may
# itself hold WSP made a long run of spaces quadratic (every split of the run was tried).
_PLAIN_FROM = re.compile(
    r"[A-Za-z0-9 \t._'-]*<[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@([A-Za-z0-9.-]+)>"
    r"|[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@([A-Za-z0-9.-]+)"
)


def _domains_of(values: list[str]) -> list[str]:
    if len(values) == 1:
        plain = _PLAIN_FROM.fullmatch(values[0].strip(" \t"))
        if plain is not None:
            return [_ascii_domain(plain.group(1) or plain.group(2))]
    domains: list[str] = []
    for _display, address in getaddresses(values):
        _local, at, domain = address.rpartition("@")
        if at and domain:
            ascii_domain = _ascii_domain(domain)
            if ascii_domain not in domains:
                domains.append(ascii_domain)
    return domains


async def _fetch(resolver: Resolver, domain: str) -> tuple[DMARCRecord | None, str | None]:
    """One _dmarc lookup: (record, None), (None, None) for no record, or (None, error) for permerror.

    Raises DNSError(TEMPORARY) for the caller to turn into temperror.
    """
    try:
        records = await resolver.txt(f"_dmarc.{domain}")
    except DNSError as exc:
        if exc.kind is DNSErrorKind.TEMPORARY:
            raise
        return None, None
    dmarc = [txt for txt in records if is_dmarc_record(txt)]
    if not dmarc:
        return None, None
    if len(dmarc) > 1:
        return None, f"_dmarc.{domain} has more than one DMARC record"  # RFC 7489 §6.6.3 step 5
    try:
        return parse_record(dmarc[0]), None
    except DMARCRecordError as exc:
        return None, f"_dmarc.{domain}: {exc}"


async def discover_policy(resolver: Resolver, from_domain: str) -> tuple[DMARCRecord | None, str, str | None]:
    """RFC 7489 §6.6.3: the From domain's record, else its organizational domain's.

    Returns (record, domain it was found at, permanent error). Raises DNSError for a temporary failure.
    """
    record, error = await _fetch(resolver, from_domain)
    if record is not None or error is not None:
        return record, from_domain, error
    org = organizational_domain(from_domain)
    if org == from_domain:
        return None, "", None
    record, error = await _fetch(resolver, org)
    return record, (org if record is not None or error is not None else ""), error


MAX_FROM_DOMAINS = 10  # distinct RFC5322.From domains evaluated; a message naming more is refused


def _downgrade(policy: Policy) -> Policy:
    return Policy.QUARANTINE if policy is Policy.REJECT else Policy.NONE


async def _check_one(
    resolver: Resolver,
    from_domain: str,
    spf: SPFResult | None,
    dkim: Sequence[DKIMResult],
    sample: float,
) -> DMARCResult:
    try:
        record, record_domain, error = await discover_policy(resolver, from_domain)
    except DNSError:
        return DMARCResult(
            DMARCStatus.TEMPERROR, from_domain, Policy.NONE, "DNS failure looking up DMARC policy"
        )
    if error is not None:
        return DMARCResult(DMARCStatus.PERMERROR, from_domain, Policy.NONE, error)
    if record is None:
        return DMARCResult(DMARCStatus.NONE, from_domain, Policy.NONE, f"no DMARC record for {from_domain}")

    spf_aligned = (
        spf is not None
        and spf.result is SPFStatus.PASS
        and aligned(spf.domain, from_domain, strict=record.aspf_strict)
    )
    dkim_domain = next(
        (
            r.domain
            for r in dkim
            if r.status is DKIMStatus.PASS and aligned(r.domain, from_domain, strict=record.adkim_strict)
        ),
        "",
    )
    # RFC 7489 §6.6.2: pass if either SPF or DKIM passes with an aligned identifier
    if spf_aligned or dkim_domain:
        via = f"SPF {spf.domain}" if spf_aligned and spf is not None else f"DKIM d={dkim_domain}"
        # built directly: dataclasses.replace costs several times the construction
        return DMARCResult(
            DMARCStatus.PASS,
            from_domain,
            Policy.NONE,
            f"aligned {via}",
            record=record,
            record_domain=record_domain,
            spf_aligned=spf_aligned,
            dkim_aligned=bool(dkim_domain),
            dkim_domain=dkim_domain,
        )

    requested = record.policy
    if record_domain != from_domain and record.subdomain_policy is not None:
        requested = record.subdomain_policy  # RFC 7489 §6.3 sp: applies below the organizational domain
    applied = requested
    notes: list[str] = []
    if record.pct < 100 and sample * 100 >= record.pct:
        # RFC 7489 §6.6.4: outside the sample, reject becomes quarantine and quarantine becomes none
        applied = _downgrade(applied)
        notes.append(f"not sampled by pct={record.pct}")
    if record.testing:
        applied = _downgrade(applied)
        notes.append("t=y")
    reason = f"no aligned SPF or DKIM pass; p={requested.value}" + (f" ({', '.join(notes)})" if notes else "")
    return DMARCResult(
        DMARCStatus.FAIL,
        from_domain,
        applied,
        reason,
        record=record,
        record_domain=record_domain,
        requested_policy=requested,
        spf_aligned=spf_aligned,
        dkim_aligned=False,
        dkim_domain="",
    )


_SEVERITY = {
    DMARCStatus.NONE: 0,
    DMARCStatus.PASS: 1,
    DMARCStatus.PERMERROR: 2,
    DMARCStatus.TEMPERROR: 3,
    DMARCStatus.FAIL: 4,
}


async def check_dmarc(
    resolver: Resolver,
    from_domains: Iterable[str],
    spf: SPFResult | None,
    dkim: Sequence[DKIMResult],
    *,
    rng: Callable[[], float] = random.random,
) -> DMARCResult:
    """Evaluate DMARC for a message whose From header field holds `from_domains` (see `from_domains()`).

    With several distinct From domains each is evaluated and the most severe result is returned (a fail with
    the strictest policy first), as RFC 7489 §6.6.1 and DMARCbis suggest. No From domain at all is permerror
    (RFC 5322 requires one). `rng` returns a float in [0, 1) and decides pct sampling, once per message.
    """
    domains: list[str] = []
    for domain in from_domains:
        ascii_domain = _ascii_domain(domain)
        if ascii_domain and ascii_domain not in domains:
            domains.append(ascii_domain)
    if not domains:
        return DMARCResult(DMARCStatus.PERMERROR, "", Policy.NONE, "no RFC5322.From domain")
    if len(domains) > MAX_FROM_DOMAINS:
        # Each domain costs one or two DNS lookups: a From field listing thousands would have us ask
        # thousands of questions. RFC 7489 §6.6.1 lets a receiver reject mail whose author it cannot
        # establish; evaluating only some of them would let a forged domain hide behind the others.
        return DMARCResult(
            DMARCStatus.FAIL,
            domains[0],
            Policy.REJECT,
            f"RFC5322.From names {len(domains)} domains, more than {MAX_FROM_DOMAINS}",
            requested_policy=Policy.REJECT,
        )
    sample = rng()
    results = [await _check_one(resolver, domain, spf, dkim, sample) for domain in domains]
    return max(results, key=lambda r: (_SEVERITY[r.status], _STRICTNESS[r.policy]))
