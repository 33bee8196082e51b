"""The server's certificates, reloadable while it runs, and chosen by the name the client asks for.

`TlsContexts` holds the SSLContext that every listener and every STARTTLS/STLS reads at the moment
it starts a handshake (`.current`), never a copy taken at start: a reload (SIGHUP, `surat reload`,
later the ACME renewal) builds and checks every context first, then swaps them in one assignment, so
new handshakes use the new certificates and a connection already encrypted keeps the session it has.
A refused certificate leaves the old ones in place.

Several certificates (`[[tls.certificates]]`) are chosen by the client's Server Name Indication
(RFC 6066 §3) through the default context's `sni_callback`; a name that no certificate covers, and a
client sending none, get the default `[tls]` certificate.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from surat.config import TLSConfig
from surat.net.tls import dns_names, load_server_certificate

__all__ = ["CertificateInfo", "TlsContexts", "certificate_lines"]

log = logging.getLogger(__name__)

DEFAULT_SETTING = "tls"


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """What the operator needs to tell one served certificate from another."""

    setting: str  # the config table: "tls" or "tls.certificates[0]"
    cert: Path
    subject: str
    not_after: datetime
    sha256: str  # of the DER certificate, as `openssl x509 -fingerprint -sha256` shows it (without colons)
    names: tuple[str, ...]  # its subjectAltName DNS names

    @classmethod
    def of(cls, setting: str, cert: Path, leaf: x509.Certificate) -> CertificateInfo:
        return cls(
            setting=setting,
            cert=cert,
            subject=leaf.subject.rfc4514_string(),
            not_after=leaf.not_valid_after_utc,
            sha256=leaf.fingerprint(hashes.SHA256()).hex(),
            names=tuple(dns_names(leaf)),
        )


@dataclass(frozen=True, slots=True)
class _Loaded:
    """One complete, checked set of contexts; never changed once built."""

    default: ssl.SSLContext
    certificates: tuple[CertificateInfo, ...]  # the default first, then [[tls.certificates]] in order
    ignored_names: tuple[str, ...]  # "tls.certificates[1]: name ... ignored: why", for the operator
    index: _NameIndex

    def choose(self, server_name: str | None) -> ssl.SSLContext:
        """The context for a ClientHello naming `server_name` (None: the client sent no SNI)."""
        chosen = self.index.find(server_name) if server_name else None
        return chosen if chosen is not None else self.default


class _NameIndex:
    """Server name -> context, in two dictionary lookups whatever the client sends (the name comes
    from the ClientHello, at most 255 octets in the DNS, RFC 6066 §3: no scan over the certificates).

    RFC 6125 §6.4.3: a wildcard matches exactly one whole left-most label ("*.example.com" covers
    "mail.example.com", not "example.com" nor "a.b.example.com"); partial-label wildcards
    ("m*.example.com") are not honoured, as RFC 9525 §6.3 no longer allows them.
    """

    def __init__(self) -> None:
        self.exact: dict[str, ssl.SSLContext] = {}
        self.wildcard: dict[str, ssl.SSLContext] = {}  # "example.com" for "*.example.com"
        self._owners: dict[str, str] = {}  # name -> the setting whose certificate serves it

    def add(self, name: str, context: ssl.SSLContext, setting: str) -> str | None:
        """Serve `name` with `context`, unless an earlier certificate has it; why not, if not."""
        name = name.lower().rstrip(".")
        if name.startswith("*."):
            table, key = self.wildcard, name[2:]
        elif "*" in name:
            return f"{setting}: name {name} ignored: a wildcard must be a whole left-most label"
        else:
            table, key = self.exact, name
        owner = self._owners.setdefault(name, setting)
        if owner != setting:
            # Two certificates for one name (a renewal that added a name, certificates migrating):
            # the first in the file keeps it, as the order is the operator's to choose.
            return f"{setting}: name {name} ignored: {owner} serves it"
        table[key] = context
        return None

    def find(self, server_name: str) -> ssl.SSLContext | None:
        name = server_name.lower().rstrip(".")
        found = self.exact.get(name)
        if found is None:
            _, dot, parent = name.partition(".")
            found = self.wildcard.get(parent) if dot else None
        return found


def _build(tls: TLSConfig, *, full_key_check: bool) -> _Loaded:
    """Every context checked and built, or TLSSetupError for the first pair that cannot be used.
    Runs on the event loop (SSLContext building and key parsing hold the GIL, so a thread would not
    free the loop): bounded by the number of configured certificates, about 1.5 ms each without the
    full key check (see load_server_certificate)."""
    assert tls.cert is not None and tls.key is not None
    default, leaf = load_server_certificate(tls.cert, tls.key, DEFAULT_SETTING, full_key_check=full_key_check)
    certificates = [CertificateInfo.of(DEFAULT_SETTING, tls.cert, leaf)]
    index = _NameIndex()
    ignored: list[str] = []
    for position, pair in enumerate(tls.certificates):
        setting = f"tls.certificates[{position}]"
        context, leaf = load_server_certificate(pair.cert, pair.key, setting, full_key_check=full_key_check)
        info = CertificateInfo.of(setting, pair.cert, leaf)
        certificates.append(info)
        ignored += filter(None, (index.add(name, context, setting) for name in info.names))
    if tls.certificates:

        def choose(
            connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
        ) -> None:
            # Python hands over the name as sent (A-labels for IDNs); None when the client sent none.
            if server_name:
                chosen = index.find(server_name)
                if chosen is not None:
                    connection.context = chosen
            # Returning None continues the handshake (with the default when nothing matched).

        default.sni_callback = choose
    return _Loaded(default, tuple(certificates), tuple(ignored), index)


class TlsContexts:
    """The server contexts for new handshakes: read `.current` at the moment a handshake starts."""

    def __init__(self, tls: TLSConfig) -> None:
        """Loads `tls.cert`/`tls.key` and `tls.certificates`; TLSSetupError if any cannot be used."""
        self._tls = tls
        self._loaded = _build(tls, full_key_check=True)

    @property
    def current(self) -> ssl.SSLContext:
        """The context for a handshake starting now (it picks the SNI certificate itself)."""
        return self._loaded.default

    def front_context(self) -> ssl.SSLContext:
        """A context for a server that takes one context when it starts and keeps it (aiohttp's
        sites, the `https` listener): each of its handshakes is handed, from the SNI callback, to
        the context `current` would choose at that moment, so reloads and SNI apply there too.
        OpenSSL calls the callback for every ClientHello (server_name None without SNI); the
        front's own certificate (the default at this call) only stands in until then, and its
        protocol settings are those of every context here (surat.net.tls.server_context)."""
        assert self._tls.cert is not None and self._tls.key is not None
        front, _ = load_server_certificate(
            self._tls.cert, self._tls.key, DEFAULT_SETTING, full_key_check=False
        )

        def hand_over(
            connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
        ) -> None:
            connection.context = self._loaded.choose(server_name)

        front.sni_callback = hand_over
        return front

    @property
    def certificates(self) -> tuple[CertificateInfo, ...]:
        """The certificates served now: the default first."""
        return self._loaded.certificates

    @property
    def ignored_names(self) -> tuple[str, ...]:
        """Names of [[tls.certificates]] that choose no certificate, each with the reason."""
        return self._loaded.ignored_names

    def reload(self) -> tuple[CertificateInfo, ...]:
        """Re-read every certificate and key file named by the config (the config file itself is not
        re-read). All or nothing: TLSSetupError, and the old contexts stay, if any pair is refused.
        Connections already encrypted keep their session; handshakes from now on use the new files."""
        # One assignment: a handshake sees all old or all new.
        self._loaded = _build(self._tls, full_key_check=False)
        return self._loaded.certificates

    def describe(self) -> Mapping[str, object]:
        """Log fields for the default certificate and how many more there are."""
        default = self._loaded.certificates[0]
        return {
            "subject": default.subject,
            "not_after": default.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "sha256": default.sha256,
            "sni_certificates": len(self._loaded.certificates) - 1,
        }


def certificate_lines(certificates: Sequence[CertificateInfo]) -> list[str]:
    """One line per certificate, for `surat check`: its setting, names and expiry."""
    return [
        f"  {info.setting}: {', '.join(info.names) or '(no DNS names)'}, "
        f"not after {info.not_after:%Y-%m-%d %H:%M} UTC"
        for info in certificates
    ]
