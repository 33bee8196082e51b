"""The Apple configuration profile (issue 13): `GET /profile.mobileconfig` on the https listener, for
a logged-in user (surat.web.account). An unsigned `.mobileconfig` property list with one Mail payload
(`com.apple.mail.managed`): the IMAP account and its SMTP server, the address as user name for both,
and no password: iOS and macOS ask for it when the profile is installed, so a profile that lands in a
download folder gives nobody access.

Keys as Apple's Device Management reference names them (developer.apple.com/documentation/
devicemanagement/mail): `EmailAccountType` EmailTypeIMAP, `IncomingMailServer*`/`OutgoingMailServer*`
HostName, PortNumber, UseSSL, Username, Authentication (EmailAuthPassword: the password itself, over
TLS), `OutgoingPasswordSameAsIncomingPassword`. Implicit TLS is offered first (RFC 8314 §3.3); a
role without a listener falls back to the STARTTLS one (UseSSL false: Mail then negotiates
STARTTLS, and the server refuses AUTH without TLS anyway).
"""

from __future__ import annotations

import plistlib
import uuid
from collections.abc import Mapping

CONTENT_TYPE = "application/x-apple-aspen-config"
# (implicit-TLS role, STARTTLS role) for each side of the account.
_INCOMING = ("imaps", "imap")
_OUTGOING = ("submissions", "submission")


class NoMailListener(LookupError):
    """No IMAP or no submission listener: there is no account to describe."""


def _server(ports: Mapping[str, int], roles: tuple[str, str]) -> tuple[int, bool]:
    implicit, starttls = roles
    if ports.get(implicit):
        return ports[implicit], True
    if ports.get(starttls):
        return ports[starttls], False
    raise NoMailListener(f"no {implicit} or {starttls} listener")


def apple_profile(address: str, hostname: str, ports: Mapping[str, int]) -> bytes:
    """The profile for `address` on `hostname` with the listeners' `ports` (by role).

    Identifiers and UUIDs are derived from hostname and address (UUID version 5), so that installing
    a fresh download replaces the profile installed before instead of adding a second account."""
    imap_port, imap_tls = _server(ports, _INCOMING)
    smtp_port, smtp_tls = _server(ports, _OUTGOING)
    reversed_host = ".".join(reversed(hostname.split(".")))
    profile_uuid = uuid.uuid5(uuid.NAMESPACE_DNS, f"{address}.profile.{hostname}")
    mail_uuid = uuid.uuid5(uuid.NAMESPACE_DNS, f"{address}.mail.{hostname}")
    mail = {
        "PayloadType": "com.apple.mail.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{reversed_host}.surat.mail.{mail_uuid}",
        "PayloadUUID": str(mail_uuid).upper(),
        "PayloadDisplayName": f"Mail: {address}",
        "EmailAccountDescription": address,
        "EmailAccountType": "EmailTypeIMAP",
        "EmailAddress": address,
        "IncomingMailServerHostName": hostname,
        "IncomingMailServerPortNumber": imap_port,
        "IncomingMailServerUseSSL": imap_tls,
        "IncomingMailServerUsername": address,
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingMailServerHostName": hostname,
        "OutgoingMailServerPortNumber": smtp_port,
        "OutgoingMailServerUseSSL": smtp_tls,
        "OutgoingMailServerUsername": address,
        "OutgoingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingPasswordSameAsIncomingPassword": True,
    }
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{reversed_host}.surat.profile.{profile_uuid}",
        "PayloadUUID": str(profile_uuid).upper(),
        "PayloadDisplayName": f"{address} ({hostname})",
        "PayloadDescription": f"The mail account {address} on {hostname}. You will be asked for its password.",
        "PayloadRemovalDisallowed": False,
        "PayloadContent": [mail],
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML, sort_keys=True)
