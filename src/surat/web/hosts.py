"""Which local domain a request's Host names. Every endpoint answers only for local domains; any
other host gets 404, so the server does not confirm which names it could serve."""

from __future__ import annotations

from aiohttp import web

from surat.store.base import Store

# The host names clients use to find a domain's configuration: Thunderbird asks autoconfig.DOMAIN
# (and DOMAIN itself under /.well-known/), Outlook autodiscover.DOMAIN; mail.DOMAIN is the usual
# server name.
CLIENT_PREFIXES = ("autoconfig.", "autodiscover.", "mail.")
MTA_STS_PREFIX = "mta-sts."  # RFC 8461 §3.3: the policy host is mta-sts.<Policy Domain>


def request_host(request: web.Request) -> str:
    """The Host header's name, lower-case, without port or trailing dot ("" if there is none)."""
    try:
        host = request.url.host or ""
    except ValueError:  # a Host header that is no host name
        return ""
    return host.rstrip(".").lower()


async def local_domain(store: Store, domain: str) -> str | None:
    domain = domain.rstrip(".").lower()
    return domain if domain and await store.is_local_domain(domain) else None


async def client_config_host(store: Store, host: str, hostname: str) -> str | None:
    """For a client configuration host: the local domain it names, or `hostname` itself (the
    server's own name serves every local domain); None for any other host."""
    if host == hostname:
        return hostname
    for prefix in CLIENT_PREFIXES:
        if host.startswith(prefix) and await local_domain(store, host.removeprefix(prefix)):
            return host.removeprefix(prefix)
    return await local_domain(store, host)
