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

A review is answered here, without ASGI (``Direct``). The decision is synchronous CPU work, so
an ASGI task per request, its event, message dicts and two writes are pure overhead: a fifth of
the instructions a 3-container Pod costs (callgrind). When a ``POST`` to a direct route arrives
plain (a Content-Length within the limit, a JSON Content-Type, no ``Expect``, nothing before
it still unanswered, a client the certificate gate admits), its body is collected as the parser
hands it over and the route answers it in the same callback, in one write. Anything else goes
to the ASGI app, whose route answers it with the same two methods.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import httptools
import orjson
from cryptography import x509
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from webhook.server.budget import ANSWERING, IDLE, READING, ClientLimits

log = logging.getLogger("webhook.server")

TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
DEFAULT_READ_TIMEOUT = 10.0
# Go's net/http allows 1 MiB; the API server sends a few hundred bytes.
MAX_HEADER_BYTES = 64 * 1024
# How long a refused client gets to read its 431 before the connection is cut.
REFUSAL_GRACE_SECONDS = 1.0
# Answers larger than this are written a chunk at a time, as the client takes them.
WRITE_CHUNK = 256 * 1024
# A review with any of these headers is left to ASGI, which knows what each asks for.
NOT_PLAIN = frozenset({b"expect", b"transfer-encoding", b"upgrade"})


class DirectRoute(Protocol):
    def refusal(self, headers: list[tuple[bytes, bytes]]) -> object | None:
        """Not None when the headers are wrong: ASGI then answers the request."""

    def answer(self, query: bytes, body: bytes, started: float) -> tuple[int, bytes]:
        """The status and JSON body for a whole request body."""


def _admit_all(tls: Mapping[object, object] | None) -> bool:
    return True


@dataclass(frozen=True)
class Direct:
    """The routes the protocol answers itself, by raw path, and which connections may use them."""

    routes: Mapping[bytes, DirectRoute] = field(default_factory=dict)
    admits: Callable[[Mapping[object, object] | None], bool] = _admit_all


@dataclass
class _Paced:
    payload: bytes
    status: int
    keep_alive: bool
    offset: int = 0


class WebhookHttpProtocol(HttpToolsProtocol):
    # uvicorn builds the protocol from a class; settings arrive as a subclass's attributes (``configured``).
    read_timeout: float = DEFAULT_READ_TIMEOUT
    max_header_bytes: int = MAX_HEADER_BYTES
    direct: Direct = Direct()
    limits: ClientLimits = ClientLimits()

    _direct_routes: Mapping[bytes, DirectRoute] = {}  # empty for a connection the gate refuses
    # The direct request being read: its route, query string and start; None when there is none.
    _pending: tuple[DirectRoute, bytes, float] | None = None
    _body: list[bytes]
    _close_after = False  # shutdown began while a direct request was being read

    _tls: dict[object, object] | None = None
    _deadline: asyncio.TimerHandle | None = None
    _in_headers = True  # reading a request line and headers, so their size counts
    _refused = False  # the headers were too long: nothing more is parsed or answered
    _header_bytes = 0
    _received = 0  # bytes received since the deadline was armed, for the log line
    _body_held = 0  # body bytes of the request being read, charged to ``limits.buffers``
    _write_held = 0  # answer bytes the client has not taken yet, charged likewise
    _write_deadline: asyncio.TimerHandle | None = None
    _evicted = False
    _paced: _Paced | None = None  # a large direct answer being written as the client takes it

    @classmethod
    def configured(cls, read_timeout: float, max_header_bytes: int = MAX_HEADER_BYTES,
                   direct: Direct | None = None, limits: ClientLimits | None = None) -> type[WebhookHttpProtocol]:
        return type(cls.__name__, (cls,), {"read_timeout": read_timeout, "max_header_bytes": max_header_bytes,
                                           "direct": direct or Direct(), "limits": limits or ClientLimits()})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
            self._tls = tls_extension(ssl_object)
        if not self.limits.connections.admit(self):
            log.warning("refused a connection from %s: all %d connections of this worker are being answered "
                        "(--max-connections)", _peer(self.client), self.limits.connections.limit,
                        extra={"fields": {"client": _peer(self.client)}})
            self._evicted = self._refused = True
            transport.abort()
            return
        if self.direct.routes and self.direct.admits(self._tls):
            self._direct_routes = self.direct.routes  # a refused client is answered 401 by the ASGI app
        self._arm_deadline()  # a connection that never sends a request is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        self._cancel_write_deadline()
        limits = self.limits
        limits.buffers.release(self)
        limits.connections.leave(self)
        limits.heap.closed(self.loop)
        super().connection_lost(exc)
        self._unset_keepalive_if_required()  # uvicorn does this only when exc is None: see above

    def data_received(self, data: bytes) -> None:
        if self._evicted or self.transport.is_closing():
            return  # refused, timed out or evicted: read nothing more
        if self._deadline is None:
            self._arm_deadline()  # the first byte of the next request
        self._received += len(data)
        if self._in_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        if self._evicted:
            return
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
        if self._paced is not None:  # pipelined behind a large answer still being written
            self._evicted = self._refused = True
            self.transport.abort()
            return
        # Headers that arrived in one piece are measured here; a stream that never ends, above.
        if len(self.url) + sum(len(name) + len(value) for name, value in self.headers) > self.max_header_bytes:
            self._refused = True  # answered once the parser returns; the app never sees the request
            return
        if self._direct_routes and self._start_direct():
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        if self._pending is not None:
            self._body.append(body)
        else:
            super().on_body(body)
        self._body_held += len(body)
        self.limits.buffers.hold(self, self._body_held + self._write_held)  # may evict this very connection

    def on_message_complete(self) -> None:
        if self._refused:
            return
        if self._pending is not None:
            self._answer_direct(*self._pending)
        else:
            super().on_message_complete()
        self._cancel_deadline()
        self._in_headers, self._header_bytes = True, 0

    def on_response_complete(self) -> None:
        self._body_held = 0
        self._cancel_write_deadline()
        if self._write_held == 0:
            self.limits.buffers.release(self)
        self.limits.connections.touch(self)  # the last to be displaced when the worker is full
        super().on_response_complete()

    def pause_writing(self) -> None:
        """The client is not taking its answer as fast as we write it: charge what waits, and give it
        ``write_timeout`` seconds to take the whole answer."""
        super().pause_writing()
        paced = self._paced
        self._write_held = self.transport.get_write_buffer_size() + (len(paced.payload) if paced else 0)
        if self._write_deadline is None:
            self._write_deadline = self.loop.call_later(self.limits.write_timeout, self._on_write_deadline)
        self.limits.buffers.hold(self, self._body_held + self._write_held)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._write_held = 0
        if self._paced is not None:
            self._pump()
        else:
            self.limits.buffers.hold(self, self._body_held)

    def stage(self) -> int:
        if self.flow.write_paused:
            return ANSWERING
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            return READING if cycle.more_body else ANSWERING
        if self._pending is not None or (self._deadline is not None and self._received):
            return READING
        return IDLE

    def evict(self, why: str) -> None:
        """Let go of everything this connection holds. A request still being read directly is told
        503, so its client can retry; anything else is cut off."""
        if self._evicted or self.transport.is_closing():
            return
        log.warning("closed the connection from %s: %s", _peer(self.client), why,
                    extra={"fields": {"client": _peer(self.client)}})
        reading = self._pending is not None
        self._evicted = self._refused = True  # nothing more is read, parsed or answered
        self._pending, self._body, self._body_held, self._write_held, self._paced = None, [], 0, 0, None
        self._cancel_deadline()
        self._cancel_write_deadline()
        if reading:
            self._refuse(503, "the server is holding too much for its clients; retry", "ServiceUnavailable")
        else:
            self.loop.call_soon(self.transport.abort)  # not from inside the transport's own write

    def shutdown(self) -> None:
        if self._pending is not None or self._paced is not None:
            self._close_after = True  # answer the request being read (or finish writing it), then close
        elif self.cycle is None or self.cycle.response_complete:
            self.transport.abort()
        else:
            self.cycle.keep_alive = False

    def _start_direct(self) -> bool:
        """Take the request if it is a plain review; False leaves it to ASGI."""
        if self.parser.get_method() != b"POST" or self.flow.write_paused:
            return False  # a client that does not read its answers is slowed down by ASGI's back-pressure
        if self.cycle is not None and not self.cycle.response_complete:
            return False  # the answer before it is still being written: ASGI keeps them in order
        url = httptools.parse_url(self.url)
        route = self._direct_routes.get(url.path)
        if route is None:
            return False
        names = {name for name, _ in self.headers}
        if b"content-length" not in names or not names.isdisjoint(NOT_PLAIN):
            return False
        if route.refusal(self.headers) is not None:
            return False  # answered by the ASGI route, with its reason
        self._pending = (route, url.query or b"", time.monotonic())
        self._body = []
        return True

    def _answer_direct(self, route: DirectRoute, query: bytes, started: float) -> None:
        self._pending = None
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._body = []
        try:
            status, payload = route.answer(query, body, started)
        except Exception:  # as uvicorn does for an app: log it, answer 500, close
            log.exception("internal error answering %s", self.url.decode("latin-1"))
            status, payload, self._close_after = 500, INTERNAL_ERROR_BODY, True
        # as uvicorn does: an HTTP/1.0 client is answered in HTTP/1.1 and closed, whatever it asked for
        keep_alive = (not self._close_after and self.parser.should_keep_alive()
                      and self.parser.get_http_version() != "1.0")
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += (name, b": ", value, b"\r\n")
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\n" % len(payload))
        if not keep_alive:
            head.append(b"connection: close\r\n")
        if len(payload) <= WRITE_CHUNK:
            head += (b"\r\n", payload)
            self.transport.write(b"".join(head))
            self._finish_direct(status, keep_alive)
            return
        head.append(b"\r\n")
        self.transport.write(b"".join(head))
        self._paced = _Paced(payload, status, keep_alive)
        self.flow.pause_reading()  # nothing more is read until this answer has gone
        self._pump()

    def _pump(self) -> None:
        """Write a large answer a chunk at a time, as fast as the client takes it: the transport would
        otherwise take it all at once, hidden from flow control, for as long as the client likes."""
        paced = self._paced
        if paced is None:
            return
        while not self.flow.write_paused:
            piece = paced.payload[paced.offset : paced.offset + WRITE_CHUNK]
            paced.offset += len(piece)
            self.transport.write(piece)
            if paced.offset >= len(paced.payload):
                self._paced = None
                self._write_held = 0
                self._finish_direct(paced.status, paced.keep_alive)
                return
        self._write_held = len(paced.payload) + self.transport.get_write_buffer_size()  # all of it is held
        self.limits.buffers.hold(self, self._body_held + self._write_held)

    def _finish_direct(self, status: int, keep_alive: bool) -> None:
        if self.access_log:
            self.access_logger.info('%s - "POST %s HTTP/%s" %d', _peer(self.client), self.url.decode("latin-1"),
                                    self.parser.get_http_version(), status)
        if not keep_alive or self._close_after:
            self.transport.close()
        self.on_response_complete()

    def _arm_deadline(self) -> None:
        self._cancel_deadline()
        self._received = 0
        self._deadline = self.loop.call_later(self.read_timeout, self._on_deadline)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _cancel_write_deadline(self) -> None:
        if self._write_deadline is not None:
            self._write_deadline.cancel()
            self._write_deadline = None

    def _on_write_deadline(self) -> None:
        self._write_deadline = None
        if self.transport.is_closing():
            return
        log.warning("closed the connection from %s: it did not take its answer (%d bytes waiting) within %g s",
                    _peer(self.client), self.transport.get_write_buffer_size(), self.limits.write_timeout,
                    extra={"fields": {"client": _peer(self.client)}})
        self.transport.abort()

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
        self._refuse(431, message, "RequestHeaderFieldsTooLarge")

    def _refuse(self, code: int, message: str, reason: str) -> None:
        """Answer ``code`` with a Status and close, unless an earlier answer is still being written."""
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.abort()  # an answer to a request before this one is still being written
            return
        body = orjson.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                             "message": message, "reason": reason, "code": code})
        self.transport.write(STATUS_LINE[code] + b"content-type: application/json\r\n"
                             b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)
        self.transport.close()  # unlike abort, delivers the answer first
        # but TLS then waits for the client's close_notify, reading whatever it still sends
        self.loop.call_later(REFUSAL_GRACE_SECONDS, self.transport.abort)


INTERNAL_ERROR_BODY = orjson.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                    "message": "Internal Server Error", "reason": "InternalError", "code": 500})


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
