"""``exchange serve`` with a TLS certificate: one real TLS connection, and plain HTTP refused off loopback."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import trustme


def _serve(root: Path, *options: str) -> list[str]:
    """The command line of ``exchange serve`` with its data and keys under ``root``."""
    return [
        sys.executable,
        "-m",
        "exchange.cli.main",
        "serve",
        "--data-dir",
        str(root / "var"),
        "--keys-dir",
        str(root / "keys"),
        *options,
    ]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path, ca_path = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(key_path))
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    ca.cert_pem.write_to_path(str(ca_path))
    return cert_path, key_path, ca_path


async def _wait_healthy(url: str, context: ssl.SSLContext, process: subprocess.Popen[bytes]) -> dict[str, object]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        for _ in range(100):
            if process.poll() is not None:
                raise AssertionError("the server exited early")
            try:
                async with session.get(url + "/health") as response:
                    assert response.status == 200
                    report: dict[str, object] = await response.json()
                    return report
            except aiohttp.ClientConnectorError:
                await asyncio.sleep(0.1)
    raise AssertionError("the server did not come up")


async def test_serve_over_tls_answers_a_real_tls_connection(tmp_path: Path, tls_files: tuple[Path, Path, Path]) -> None:
    """A client trusting only the test CA completes a TLS handshake and gets /health."""
    cert, key, ca = tls_files
    port = _free_port()
    process = subprocess.Popen(  # noqa: ASYNC220 - started once, then awaited over the network
        _serve(tmp_path, "--port", str(port), "--tls-cert", str(cert), "--tls-key", str(key)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        context = ssl.create_default_context(cafile=str(ca))
        report = await _wait_healthy(f"https://127.0.0.1:{port}", context, process)
        assert report["store"] == "reachable"
        # The same port does not speak plain HTTP.
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientError):
                async with session.get(f"http://127.0.0.1:{port}/health") as response:
                    await response.read()
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert (tmp_path / "keys" / "server.ed25519.pem").stat().st_mode & 0o777 == 0o600


def test_plain_http_off_loopback_is_refused(tmp_path: Path) -> None:
    """Without a certificate the server will only listen on loopback."""
    result = subprocess.run(
        _serve(tmp_path, "--host", "0.0.0.0"),  # noqa: S104 - refusing this address is the point of the test
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "non-loopback" in result.stderr
    assert "Traceback" not in result.stderr
