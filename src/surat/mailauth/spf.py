"""SPF (RFC 7208): does the connecting IP have the sender domain's permission to send?

Written here over our async `Resolver` rather than taken from a library: pyspf (the maintained Python
implementation) is synchronous and does its own DNS through pydns/dnspython, so it would block the event loop
and bypass our resolver (its configured nameservers, its cache, the test fake). checkdmarc and authheaders wrap
pyspf. The evaluation itself is small: a record parser, a macro expander and one recursive `check_host`.

Limits (RFC 7208 §4.6.4): at most 10 terms that query DNS (include, a, mx, ptr, exists, redirect) over the
whole evaluation, at most 2 void lookups (NXDOMAIN or no answer), at most 10 MX names per `mx` and 10 PTR names
per `ptr`; the whole check is bounded by `timeout` seconds (§4.6.4 suggests 20) → temperror.
Not implemented: the %{p} macro expands to "unknown" without a lookup (§7.3 allows that and discourages %{p}).
"""

from __future__ import annotations

import asyncio
import enum
import functools
import ipaddress
import re
import time
import urllib.parse
from dataclasses import dataclass, field

from surat.dns.base import DNSError, DNSErrorKind, Resolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_DNS_TERMS = 10  # RFC 7208 §4.6.4
MAX_VOID_LOOKUPS = 2  # RFC 7208 §4.6.4
MAX_MX_NAMES = 10  # RFC 7208 §4.6.4
MAX_PTR_NAMES = 10  # RFC 7208 §4.6.4
DEFAULT_TIMEOUT = 20.0  # RFC 7208 §4.6.4: "at least 20 seconds" is the suggested overall limit


class SPFStatus(enum.Enum):
    """RFC 7208 §2.6; the values are the RFC 8601 result keywords."""

    PASS = "pass"  # noqa: S105 - a result keyword, not a password
    FAIL = "fail"
    SOFTFAIL = "softfail"
    NEUTRAL = "neutral"
    NONE = "none"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


@dataclass(frozen=True, slots=True)
class SPFResult:
    result: SPFStatus
    domain: str  # the domain checked: the MAIL FROM domain, or the HELO name for the null sender
    identity: str  # "mailfrom" or "helo" (RFC 7208 §2.3, §2.4)
    sender: str  # the <sender> used: the MAIL FROM address, or postmaster@<helo> for the null sender
    reason: str  # why: the matching mechanism, or the error
    explanation: str = ""  # the domain's exp= text on fail (RFC 7208 §6.2), "" otherwise


class SPFSyntaxError(Exception):
    """A record or macro-string that does not follow the RFC 7208 grammar (→ permerror)."""


class _Abort(Exception):
    """Ends the whole evaluation with a final result (limits exceeded, DNS failure)."""

    def __init__(self, status: SPFStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


# --- macros (RFC 7208 §7) -------------------------------------------------------------------------------

_MACRO_LETTERS = frozenset("slodiphv")
_EXP_ONLY_LETTERS = frozenset("crt")  # RFC 7208 §7.2: only in an exp= explanation
_DELIMITERS = frozenset(".-+,/_=")
_MACRO_EXPAND = re.compile(r"%\{([A-Za-z])(\d*)(r?)([.\-+,/_=]*)\}", re.IGNORECASE)


def _is_toplabel(label: str) -> bool:
    """RFC 7208 §7.1 toplabel: ( *alphanum ALPHA *alphanum ) / ( 1*alphanum "-" *( alphanum / "-" ) alphanum ).

    Tested with str methods, linear in the label's length: the grammar as a regex backtracks
    quadratically on a long label that almost matches (an SPF record is attacker-controlled text).
    """
    if not label.isascii() or not label.replace("-", "").isalnum():
        return False
    if "-" not in label:
        return not label.isdigit()  # at least one ALPHA
    return label[0].isalnum() and label[-1].isalnum()


@dataclass(frozen=True, slots=True)
class MacroValues:
    sender: str  # <sender>, local-part@domain
    domain: str  # <domain>, the current domain of check_host
    ip: IPAddress
    helo: str
    receiver: str = "unknown"  # %{r}: our own host name (exp only)


def _ip_macro(ip: IPAddress) -> str:
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip)
    # RFC 7208 §7.3: IPv6 in dot-format, one nibble per label
    return ".".join(ip.exploded.replace(":", ""))


def _letter_value(letter: str, values: MacroValues) -> str:
    local, _, sender_domain = values.sender.rpartition("@")
    match letter:
        case "s":
            return values.sender
        case "l":
            return local
        case "o":
            return sender_domain
        case "d":
            return values.domain
        case "i":
            return _ip_macro(values.ip)
        case "p":
            return "unknown"  # RFC 7208 §7.3 permits this; %{p} is slow and discouraged
        case "v":
            return "in-addr" if isinstance(values.ip, ipaddress.IPv4Address) else "ip6"
        case "h":
            return values.helo
        case "c":
            return str(values.ip)
        case "r":
            return values.receiver
        case "t":
            return str(int(time.time()))
    raise SPFSyntaxError(f"unknown macro letter {letter!r}")


def expand_macros(spec: str, values: MacroValues, *, exp: bool = False) -> str:
    """Expand an RFC 7208 §7.1 macro-string; `exp` allows the explanation-only letters c, r, t."""
    out: list[str] = []
    pos = 0
    while pos < len(spec):
        char = spec[pos]
        if char != "%":
            if not 0x21 <= ord(char) <= 0x7E and not (exp and char == " "):
                raise SPFSyntaxError(f"invalid character in macro-string {spec!r}")
            out.append(char)
            pos += 1
            continue
        nxt = spec[pos + 1 : pos + 2]
        if nxt == "%":
            out.append("%")
            pos += 2
        elif nxt == "_":
            out.append(" ")
            pos += 2
        elif nxt == "-":
            out.append("%20")
            pos += 2
        elif nxt == "{":
            match = _MACRO_EXPAND.match(spec, pos)
            if match is None:
                raise SPFSyntaxError(f"malformed macro in {spec!r}")
            out.append(_expand_one(match, values, exp=exp))
            pos = match.end()
        else:
            # RFC 7208 §7.1: a "%" not followed by one of these is a syntax error
            raise SPFSyntaxError(f"stray '%' in {spec!r}")
    return "".join(out)


def _expand_one(match: re.Match[str], values: MacroValues, *, exp: bool) -> str:
    letter_raw, digits, reverse, delimiters = match.groups()
    letter = letter_raw.lower()
    if letter not in _MACRO_LETTERS and not (exp and letter in _EXP_ONLY_LETTERS):
        raise SPFSyntaxError(f"macro letter {letter_raw!r} not allowed here")
    value = _letter_value(letter, values)
    # RFC 7208 §7.3: split on the delimiters (default "."), optionally reverse, keep the rightmost N parts,
    # and join with "."
    delims = delimiters or "."
    parts = re.split("[" + re.escape(delims) + "]", value)
    if reverse:
        parts.reverse()
    if digits:
        count = int(digits)
        if count == 0:
            raise SPFSyntaxError("macro transformer digit 0 is not allowed")
        parts = parts[-count:]
    result = ".".join(parts)
    if letter_raw.isupper():
        # RFC 7208 §7.3: upper-case letters URL-encode the value
        result = urllib.parse.quote(result, safe="-._~")
    return result


def _validate_macro_string(spec: str, *, exp: bool = False) -> None:
    """Syntax-check without values (RFC 7208 §4.6: syntax errors anywhere in the record are permerror)."""
    dummy = MacroValues("l@d", "d", ipaddress.IPv4Address("192.0.2.1"), "h")
    expand_macros(spec, dummy, exp=exp)


def _validate_domain_spec(spec: str) -> None:
    # RFC 7208 §7.1: domain-spec = macro-string domain-end; domain-end = ( "." toplabel [ "." ] ) / macro-expand
    if not spec:
        raise SPFSyntaxError("empty domain-spec")
    _validate_macro_string(spec)
    last_macro = re.search(r"%\{[^{}]*\}\Z", spec)
    if last_macro is not None and _MACRO_EXPAND.fullmatch(last_macro.group()):
        return
    stripped = spec[:-1] if spec.endswith(".") else spec
    label = stripped.rsplit(".", 1)
    if len(label) != 2 or not _is_toplabel(label[1]):
        raise SPFSyntaxError(f"domain-spec {spec!r} does not end with a top label")


# --- record parsing (RFC 7208 §4.5, §4.6, §12) --------------------------------------------------------------


class Qualifier(enum.Enum):
    PASS = "+"  # noqa: S105 - a qualifier, not a password
    FAIL = "-"
    SOFTFAIL = "~"
    NEUTRAL = "?"


_QUALIFIER_RESULT = {
    Qualifier.PASS: SPFStatus.PASS,
    Qualifier.FAIL: SPFStatus.FAIL,
    Qualifier.SOFTFAIL: SPFStatus.SOFTFAIL,
    Qualifier.NEUTRAL: SPFStatus.NEUTRAL,
}


@dataclass(frozen=True, slots=True)
class Mechanism:
    qualifier: Qualifier
    name: str  # all, include, a, mx, ptr, ip4, ip6, exists
    domain_spec: str = ""  # "" → the current domain
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None  # ip4 / ip6
    cidr4: int = 32
    cidr6: int = 128

    def text(self) -> str:
        return _mechanism_text(self)


# Cached: the same few mechanisms match message after message, and formatting a network is slow.
@functools.lru_cache(maxsize=1024)
def _mechanism_text(mechanism: Mechanism) -> str:
    out = ("" if mechanism.qualifier is Qualifier.PASS else mechanism.qualifier.value) + mechanism.name
    if mechanism.network is not None:
        out += f":{mechanism.network}"
    elif mechanism.domain_spec:
        out += f":{mechanism.domain_spec}"
    if mechanism.cidr4 != 32:
        out += f"/{mechanism.cidr4}"
    if mechanism.cidr6 != 128:
        out += f"//{mechanism.cidr6}"
    return out


@dataclass(frozen=True, slots=True)
class Record:
    mechanisms: tuple[Mechanism, ...]
    redirect: str | None = None
    exp: str | None = None


_MODIFIER = re.compile(r"([A-Za-z][A-Za-z0-9\-_.]*)=(.*)$", re.DOTALL)
_MECHANISM = re.compile(r"([+\-~?]?)([A-Za-z][A-Za-z0-9\-_.]*)(.*)$", re.DOTALL)
_DUAL_CIDR = re.compile(r"(.*?)(?:/(0|[1-9]\d{0,2}))?(?://(0|[1-9]\d{0,2}))?$", re.DOTALL)
_VERSION = re.compile(r"v=spf1(?: |$)", re.IGNORECASE)


def is_spf_record(txt: str) -> bool:
    # RFC 7208 §4.5: exactly "v=spf1" followed by a space or the end of the record
    return _VERSION.match(txt) is not None


# Cached by the record's text: an unchanged record (the usual case per TTL) is parsed once.
@functools.lru_cache(maxsize=1024)
def parse_record(txt: str) -> Record:
    """Parse a whole SPF record; any syntax error raises SPFSyntaxError (RFC 7208 §4.6)."""
    if not is_spf_record(txt):
        raise SPFSyntaxError("not an SPF record")
    if not txt.isascii():
        raise SPFSyntaxError("non-ASCII characters in record")
    mechanisms: list[Mechanism] = []
    redirect: str | None = None
    exp: str | None = None
    for term in txt[6:].split(" "):
        if not term:
            continue  # RFC 7208 §4.6.1: terms are separated by one or more spaces
        modifier = _MODIFIER.match(term)
        if modifier is not None:
            name, value = modifier.group(1).lower(), modifier.group(2)
            if name == "redirect":
                if redirect is not None:
                    raise SPFSyntaxError("redirect= appears twice")  # RFC 7208 §6
                _validate_domain_spec(value)
                redirect = value
            elif name == "exp":
                if exp is not None:
                    raise SPFSyntaxError("exp= appears twice")
                _validate_domain_spec(value)
                exp = value
            else:
                # RFC 7208 §6: unknown modifiers are ignored, but must still be a valid macro-string
                _validate_macro_string(value)
            continue
        mechanisms.append(_parse_mechanism(term))
    return Record(tuple(mechanisms), redirect, exp)


def _parse_mechanism(term: str) -> Mechanism:
    match = _MECHANISM.match(term)
    if match is None:
        raise SPFSyntaxError(f"invalid term {term!r}")
    qualifier = Qualifier(match.group(1) or "+")
    name = match.group(2).lower()
    rest = match.group(3)
    if name == "all":
        if rest:
            raise SPFSyntaxError(f"invalid term {term!r}")
        return Mechanism(qualifier, name)
    if name in ("include", "exists"):
        if not rest.startswith(":"):
            raise SPFSyntaxError(f"{name} needs a domain-spec")
        _validate_domain_spec(rest[1:])
        return Mechanism(qualifier, name, rest[1:])
    if name == "ptr":
        if rest and not rest.startswith(":"):
            raise SPFSyntaxError(f"invalid term {term!r}")
        if rest:
            _validate_domain_spec(rest[1:])
        return Mechanism(qualifier, name, rest[1:])
    if name in ("a", "mx"):
        cidr = _DUAL_CIDR.fullmatch(rest)
        assert cidr is not None  # the pattern matches any string
        spec, cidr4, cidr6 = cidr.groups()
        if spec and not spec.startswith(":"):
            raise SPFSyntaxError(f"invalid term {term!r}")
        if spec:
            _validate_domain_spec(spec[1:])
        v4 = int(cidr4) if cidr4 is not None else 32
        v6 = int(cidr6) if cidr6 is not None else 128
        if v4 > 32 or v6 > 128:
            raise SPFSyntaxError(f"CIDR length out of range in {term!r}")
        return Mechanism(qualifier, name, spec[1:], cidr4=v4, cidr6=v6)
    if name in ("ip4", "ip6"):
        if not rest.startswith(":"):
            raise SPFSyntaxError(f"{name} needs an address")
        address, _, length = rest[1:].partition("/")
        if length and not re.fullmatch(r"0|[1-9]\d{0,2}", length):
            raise SPFSyntaxError(f"invalid CIDR length in {term!r}")
        try:
            if name == "ip4":
                ip4 = ipaddress.IPv4Address(address)
                prefix = int(length) if length else 32
                if prefix > 32:
                    raise SPFSyntaxError(f"CIDR length out of range in {term!r}")
                network: ipaddress.IPv4Network | ipaddress.IPv6Network = ipaddress.IPv4Network(
                    (ip4, prefix), strict=False
                )
            else:
                ip6 = ipaddress.IPv6Address(address)
                prefix = int(length) if length else 128
                if prefix > 128:
                    raise SPFSyntaxError(f"CIDR length out of range in {term!r}")
                network = ipaddress.IPv6Network((ip6, prefix), strict=False)
        except ValueError as exc:
            raise SPFSyntaxError(f"invalid address in {term!r}") from exc
        return Mechanism(qualifier, name, network=network)
    raise SPFSyntaxError(f"unknown mechanism {name!r}")  # RFC 7208 §5: unknown mechanisms are permerror


# --- evaluation (RFC 7208 §4) ------------------------------------------------------------------------------


_DOMAIN_CHARS = re.compile(r"[A-Za-z0-9_.\-]+")


def _valid_domain(name: str) -> bool:
    # RFC 7208 §4.3: a malformed domain (not multi-label, empty label, label > 63 octets) → "none"
    name = name.removesuffix(".")
    if not name or len(name) > 253:
        return False
    labels = name.split(".")
    if len(labels) < 2 or labels[-1].isdigit() or not _DOMAIN_CHARS.fullmatch(name):
        return False
    return all(0 < len(label) <= 63 for label in labels)


def _truncate_domain(name: str) -> str:
    # RFC 7208 §7.3: drop left-hand labels until the expansion fits in 253 characters
    name = name.removesuffix(".")
    while len(name) > 253 and "." in name:
        name = name.split(".", 1)[1]
    return name


@dataclass(slots=True)
class _Evaluation:
    resolver: Resolver
    ip: IPAddress
    sender: str
    helo: str
    receiver: str
    dns_terms: int = 0
    void_lookups: int = 0
    includes: list[str] = field(default_factory=list)

    def values(self, domain: str) -> MacroValues:
        return MacroValues(self.sender, domain, self.ip, self.helo, self.receiver)

    def count_dns_term(self, term: str) -> None:
        self.dns_terms += 1
        if self.dns_terms > MAX_DNS_TERMS:
            raise _Abort(SPFStatus.PERMERROR, f"more than {MAX_DNS_TERMS} DNS lookups (at {term})")

    def count_void(self, name: str) -> None:
        self.void_lookups += 1
        if self.void_lookups > MAX_VOID_LOOKUPS:
            raise _Abort(SPFStatus.PERMERROR, f"more than {MAX_VOID_LOOKUPS} void lookups (at {name})")

    async def addresses(self, name: str, *, void_counts: bool) -> list[IPAddress]:
        """A or AAAA records of `name` as the connection's family (RFC 7208 §5.3)."""
        try:
            if isinstance(self.ip, ipaddress.IPv4Address):
                found = await self.resolver.a(name)
            else:
                found = await self.resolver.aaaa(name)
        except DNSError as exc:
            if exc.kind is DNSErrorKind.TEMPORARY:
                raise _Abort(SPFStatus.TEMPERROR, f"DNS failure looking up {name}") from exc
            found = []
        if not found and void_counts:
            self.count_void(name)
        out: list[IPAddress] = []
        for text in found:
            try:
                out.append(ipaddress.ip_address(text))
            except ValueError:
                continue
        return out

    def in_network(self, address: IPAddress, mechanism: Mechanism) -> bool:
        if address.version != self.ip.version:
            return False
        prefix = mechanism.cidr4 if address.version == 4 else mechanism.cidr6
        return self.ip in ipaddress.ip_network((address, prefix), strict=False)

    def target(self, mechanism_spec: str, domain: str) -> str:
        if not mechanism_spec:
            return domain
        try:
            return _truncate_domain(expand_macros(mechanism_spec, self.values(domain)))
        except SPFSyntaxError as exc:  # pragma: no cover - the record was validated when parsed
            raise _Abort(SPFStatus.PERMERROR, str(exc)) from exc


async def _fetch_record(ev: _Evaluation, domain: str) -> Record | None:
    """RFC 7208 §4.4, §4.5: None when the domain publishes no SPF record."""
    try:
        records = await ev.resolver.txt(domain)
    except DNSError as exc:
        if exc.kind is DNSErrorKind.TEMPORARY:
            raise _Abort(SPFStatus.TEMPERROR, f"DNS failure looking up SPF record of {domain}") from exc
        return None
    spf = [record for record in records if is_spf_record(record)]
    if not spf:
        return None
    if len(spf) > 1:
        raise _Abort(SPFStatus.PERMERROR, f"{domain} publishes more than one SPF record")
    try:
        return parse_record(spf[0])
    except SPFSyntaxError as exc:
        raise _Abort(SPFStatus.PERMERROR, f"SPF record of {domain}: {exc}") from exc


async def _check_host(ev: _Evaluation, domain: str) -> tuple[SPFStatus, str, str]:
    """RFC 7208 §4: (result, reason, explanation). Raises _Abort for results that end the evaluation."""
    if not _valid_domain(domain):
        return SPFStatus.NONE, f"invalid domain {domain!r}", ""
    record = await _fetch_record(ev, domain)
    if record is None:
        return SPFStatus.NONE, f"no SPF record for {domain}", ""
    for mechanism in record.mechanisms:
        if await _matches(ev, mechanism, domain):
            status = _QUALIFIER_RESULT[mechanism.qualifier]
            reason = f"{domain}: matched {mechanism.text()}"
            explanation = ""
            if status is SPFStatus.FAIL and record.exp is not None:
                explanation = await _explanation(ev, record.exp, domain)
            return status, reason, explanation
    if record.redirect is not None:
        # RFC 7208 §6.1: used only when no mechanism matched; the exp= of this record is not used
        ev.count_dns_term("redirect")
        target = ev.target(record.redirect, domain)
        status, reason, explanation = await _check_host(ev, target)
        if status is SPFStatus.NONE:
            return SPFStatus.PERMERROR, f"redirect to {target}, which has no SPF record", ""
        return status, reason, explanation
    # RFC 7208 §4.7: no match and no redirect → neutral
    return SPFStatus.NEUTRAL, f"{domain}: no mechanism matched", ""


async def _matches(ev: _Evaluation, mechanism: Mechanism, domain: str) -> bool:
    name = mechanism.name
    if name == "all":
        return True
    if name in ("ip4", "ip6"):
        assert mechanism.network is not None
        # RFC 7208 §5.6: ip4 never matches an IPv6 connection and vice versa
        return mechanism.network.version == ev.ip.version and ev.ip in mechanism.network
    ev.count_dns_term(name)
    target = ev.target(mechanism.domain_spec, domain)
    if name == "include":
        return await _include(ev, target)
    if name == "a":
        return any(
            ev.in_network(address, mechanism) for address in await ev.addresses(target, void_counts=True)
        )
    if name == "mx":
        return await _mx(ev, mechanism, target)
    if name == "ptr":
        return await _ptr(ev, target)
    if name == "exists":
        # RFC 7208 §5.7: always an A lookup, whatever the connection's family
        try:
            found = await ev.resolver.a(target)
        except DNSError as exc:
            if exc.kind is DNSErrorKind.TEMPORARY:
                raise _Abort(SPFStatus.TEMPERROR, f"DNS failure looking up {target}") from exc
            found = []
        if not found:
            ev.count_void(target)
        return bool(found)
    raise AssertionError(name)  # pragma: no cover - the parser admits no other names


async def _include(ev: _Evaluation, target: str) -> bool:
    # RFC 7208 §5.2: the included record's result decides whether "include" matches
    status, reason, _explanation = await _check_host(ev, target)
    if status is SPFStatus.PASS:
        return True
    if status in (SPFStatus.FAIL, SPFStatus.SOFTFAIL, SPFStatus.NEUTRAL):
        return False
    if status is SPFStatus.NONE:
        raise _Abort(SPFStatus.PERMERROR, f"include:{target} has no SPF record")
    raise _Abort(status, reason)  # pragma: no cover - temperror/permerror are raised, not returned


async def _mx(ev: _Evaluation, mechanism: Mechanism, target: str) -> bool:
    try:
        records = await ev.resolver.mx(target)
    except DNSError as exc:
        if exc.kind is DNSErrorKind.TEMPORARY:
            raise _Abort(SPFStatus.TEMPERROR, f"DNS failure looking up MX of {target}") from exc
        records = []
    if not records:
        ev.count_void(target)
        return False
    if len(records) > MAX_MX_NAMES:
        raise _Abort(SPFStatus.PERMERROR, f"{target} has more than {MAX_MX_NAMES} MX records")
    for record in sorted(records, key=lambda r: r.preference):
        if not record.exchange:
            continue  # a null MX (RFC 7505) names no host
        for address in await ev.addresses(record.exchange, void_counts=False):
            if ev.in_network(address, mechanism):
                return True
    return False


async def _ptr(ev: _Evaluation, target: str) -> bool:
    # RFC 7208 §5.5: validated names of the client IP, of which one must be target or a subdomain of it
    try:
        names = await ev.resolver.ptr(str(ev.ip))
    except DNSError:
        return False  # RFC 7208 §5.5: a DNS error in the PTR lookup means "no match"
    target = target.lower().removesuffix(".")
    for raw_name in names[:MAX_PTR_NAMES]:
        name = raw_name.lower().removesuffix(".")
        if name != target and not name.endswith("." + target):
            continue
        try:
            addresses = await ev.addresses(name, void_counts=False)
        except _Abort as exc:
            if exc.status is SPFStatus.TEMPERROR:
                continue  # RFC 7208 §5.5: errors validating one name just skip that name
            raise
        if ev.ip in addresses:
            return True
    return False


async def _explanation(ev: _Evaluation, exp_spec: str, domain: str) -> str:
    # RFC 7208 §6.2: any trouble fetching or expanding the explanation means no explanation
    try:
        target = _truncate_domain(expand_macros(exp_spec, ev.values(domain)))
        records = await ev.resolver.txt(target)
        if len(records) != 1:
            return ""
        text = expand_macros(records[0], ev.values(domain), exp=True)
    except (DNSError, SPFSyntaxError):
        return ""
    return text if text.isascii() else ""


@functools.lru_cache(maxsize=4096)  # the same clients connect again and again; parsing is slow in Python
def _parse_ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text)


async def check_host(
    resolver: Resolver,
    ip: str | IPAddress,
    domain: str,
    sender: str,
    *,
    helo: str = "",
    receiver: str = "unknown",
    timeout: float | None = DEFAULT_TIMEOUT,
) -> tuple[SPFStatus, str, str]:
    """The RFC 7208 §4 check_host() function: (result, reason, explanation).

    `timeout` None leaves the deadline to the caller (a timer per check costs more than a cached check).
    """
    address = _parse_ip(ip) if isinstance(ip, str) else ip
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # RFC 7208 §5: an IPv4-mapped client is an IPv4 client
    # RFC 7208 §4.3: a sender without a local-part is postmaster at that domain
    if "@" not in sender:
        sender = f"postmaster@{sender or domain}"
    elif sender.startswith("@"):
        sender = "postmaster" + sender
    ev = _Evaluation(resolver, address, sender, helo, receiver)
    try:
        async with asyncio.timeout(timeout):  # None schedules no timer at all
            return await _check_host(ev, domain.lower().removesuffix("."))
    except _Abort as exc:
        return exc.status, exc.reason, ""
    except TimeoutError:
        assert timeout is not None  # only a deadline raises it
        return SPFStatus.TEMPERROR, _took_too_long(timeout), ""


def _took_too_long(timeout: float) -> str:
    return f"SPF evaluation took longer than {timeout:g}s"


def spf_identity(mail_from_domain: str, helo: str, sender: str) -> tuple[str, str, str]:
    """(identity, domain, sender) that SPF checks for a transaction: MAIL FROM, or HELO for `<>`.

    RFC 7208 §2.4: for the null sender the HELO identity is checked, with postmaster@<helo> as the sender.
    """
    if sender and mail_from_domain:
        return "mailfrom", mail_from_domain.lower().removesuffix("."), sender
    return "helo", helo.lower().removesuffix("."), f"postmaster@{helo}"


def timed_out(mail_from_domain: str, helo: str, *, sender: str, timeout: float) -> SPFResult:
    """The temperror result of a `check_spf` that has not finished within `timeout` seconds."""
    identity, domain, used_sender = spf_identity(mail_from_domain, helo, sender)
    return SPFResult(SPFStatus.TEMPERROR, domain, identity, used_sender, _took_too_long(timeout))


async def check_spf(
    resolver: Resolver,
    ip: str | IPAddress,
    mail_from_domain: str,
    helo: str,
    *,
    sender: str,
    receiver: str = "unknown",
    timeout: float | None = DEFAULT_TIMEOUT,
) -> SPFResult:
    """SPF for one SMTP transaction.

    `sender` is the MAIL FROM address ("" for the null sender, `<>`); `mail_from_domain` its domain. For the
    null sender the HELO identity is checked instead (see `spf_identity`).
    """
    identity, domain, used_sender = spf_identity(mail_from_domain, helo, sender)
    status, reason, explanation = await check_host(
        resolver, ip, domain, used_sender, helo=helo, receiver=receiver, timeout=timeout
    )
    return SPFResult(status, domain, identity, used_sender, reason, explanation)
