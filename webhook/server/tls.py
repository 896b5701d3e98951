"""The server's TLS context: TLS 1.2 or newer, forward-secret AEAD ciphers, HTTP/1.1 only."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

# TLS 1.2 suites; TLS 1.3 suites are all strong and are left at OpenSSL's defaults.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!MD5:!SHA1:!DSS:!RSAPSK"


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    context.set_ciphers(TLS12_CIPHERS)
    # The API server offers only http/1.1 so that kube-proxy spreads connections.
    context.set_alpn_protocols(["http/1.1"])
    context.load_cert_chain(cert_file, key_file)
    return context


def uvicorn_factory(cert_file: Path, key_file: Path, config: Any, default: Any) -> ssl.SSLContext:
    """Adapter for uvicorn's ``ssl_context_factory``; each worker process builds its own context."""
    return server_context(cert_file, key_file)
