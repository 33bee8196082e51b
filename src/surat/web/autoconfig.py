"""Mail client autoconfiguration on the https listener: Thunderbird's autoconfig XML and Outlook's
Autodiscover (POX). Both describe the implicit-TLS services (RFC 8314 §3.3 asks clients to prefer
them) and submission with STARTTLS, with the full address as user name.

Thunderbird: https://wiki.mozilla.org/Thunderbird:Autoconfiguration:ConfigFileFormat (clientConfig
version 1.1). Outlook: [MS-OXDSCLI] POX request and the "outlook/responseschema/2006a" response.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any
from xml.parsers import expat

from aiohttp import web

from surat.web.context import WebContext, context_of
from surat.web.hosts import client_config_host, local_domain, request_host

XML_TYPE = "application/xml"
AUTODISCOVER_REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
AUTODISCOVER_RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUTLOOK_SCHEMA = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
# An Autodiscover request is a few hundred octets; the app's client_max_size (security.MAX_BODY)
# bounds what is read at all, this what is parsed.
MAX_AUTODISCOVER_REQUEST = 16 * 1024
MAX_ADDRESS = 254  # RFC 5321 §4.5.3.1.3 path limit less the brackets

# (role, Thunderbird element and type, socketType): implicit TLS first, as the client tries in order.
_THUNDERBIRD_SERVERS = (
    ("imaps", "incomingServer", "imap", "SSL"),
    ("pop3s", "incomingServer", "pop3", "SSL"),
    ("submissions", "outgoingServer", "smtp", "SSL"),
    ("submission", "outgoingServer", "smtp", "STARTTLS"),
)
# Outlook takes one server per Type: the implicit-TLS ones.
_AUTODISCOVER_SERVERS = (("imaps", "IMAP"), ("pop3s", "POP3"), ("submissions", "SMTP"))


class AutodiscoverRequestError(ValueError):
    """Not a usable Autodiscover request (the message says why; it is sent to the client)."""


def thunderbird_config(domain: str, hostname: str, ports: dict[str, int]) -> bytes:
    root = ET.Element("clientConfig", version="1.1")
    provider = ET.SubElement(root, "emailProvider", id=domain)
    _text(provider, "domain", domain)
    _text(provider, "displayName", domain)
    _text(provider, "displayShortName", domain)
    for role, element, kind, socket_type in _THUNDERBIRD_SERVERS:
        port = ports.get(role)
        if not port:
            continue
        server = ET.SubElement(provider, element, type=kind)
        _text(server, "hostname", hostname)
        _text(server, "port", str(port))
        _text(server, "socketType", socket_type)
        # Over TLS only, so the password may go as is; Thunderbird fills in %EMAILADDRESS%.
        _text(server, "authentication", "password-cleartext")
        _text(server, "username", "%EMAILADDRESS%")
    return _document(root)


def autodiscover_response(address: str, hostname: str, ports: dict[str, int]) -> bytes:
    root = ET.Element("Autodiscover", xmlns=AUTODISCOVER_RESPONSE_NS)
    response = ET.SubElement(root, "Response", xmlns=OUTLOOK_SCHEMA)
    account = ET.SubElement(response, "Account")
    _text(account, "AccountType", "email")
    _text(account, "Action", "settings")
    for role, kind in _AUTODISCOVER_SERVERS:
        port = ports.get(role)
        if not port:
            continue
        protocol = ET.SubElement(account, "Protocol")
        _text(protocol, "Type", kind)
        _text(protocol, "Server", hostname)
        _text(protocol, "Port", str(port))
        _text(protocol, "LoginName", address)
        _text(protocol, "DomainRequired", "off")
        _text(protocol, "SPA", "off")
        _text(protocol, "SSL", "on")
        _text(protocol, "AuthRequired", "on")
    return _document(root)


def parse_autodiscover_request(body: bytes) -> str:
    """The EMailAddress of a POX Autodiscover request.

    Parsed with expat directly, refusing any DOCTYPE: without one there are no entity declarations,
    so neither entity expansion ("billion laughs") nor external entities can happen. Expat is
    linear in the input, which is at most MAX_AUTODISCOVER_REQUEST octets.
    """
    if len(body) > MAX_AUTODISCOVER_REQUEST:
        raise AutodiscoverRequestError("request too large")
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    path: list[str] = []
    found: dict[str, list[str]] = {}

    def refuse_doctype(*_: Any) -> None:
        raise AutodiscoverRequestError("a DOCTYPE is not allowed")

    def start(name: str, _: Any) -> None:
        path.append(name)

    def end(_: str) -> None:
        path.pop()

    def text(data: str) -> None:
        # By local name: the namespace (AUTODISCOVER_REQUEST_NS) is what Outlook sends, but a
        # request without it is as clear.
        if len(path) == 3 and [name.rpartition(" ")[2] for name in path[:2]] == ["Autodiscover", "Request"]:
            found.setdefault(path[2].rpartition(" ")[2], []).append(data)

    parser.StartDoctypeDeclHandler = refuse_doctype
    parser.EntityDeclHandler = refuse_doctype
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    try:
        parser.Parse(body, True)
    except expat.ExpatError as exc:
        raise AutodiscoverRequestError(f"not well-formed XML: {expat.ErrorString(exc.code)}") from None
    schema = "".join(found.get("AcceptableResponseSchema", [])).strip()
    if schema and schema != OUTLOOK_SCHEMA:
        raise AutodiscoverRequestError(f"only the response schema {OUTLOOK_SCHEMA} is offered")
    address = "".join(found.get("EMailAddress", [])).strip()
    if not address:
        raise AutodiscoverRequestError("no EMailAddress in Autodiscover/Request")
    if len(address) > MAX_ADDRESS or address.count("@") != 1 or not address.isprintable() or " " in address:
        raise AutodiscoverRequestError("EMailAddress is not a mail address")
    return address


async def thunderbird(request: web.Request) -> web.Response:
    """GET /mail/config-v1.1.xml?emailaddress=... on autoconfig.DOMAIN, and
    /.well-known/autoconfig/mail/config-v1.1.xml on DOMAIN."""
    context = context_of(request)
    host_domain = await client_config_host(context.store, request_host(request), context.config.hostname)
    if host_domain is None:
        raise web.HTTPNotFound()
    address = request.query.get("emailaddress", "")
    if address:
        domain = await local_domain(context.store, address.rpartition("@")[2]) if "@" in address else None
    else:
        domain = await local_domain(context.store, host_domain)
    if domain is None:
        raise web.HTTPNotFound()
    return web.Response(
        body=thunderbird_config(domain, context.config.hostname, dict(context.client_ports)),
        content_type=XML_TYPE,
        charset="utf-8",
    )


async def autodiscover(request: web.Request) -> web.Response:
    """POST /autodiscover/autodiscover.xml (also /Autodiscover/Autodiscover.xml, as Outlook writes it)."""
    context: WebContext = context_of(request)
    if await client_config_host(context.store, request_host(request), context.config.hostname) is None:
        raise web.HTTPNotFound()
    body = await request.read()  # at most security.MAX_BODY, or 413
    try:
        address = parse_autodiscover_request(body)
    except AutodiscoverRequestError as exc:
        raise web.HTTPBadRequest(text=f"bad Autodiscover request: {exc}\n") from None
    if await local_domain(context.store, address.rpartition("@")[2]) is None:
        raise web.HTTPNotFound()
    return web.Response(
        body=autodiscover_response(address, context.config.hostname, dict(context.client_ports)),
        content_type=XML_TYPE,
        charset="utf-8",
    )


def routes() -> list[web.RouteDef]:
    return [
        web.get("/mail/config-v1.1.xml", thunderbird),
        web.get("/.well-known/autoconfig/mail/config-v1.1.xml", thunderbird),
        web.post("/autodiscover/autodiscover.xml", autodiscover),
        web.post("/Autodiscover/Autodiscover.xml", autodiscover),
    ]


def _text(parent: ET.Element, tag: str, value: str) -> None:
    ET.SubElement(parent, tag).text = value


def _document(root: ET.Element) -> bytes:
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document
