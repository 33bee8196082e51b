"""The daily TLS report sender without a relay: the claim per (domain, day), the record lookup, and
the HTTPS rua (RFC 8460 §5.4) against a real HTTPS server on loopback."""

from __future__ import annotations

import gzip
import json
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web

from surat.certs import write_dev_certificates
from surat.delivery.dkim import SigningKeys
from surat.delivery.tlsrpt import TlsReportSender, report_settings
from surat.dns.fake import FakeResolver
from surat.store.base import TlsResultCount, TlsResultKey
from surat.store.sqlite import SQLiteStore

NOW = datetime.now(UTC)
YESTERDAY = (NOW - timedelta(days=1)).date().isoformat()


class Collector:
    def __init__(self) -> None:
        self.posts: list[tuple[str, bytes]] = []
        self.status = 200

    async def handle(self, request: web.Request) -> web.Response:
        self.posts.append((request.content_type, await request.read()))
        return web.Response(status=self.status)


@pytest.fixture
async def https(tmp_path: Path) -> AsyncIterator[tuple[Collector, int, ssl.SSLContext]]:
    paths = write_dev_certificates(tmp_path / "tls", ["localhost"])
    assert paths.ca is not None
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(paths.cert, paths.key)
    collector = Collector()
    app = web.Application()
    app.router.add_post("/report", collector.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield collector, port, ssl.create_default_context(cafile=str(paths.ca))
    finally:
        await runner.cleanup()


async def _sender(
    store: SQLiteStore, txt: list[str], context: ssl.SSLContext | None = None
) -> TlsReportSender:
    await store.add_tls_results(
        [TlsResultCount(TlsResultKey(YESTERDAY, "remote.test", "sts", "version: STSv1", "mx.remote.test"), 4)]
    )
    return TlsReportSender(
        store,
        FakeResolver({("_smtp._tls.remote.test", "TXT"): txt}),
        report_settings("mail.example.test", None, None, None),
        SigningKeys(store.keys),
        clock=lambda: NOW,
        https_context=context,
    )


async def test_https_rua_gets_the_gzipped_report_once(
    tmp_path: Path, https: tuple[Collector, int, ssl.SSLContext]
) -> None:
    collector, port, context = https
    store = SQLiteStore(tmp_path / "data")
    await store.open()
    try:
        sender = await _sender(store, [f"v=TLSRPTv1; rua=https://localhost:{port}/report"], context)
        assert await sender.send_due() == 1
        assert await sender.send_due() == 0  # claimed
    finally:
        await store.close()
    [(content_type, body)] = collector.posts
    assert content_type == "application/tlsrpt+gzip"
    report = json.loads(gzip.decompress(body))
    assert report["policies"][0]["summary"] == {
        "total-successful-session-count": 4,
        "total-failure-session-count": 0,
    }
    assert report["date-range"]["start-datetime"] == f"{YESTERDAY}T00:00:00Z"


async def test_https_refusal_and_untrusted_certificate_are_not_sent(
    tmp_path: Path, https: tuple[Collector, int, ssl.SSLContext]
) -> None:
    collector, port, context = https
    collector.status = 500
    store = SQLiteStore(tmp_path / "data")
    await store.open()
    try:
        sender = await _sender(store, [f"v=TLSRPTv1; rua=https://localhost:{port}/report"], context)
        assert await sender.send_due() == 0  # refused: claimed, not sent
        counts = await store.tls_results(YESTERDAY)
        # the system's trust store does not know the test CA: nothing reaches the server
        untrusted = await _sender(store, [f"v=TLSRPTv1; rua=https://localhost:{port}/report"])
        assert not await untrusted.send_report("remote.test", YESTERDAY, counts)
    finally:
        await store.close()
    assert len(collector.posts) == 1


@pytest.mark.parametrize(
    "txt", [[], ["v=TLSRPTv1; rua=mailto:a@b.example", "v=TLSRPTv1; rua=mailto:c@d.example"]]
)
async def test_no_usable_record_sends_nothing(tmp_path: Path, txt: list[str]) -> None:
    store = SQLiteStore(tmp_path / "data")
    await store.open()
    try:
        sender = await _sender(store, txt)
        assert await sender.send_due() == 0
        assert await store.list_queue() == []
        # the day is claimed all the same: not looked at again
        assert not await store.claim_tls_report("remote.test", YESTERDAY, forget_before="2000-01-01")
    finally:
        await store.close()
