"""TLS (issue 8, security): certificates are verified unless ``verify_tls = false`` says
otherwise, and turning verification off logs a warning. Against a real HTTPS server on
127.0.0.1 with a self-signed certificate (made with the openssl command)."""

from __future__ import annotations

import logging
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from multibackend_streamsource.backend import StreamSourceBackend

from multibackend.errors import MultibackendError

from .conftest import make_token, options

STREAM = {
    "id": 1,
    "source": "alice",
    "link": "https://twitch.tv/alice",
    "status": "live",
    "is_pinned": False,
    "created_at": "2026-01-01T00:00:00.000Z",
    "updated_at": "2026-01-01T00:00:00.000Z",
    "kind": "video",
}


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed (needed to make a certificate)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
async def https_url(certificate: tuple[Path, Path]) -> AsyncIterator[str]:
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def stream(request: web.Request) -> web.Response:
        return web.json_response({"stream": STREAM})

    app = web.Application()
    app.router.add_get("/api/v1/streams/{id}", stream)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_verification_is_on_by_default(https_url: str) -> None:
    opts = options(https_url, token=make_token(), max_retries=0)
    assert opts.verify_tls is True
    async with StreamSourceBackend("ss", opts) as backend:
        with pytest.raises(MultibackendError) as info:
            await backend.get_stream(1)
    assert "certificate" in str(info.value).lower()


async def test_turning_verification_off_connects_and_warns(
    https_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    opts = options(https_url, token=make_token(), max_retries=0, verify_tls=False)
    async with StreamSourceBackend("ss", opts) as backend:
        assert (await backend.get_stream(1)).source == "alice"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("verif" in r.getMessage() and "OFF" in r.getMessage() for r in warnings)
