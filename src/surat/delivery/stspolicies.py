"""MTA-STS policy discovery for the relay (RFC 8461 §3, §5.1): TXT lookup, HTTPS fetch, store cache.

`StsPolicies.policy_for(domain)` answers the policy to apply to mail for `domain`, or None:

1. the `_mta-sts.DOMAIN` TXT record (§3.1). Its id equal to the cached policy's (not expired): the
   cached policy, without a fetch;
2. else the policy file from `https://mta-sts.DOMAIN/.well-known/mta-sts.txt` (§3.3), stored in the
   cache with the record's id and `max_age`;
3. a TXT lookup that fails or finds no record, a fetch that fails, a malformed record or policy: the
   cached policy while it has not expired, else None (§5.1: "senders MUST continue with delivery as
   though the domain has not implemented MTA-STS"). Keeping the cached policy through failures is
   what stops an attacker who can block DNS or HTTPS from stripping TLS (§10.2).

The fetch (§3.3): HTTPS with a verified certificate for `mta-sts.DOMAIN`, HTTP status 200 only (a
redirect is not followed), media type text/plain, at most `MAX_POLICY_SIZE` bytes, all within
`FETCH_TIMEOUT` seconds. A small HTTP/1.1 GET over `asyncio.open_connection`: the address comes from
our `Resolver` (the relay's DNS, not the system's), and nothing blocks the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable

from surat.delivery.mx import is_public_address
from surat.dns.base import DNSError, Resolver
from surat.log import fields
from surat.mailauth.mtasts import MAX_POLICY_SIZE, PolicyError, StsPolicy, parse_policy, parse_record
from surat.store.base import CachedStsPolicy, Store

log = logging.getLogger(__name__)

HTTPS_PORT = 443
# RFC 8461 §3.3 leaves the timeout to the sender; it holds one domain's delivery attempt at most this long.
FETCH_TIMEOUT = 30.0
# The status line and header fields of the response; anything longer is not a policy server.
MAX_RESPONSE_HEAD = 16 * 1024
# A chunk-size line of a chunked body: hex digits, maybe extensions.
MAX_CHUNK_LINE = 1024
POLICY_PATH = "/.well-known/mta-sts.txt"
# Parsed cached policies kept in memory (one per domain mailed recently), cleared when full.
PARSED_MEMO_SIZE = 1000
_HEX = frozenset(b"0123456789abcdefABCDEF")


class FetchError(Exception):
    """The policy could not be fetched; the message says why (for logs and TLS-RPT)."""


class StsPolicies:
    def __init__(
        self,
        store: Store,
        resolver: Resolver,
        tls_context: ssl.SSLContext,
        *,
        port: int = HTTPS_PORT,
        timeout: float = FETCH_TIMEOUT,
        allow_private: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`tls_context` verifies certificates (the system's trust store; tests add their CA).
        `port` is for tests; `allow_private` lets policy hosts live on loopback or private addresses
        (as `[delivery] allow_private_destinations` does for MX hosts)."""
        self.store = store
        self.resolver = resolver
        self.tls_context = tls_context
        self.port = port
        self.timeout = timeout
        self.allow_private = allow_private
        self.clock = clock
        # Concurrent deliveries to one domain share one discovery (TXT lookup and maybe a fetch).
        self._inflight: dict[str, asyncio.Task[StsPolicy | None]] = {}
        # Cached policies as parsed, so an attempt does not parse the text again (up to 64 KiB).
        self._parsed: dict[tuple[str, str, float], StsPolicy | None] = {}

    async def policy_for(self, domain: str) -> StsPolicy | None:
        domain = domain.rstrip(".").lower()
        task = self._inflight.get(domain)
        if task is None:
            task = self._inflight[domain] = asyncio.create_task(self._discover(domain))
            task.add_done_callback(lambda done: self._forget(domain, done))
        return await asyncio.shield(task)  # one waiter cancelled must not cancel the others

    def _forget(self, domain: str, task: asyncio.Task[StsPolicy | None]) -> None:
        if self._inflight.get(domain) is task:
            del self._inflight[domain]

    async def _discover(self, domain: str) -> StsPolicy | None:
        now = self.clock()
        cached = await self.store.get_sts_policy(domain)
        if cached is not None and cached.expires_at <= now:
            cached = None
        usable = self._parse_cached(cached)
        try:
            record = parse_record(await self.resolver.txt(f"_mta-sts.{domain}"))
        except (DNSError, PolicyError) as exc:
            if usable is not None:
                log.info("sts.record_failed", extra=fields(domain=domain, error=str(exc), using="cached"))
            return usable
        if record is None:
            return usable
        if cached is not None and usable is not None and cached.policy_id == record.id:
            return usable
        try:
            body = await self.fetch(domain)
            policy = parse_policy(body)
        except (FetchError, PolicyError) as exc:
            log.warning(
                "sts.fetch_failed",
                extra=fields(domain=domain, error=str(exc), using="cached" if usable else "none"),
            )
            return usable
        fetched = CachedStsPolicy(domain, record.id, body.decode("utf-8"), now, now + policy.max_age)
        await self.store.put_sts_policy(fetched, forget_before=now)
        log.info(
            "sts.policy",
            extra=fields(domain=domain, id=record.id, mode=policy.mode.value, max_age=policy.max_age),
        )
        return policy

    def _parse_cached(self, cached: CachedStsPolicy | None) -> StsPolicy | None:
        if cached is None:
            return None
        key = (cached.domain, cached.policy_id, cached.fetched_at)
        if key in self._parsed:
            return self._parsed[key]
        try:
            policy: StsPolicy | None = parse_policy(cached.policy.encode("utf-8"))
        except PolicyError:
            policy = None  # stored by a Surat whose parser was more lenient: fetched again
        if len(self._parsed) >= PARSED_MEMO_SIZE:
            self._parsed.clear()
        self._parsed[key] = policy
        return policy

    async def fetch(self, domain: str) -> bytes:
        """The policy file of `domain` (RFC 8461 §3.3); `FetchError` for anything but a valid answer."""
        host = f"mta-sts.{domain}"
        try:
            async with asyncio.timeout(self.timeout):
                addresses = await self._addresses(host)
                reader, writer = await self._connect(host, addresses)
                try:
                    request = (
                        f"GET {POLICY_PATH} HTTP/1.1\r\nHost: {host}\r\nAccept: text/plain\r\n"
                        "User-Agent: Surat\r\nConnection: close\r\n\r\n"
                    )
                    writer.write(request.encode("ascii"))
                    await writer.drain()
                    return await read_response(reader)
                finally:
                    writer.close()
        except TimeoutError:
            raise FetchError(f"{host}: no answer within {self.timeout:.0f}s") from None
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise FetchError(f"{host}: {exc}") from None

    async def _addresses(self, host: str) -> list[str]:
        found: list[str] = []
        for lookup in (self.resolver.aaaa, self.resolver.a):
            try:
                found += await lookup(host)
            except DNSError:
                continue
        allowed = [a for a in found if self.allow_private or is_public_address(a)]
        if not allowed:
            raise FetchError(f"{host}: no usable address" + (f" ({', '.join(found)})" if found else ""))
        return allowed

    async def _connect(
        self, host: str, addresses: list[str]
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        error: Exception | None = None
        for address in addresses:
            try:
                # RFC 8461 §3.3: the certificate must be valid for the policy host (server_hostname).
                return await asyncio.open_connection(
                    address, self.port, ssl=self.tls_context, server_hostname=host, limit=MAX_RESPONSE_HEAD
                )
            except (OSError, ssl.SSLError) as exc:
                error = exc
        raise FetchError(f"{host}: {error}")


async def read_response(reader: asyncio.StreamReader) -> bytes:
    """The body of an HTTP/1.1 response to our GET, checked as RFC 8461 §3.3 asks; at most
    `MAX_POLICY_SIZE` bytes are read (the reader's limit bounds the head at `MAX_RESPONSE_HEAD`)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    status = rest[:3]
    if not version.startswith("HTTP/1.") or not status.isdigit():
        raise FetchError(f"not an HTTP response: {lines[0][:80]!r}")
    if status != "200":
        # §3.3: "HTTP 3xx redirects MUST NOT be followed"; any other status is no policy either.
        raise FetchError(
            f"HTTP status {status}" + (" (redirects are not followed)" if status[0] == "3" else "")
        )
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            raise FetchError(f"bad header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    media_type = headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "text/plain":
        raise FetchError(f"media type {media_type or 'missing'!r}, expected text/plain")  # §3.3
    if headers.get("transfer-encoding", "").lower() == "chunked":
        return await _read_chunked(reader)
    length_text = headers.get("content-length")
    if length_text is not None:
        if not length_text.isdigit() or len(length_text) > 9:
            raise FetchError(f"bad Content-Length {length_text[:20]!r}")
        length = int(length_text)
        if length > MAX_POLICY_SIZE:
            raise FetchError(f"policy of {length} bytes, larger than {MAX_POLICY_SIZE}")
        return await reader.readexactly(length)
    body = await reader.read(MAX_POLICY_SIZE + 1)
    while len(body) <= MAX_POLICY_SIZE:
        more = await reader.read(MAX_POLICY_SIZE + 1 - len(body))
        if not more:
            return body
        body += more
    raise FetchError(f"policy larger than {MAX_POLICY_SIZE} bytes")


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    """RFC 9112 §7.1 chunked transfer coding, bounded by `MAX_POLICY_SIZE` in all; trailers ignored."""
    body = bytearray()
    while True:
        line = await reader.readuntil(b"\r\n")
        size_text = line[:-2].partition(b";")[0].strip()
        # Hex digits only: int(, 16) would also take "0x", "+" and "_".
        if not 0 < len(size_text) <= 8 or len(line) > MAX_CHUNK_LINE or not set(size_text) <= _HEX:
            raise FetchError("bad chunk size line")
        try:
            size = int(size_text, 16)
        except ValueError:
            raise FetchError("bad chunk size line") from None
        if size == 0:
            return bytes(body)
        if len(body) + size > MAX_POLICY_SIZE:
            raise FetchError(f"policy larger than {MAX_POLICY_SIZE} bytes")
        body += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise FetchError("chunk not followed by CRLF")
