"""What the TLS listener accepts: TLS 1.2 or newer, forward-secret AEAD suites, HTTP/1.1 (see also
test_server.py for TLS 1.1 and ALPN)."""

from __future__ import annotations

import socket
import ssl

import pytest

from tests.conftest import SERVICE_HOST, ServerProcess


def _tls12(server: ServerProcess, ciphers: str) -> str:
    context = ssl.create_default_context(cafile=str(server.cert_dir / "ca.crt"))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(ciphers)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=SERVICE_HOST) as tls:
        cipher = tls.cipher()
        assert cipher is not None
        return cipher[0]


@pytest.mark.parametrize("weak", [
    "AES128-SHA:AES256-SHA",  # static RSA key exchange, CBC, SHA-1
    "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA",  # CBC with SHA-1
    "ECDHE-ECDSA-AES128-SHA256",  # CBC
])
def test_tls12_without_an_aead_forward_secret_suite_is_refused(default_server: ServerProcess, weak: str) -> None:
    with pytest.raises(ssl.SSLError):
        _tls12(default_server, weak)


def test_tls12_gets_ecdhe_with_aes_gcm(default_server: ServerProcess) -> None:
    assert _tls12(default_server, "ECDHE-ECDSA-AES128-GCM-SHA256:AES128-SHA") == "ECDHE-ECDSA-AES128-GCM-SHA256"

