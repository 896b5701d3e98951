"""uvicorn's httptools protocol, with a deadline for reading each request, a cap on its headers,
a shutdown that does not hang on idle TLS connections, and the ASGI TLS extension in every
request scope.

uvicorn closes a connection only when it stays idle after a response (``timeout_keep_alive``).
A client that opens a connection and sends nothing, or sends a request a byte at a time, is
never closed, and each one holds a socket and a parser for as long as it likes. So every
request must arrive whole, headers and body, within ``read_timeout`` of its first byte (for
the first request, of the connection being made); otherwise the connection is aborted. Time
the app spends answering does not count, nor does time when we stopped reading (flow control),
and idle time between requests is still governed by the keep-alive timeout.

httptools keeps a header that has not ended in memory, and appends each piece to it, so an
endless header costs memory without bound and CPU that grows with its square. Headers beyond
``max_header_bytes`` get 431 and the connection is closed. The API server sends a few hundred
bytes of them.

Closing a TLS transport waits for the peer's close_notify, up to 30 s; an idle keep-alive
client (such as the API server) never sends one, so a plain close stalls every shutdown.
An idle connection has nothing in flight, so aborting it loses nothing. A client that is too
slow is aborted for the same reason: waiting for its close_notify would hand it the socket for
another 30 s.

uvicorn forgets to cancel its keep-alive timer when a connection ends with an error (a reset,
say), and the timer holds the whole connection, about 50 KB with TLS, until it fires; so it is
cancelled here however the connection ends.

uvicorn does not tell the app who the client is over TLS; the client certificate check needs
it, so the connection's TLS facts are worked out once, at connection time, and put in each
request's ``scope["extensions"]["tls"]`` as the ASGI TLS extension describes.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

import orjson
from cryptography import x509
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("webhook.server")

TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
DEFAULT_READ_TIMEOUT = 10.0
# Go's net/http allows 1 MiB; the API server sends a few hundred bytes.
MAX_HEADER_BYTES = 64 * 1024
# How long a refused client gets to read its 431 before the connection is cut.
REFUSAL_GRACE_SECONDS = 1.0


class WebhookHttpProtocol(HttpToolsProtocol):
    # uvicorn builds the protocol from a class; settings arrive as a subclass's attributes (``configured``).
    read_timeout: float = DEFAULT_READ_TIMEOUT
    max_header_bytes: int = MAX_HEADER_BYTES

    _tls: dict[object, object] | None = None
    _deadline: asyncio.TimerHandle | None = None
    _in_headers = True  # reading a request line and headers, so their size counts
    _refused = False  # the headers were too long: nothing more is parsed or answered
    _header_bytes = 0
    _received = 0  # bytes received since the deadline was armed, for the log line

    @classmethod
    def configured(cls, read_timeout: float, max_header_bytes: int = MAX_HEADER_BYTES) -> type[WebhookHttpProtocol]:
        return type(cls.__name__, (cls,), {"read_timeout": read_timeout, "max_header_bytes": max_header_bytes})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
            self._tls = tls_extension(ssl_object)
        self._arm_deadline()  # a connection that never sends a request is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)
        self._unset_keepalive_if_required()  # uvicorn does this only when exc is None: see above

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return  # refused or timed out: read nothing more
        if self._deadline is None:
            self._arm_deadline()  # the first byte of the next request
        self._received += len(data)
        if self._in_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        too_long = self._refused or (self._in_headers and self._header_bytes > self.max_header_bytes)
        if too_long and not self.transport.is_closing():
            self._refuse_headers()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._tls is not None:
            self.scope["extensions"] = {"tls": self._tls}
        if self._deadline is None:
            self._arm_deadline()  # a pipelined request that arrived with the one before

    def on_headers_complete(self) -> None:
        self._in_headers = False
        # Headers that arrived in one piece are measured here; a stream that never ends, above.
        if len(self.url) + sum(len(name) + len(value) for name, value in self.headers) > self.max_header_bytes:
            self._refused = True  # answered once the parser returns; the app never sees the request
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        super().on_message_complete()
        self._cancel_deadline()
        self._in_headers, self._header_bytes = True, 0

    def shutdown(self) -> None:
        if self.cycle is None or self.cycle.response_complete:
            self.transport.abort()
        else:
            self.cycle.keep_alive = False

    def _arm_deadline(self) -> None:
        self._cancel_deadline()
        self._received = 0
        self._deadline = self.loop.call_later(self.read_timeout, self._on_deadline)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _on_deadline(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.flow.read_paused:  # we stopped reading, not the client: give it the time again
            self._arm_deadline()
            return
        if self._received == 0:
            what = "sent nothing"
        elif self._in_headers:
            what = f"sent {self._received} bytes but not the whole request line and headers"
        else:
            what = f"sent {self._received} bytes but not the whole body"
        log.info("closed the connection from %s: it %s within %g s", _peer(self.client), what, self.read_timeout,
                 extra={"fields": {"client": _peer(self.client), "bytes": self._received}})
        self.transport.abort()

    def _refuse_headers(self) -> None:
        message = f"the request line and headers exceed {self.max_header_bytes} bytes"
        log.info("refused a request from %s: %s", _peer(self.client), message,
                 extra={"fields": {"client": _peer(self.client)}})
        self._cancel_deadline()
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.abort()  # an answer to a request before this one is still being written
            return
        body = orjson.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                             "message": message, "reason": "RequestHeaderFieldsTooLarge", "code": 431})
        self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
                             b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)
        self.transport.close()  # unlike abort, delivers the answer first
        # but TLS then waits for the client's close_notify, reading whatever it still sends
        self.loop.call_later(REFUSAL_GRACE_SECONDS, self.transport.abort)


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "an unknown client"


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
