"""The server's TLS contexts: TLS 1.2 or newer, forward-secret AEAD ciphers, HTTP/1.1 only.

A context is built only from bytes that have been checked first (both parse, the key fits the
certificate), so the reload in ``tls_reload.py`` can refuse a bad pair before OpenSSL sees it.
"""

from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from webhook.pki import CertificateError, parse_certificates, parse_private_key, private_file, same_public_key
from webhook.server.watch import Contents, read_contents
from webhook.settings import ServeSettings

# TLS 1.2 suites; TLS 1.3 suites are all strong and are left at OpenSSL's defaults.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!MD5:!SHA1:!DSS:!RSAPSK"


@dataclass(frozen=True, slots=True)
class TLSFiles:
    cert: Path
    key: Path
    ca: Path  # what the caBundle publishes; read only to report whether the served certificate chains to it
    client_ca: Path | None = None

    @classmethod
    def from_settings(cls, settings: ServeSettings) -> TLSFiles:
        directory = settings.cert_dir
        return cls(directory / "tls.crt", directory / "tls.key", directory / "ca.crt", settings.client_ca)

    @property
    def paths(self) -> list[Path]:
        return [self.cert, self.key, self.ca, *([self.client_ca] if self.client_ca else [])]


@dataclass(frozen=True, slots=True)
class Material:
    """One checked serving pair (and client CA), as bytes and as what they say."""

    cert_pem: bytes
    key_pem: bytes
    client_ca_pem: bytes | None
    leaf: x509.Certificate
    intermediates: tuple[x509.Certificate, ...]

    @property
    def serial(self) -> str:
        return f"{self.leaf.serial_number:x}"


def read_material(files: TLSFiles, contents: Contents) -> Material:
    """Check a pair before anything serves it: both parse, and the key belongs to the certificate."""
    certs = parse_certificates(contents.get(files.cert), str(files.cert))
    key = parse_private_key(contents.get(files.key), str(files.key))
    if not same_public_key(certs[0].public_key(), key.public_key()):
        raise CertificateError(f"{files.key} does not belong to {files.cert} (serial {certs[0].serial_number:x}): "
                               "the key does not match the certificate")
    client_ca = None
    if files.client_ca is not None:
        client_ca = contents.get(files.client_ca)
        parse_certificates(client_ca, str(files.client_ca))
    cert_pem, key_pem = contents.get(files.cert) or b"", contents.get(files.key) or b""
    return Material(cert_pem, key_pem, client_ca, certs[0], tuple(certs[1:]))


def build_context(material: Material) -> ssl.SSLContext:
    context = _base_context()
    try:
        with private_file(material.cert_pem) as cert, private_file(material.key_pem) as key:
            # A password callback: an encrypted key fails here instead of prompting on a terminal.
            context.load_cert_chain(cert, key, password=lambda: b"")
        if material.client_ca_pem is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cadata=material.client_ca_pem.decode("ascii", errors="replace"))
    except ssl.SSLError as exc:
        raise CertificateError(f"OpenSSL refused the certificate, key or client CA: {exc.reason or exc}") from None
    return context


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A context for a fixed pair, without reload (the benchmark's floor app uses it)."""
    files = TLSFiles(cert_file, key_file, cert_file)
    return build_context(read_material(files, read_contents([cert_file, key_file])))


def uvicorn_factory(cert_file: Path, key_file: Path, config: Any, default: Any) -> ssl.SSLContext:
    """Adapter for uvicorn's ``ssl_context_factory`` with a fixed pair."""
    return server_context(cert_file, key_file)


def _base_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    context.set_ciphers(TLS12_CIPHERS)
    # The API server offers only http/1.1 so that kube-proxy spreads connections.
    context.set_alpn_protocols(["http/1.1"])
    return context


def rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
