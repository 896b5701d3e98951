"""uvicorn's httptools protocol, with a shutdown that does not hang on idle TLS connections,
and the ASGI TLS extension in every request scope.

Closing a TLS transport waits for the peer's close_notify, up to 30 s; an idle keep-alive
client (such as the API server) never sends one, so a plain close stalls every shutdown.
An idle connection has nothing in flight, so aborting it loses nothing.

uvicorn does not tell the app who the client is over TLS; the client certificate check needs
it, so the connection's TLS facts are worked out once, at connection time, and put in each
request's ``scope["extensions"]["tls"]`` as the ASGI TLS extension describes.
"""

from __future__ import annotations

import asyncio
import ssl

from cryptography import x509
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


class WebhookHttpProtocol(HttpToolsProtocol):
    _tls: dict[object, object] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
            self._tls = tls_extension(ssl_object)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._tls is not None:
            self.scope["extensions"] = {"tls": self._tls}

    def shutdown(self) -> None:
        if self.cycle is None or self.cycle.response_complete:
            self.transport.abort()
        else:
            self.cycle.keep_alive = False


def tls_extension(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> dict[object, object]:
    der = ssl_object.getpeercert(binary_form=True)
    version = ssl_object.version()
    name = None
    if der:
        try:
            name = x509.load_der_x509_certificate(der).subject.rfc4514_string()
        except ValueError:
            name = None
    return {
        "server_cert": None,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "client_cert_name": name,
        "client_cert_error": None,
        "tls_version": TLS_VERSIONS.get(version or ""),
        "cipher_suite": None,
    }
