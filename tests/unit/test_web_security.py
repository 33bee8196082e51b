"""surat.web.security's middleware on a bare aiohttp application: headers on every answer, errors
and timeouts as clean responses, requests counted."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from surat import metrics
from surat.web import security


async def fine(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def broken(request: web.Request) -> web.Response:
    raise RuntimeError("a bug")


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(10)
    return web.Response(text="late")


async def gone(request: web.Request) -> web.Response:
    raise web.HTTPGone()


@pytest.mark.parametrize("tls", [False, True])
async def test_answers_and_their_headers(tls: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(security, "REQUEST_TIMEOUT", 0.2)
    app = web.Application(middlewares=[security.middleware("test", tls=tls)])
    app.add_routes(
        [web.get("/", fine), web.get("/broken", broken), web.get("/slow", slow), web.get("/gone", gone)]
    )

    def errors() -> float:
        return (
            metrics.REGISTRY.get_sample_value(
                "surat_http_requests_total", {"listener": "test", "status": "5xx"}
            )
            or 0
        )

    before = errors()
    async with TestClient(TestServer(app)) as client:
        for path, status, body in (
            ("/", 200, "ok"),
            ("/broken", 500, "internal error\n"),
            ("/slow", 408, "request timeout\n"),
            ("/gone", 410, None),
            ("/missing", 404, None),
        ):
            response = await client.get(path)
            assert response.status == status, path
            if body is not None:
                assert await response.text() == body
            for name, value in security.SECURITY_HEADERS.items():
                assert response.headers[name] == value, (path, name)
            assert response.headers["Cache-Control"] == "no-store"
            assert ("Strict-Transport-Security" in response.headers) == tls
    assert errors() - before == 1  # the 500
