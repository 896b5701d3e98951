"""Abusive clients against the real server over TLS on loopback: slow drips, silence, endless
headers and bodies, and a thousand idle connections. Each is cut off or refused, and a normal
client is served all the while.

"Closed after the timeout" is the property under test, so those waits are asserted, with
generous bounds; every socket has its own timeout, and every loop a bound.
"""

from __future__ import annotations

import contextlib
import resource
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import SERVICE_HOST, ServerProcess
from tests.reviews import pod_review
from tests.steady import steady_client
from tests.test_fuzz import rss_kb
from tests.tlsutil import eventually, find_logs, wait_for_log

READ_TIMEOUT = 2.0
SLACK = 8.0  # how much later than the timeout a close may come on a loaded machine
DRIP_INTERVAL = 0.1
IDLE_CONNECTIONS = 1000
LOW_SOFT_LIMIT = 256  # what the server is started with in the idle test; it must raise it itself
RESET_CONNECTIONS = 400


def tls_socket(server: ServerProcess, timeout: float = 10) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(server.cert_dir / "ca.crt"))
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    return context.wrap_socket(raw, server_hostname=SERVICE_HOST)


def request_bytes(body: bytes, *, path: str = "/validate?timeout=10s", extra: bytes = b"") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {SERVICE_HOST}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n").encode() + extra + b"\r\n" + body


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """A response's status line and headers (lower-cased), and whatever of its body came with them."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a whole response: {data[:200]!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head.lower(), body


def read_whole(sock: socket.socket) -> tuple[bytes, bytes]:
    """A response's head (lower-cased) and its whole body, by its Content-Length."""
    head, body = read_head(sock)
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.startswith(b"content-length:"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the middle of a response body")
        body += chunk
    return head, body


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a Content-Length, read to its end: its status and body."""
    head, body = read_whole(sock)
    return int(head.split(b" ", 2)[1]), body


def closed_by_peer(sock: socket.socket, wait: float) -> bool:
    """True when the server has closed the connection (EOF or reset) within ``wait`` seconds."""
    sock.settimeout(wait)
    try:
        return sock.recv(65536) == b""
    except TimeoutError:
        return False
    except OSError:  # a reset, or a TLS EOF without close_notify: closed all the same
        return True


@dataclass
class SlowClient:
    """Sends ``first`` at once, then ``drip`` one byte every DRIP_INTERVAL, and notes when the server
    cut it off: counted from the connection for a first request, from the first byte for a later one."""

    name: str
    connect: Any  # () -> socket
    drip: bytes
    first: bytes = b""
    first_reply: bool = False  # the first bytes are a whole request: read its answer before dripping
    closed_after: float | None = None
    dripped: int = 0
    error: str = ""

    def run(self) -> None:
        try:
            sock = self.connect()
        except OSError as exc:
            self.error = f"could not connect: {exc!r}"
            return
        with sock:
            started = time.monotonic()
            try:
                if self.first:
                    sock.sendall(self.first)
                if self.first_reply:
                    status, _ = read_response(sock)
                    if status != 200:
                        self.error = f"the first request got {status}"
                        return
                    started = time.monotonic()  # the clock starts again at the next request's first byte
                for index in range(len(self.drip) if self.drip else 1):
                    if self.drip:
                        sock.sendall(self.drip[index:index + 1])
                        self.dripped += 1
                    if closed_by_peer(sock, DRIP_INTERVAL if self.drip else READ_TIMEOUT + SLACK):
                        self.closed_after = time.monotonic() - started
                        return
            except OSError:
                self.closed_after = time.monotonic() - started
                return
            self.error = f"never closed; dripped {self.dripped} of {len(self.drip)} bytes"


@pytest.fixture(scope="module")
def guarded(start_server: Any) -> Iterator[ServerProcess]:
    with start_server("--request-read-timeout", str(READ_TIMEOUT), "--max-body-bytes", "65536") as server:
        yield server


def patient_keep_alive(server: ServerProcess, problems: list[str]) -> None:
    """One review, a wait longer than the read timeout, and another on the same connection: idle time
    between requests is governed by the keep-alive timeout, never by the read timeout."""
    try:
        with tls_socket(server) as sock:
            for round_ in range(2):
                body = orjson.dumps(pod_review("nginx", uid=f"idle-{round_}"))
                sock.sendall(request_bytes(body))
                status, reply = read_response(sock)
                if status != 200 or orjson.loads(reply)["response"]["uid"] != f"idle-{round_}":
                    problems.append(f"round {round_}: {status} {reply[:200]!r}")
                if round_ == 0 and closed_by_peer(sock, READ_TIMEOUT + 1):
                    problems.append("an idle keep-alive connection was closed after the read timeout")
                    return
    except OSError as exc:
        problems.append(repr(exc))


def test_slow_and_silent_clients_are_closed_after_the_timeout_while_others_are_served(
    guarded: ServerProcess,
) -> None:
    body = orjson.dumps(pod_review("nginx"))
    request = request_bytes(body)
    head = request[: -len(body)]
    probe = ("127.0.0.1", guarded.probe_port)
    clients = [
        SlowClient("headers a byte at a time", lambda: tls_socket(guarded), request),
        SlowClient("body a byte at a time", lambda: tls_socket(guarded), body, first=head),
        SlowClient("silent after the handshake", lambda: tls_socket(guarded), b""),
        SlowClient("the next request on a kept-alive connection, after blank lines", lambda: tls_socket(guarded),
                   b"\r\n" * 40 + request, first=request, first_reply=True),
        SlowClient("headers a byte at a time on the probe port", lambda: socket.create_connection(probe, timeout=10),
                   b"GET /readyz HTTP/1.1\r\nHost: probes\r\n\r\n"),
    ]
    patient: list[str] = []
    with steady_client(guarded) as steady:
        threads = [threading.Thread(target=client.run, daemon=True) for client in clients]
        threads.append(threading.Thread(target=patient_keep_alive, args=(guarded, patient), daemon=True))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=READ_TIMEOUT + SLACK + 10)
        answered_meanwhile = steady.answered
    for client in clients:
        assert not client.error, f"{client.name}: {client.error}"
        assert client.closed_after is not None, client.name
        # Not before the timeout (that would cut off honest clients), and not long after it.
        assert READ_TIMEOUT - 0.3 <= client.closed_after <= READ_TIMEOUT + SLACK, (client.name, client.closed_after)
        if client.drip:
            assert client.dripped < len(client.drip), f"{client.name}: the whole request got through"
    assert steady.failures == []
    assert answered_meanwhile >= 5
    assert patient == []
    for what in ("sent nothing within 2 s", "but not the whole request line and headers within 2 s",
                 "but not the whole body within 2 s"):
        assert find_logs(guarded, what, level="INFO"), what
    assert not find_logs(guarded, "Exception in ASGI application")


@dataclass
class Flood:
    sent: int = 0
    answer: bytes = b""
    cut_after: float | None = None  # seconds until the server closed the connection


def flood(sock: ssl.SSLSocket, chunk: bytes, seconds: float) -> Flood:
    """Send ``chunk`` after ``chunk`` as fast as the server takes them, for at most ``seconds``,
    collecting whatever the server answers, until it closes the connection."""
    result = Flood()
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        try:
            sock.settimeout(0.5)
            with contextlib.suppress(TimeoutError):  # the server stopped reading: see what it said
                sock.sendall(chunk)
                result.sent += len(chunk)
            sock.settimeout(0.001)
            with contextlib.suppress(TimeoutError, ssl.SSLWantReadError):
                data = sock.recv(65536)
                if not data:
                    result.cut_after = time.monotonic() - started
                    return result
                result.answer += data
        except OSError:
            result.cut_after = time.monotonic() - started
            return result
    return result


@pytest.mark.parametrize("where", ["header", "request line"])
def test_endless_headers_get_431_and_are_cut_off_without_growing_memory(guarded: ServerProcess, where: str) -> None:
    before = rss_kb(guarded.process.pid)
    with tls_socket(guarded) as sock:
        sock.sendall(b"POST /validate?x=" if where == "request line" else b"POST /validate HTTP/1.1\r\nX-Junk: ")
        result = flood(sock, b"a" * 65536, seconds=5)
    growth_mb = (rss_kb(guarded.process.pid) - before) / 1024
    assert result.cut_after is not None, f"still reading after {result.sent >> 20} MiB of headers"
    assert result.answer == b"" or result.answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert growth_mb < 20, f"RSS grew by {growth_mb:.1f} MB"
    wait_for_log(guarded, "the request line and headers exceed 65536 bytes")
    client = guarded.client()
    assert client.review("/validate", pod_review("nginx"))["allowed"] is True
    client.close()


def answered_then_reset(server: ServerProcess, count: int) -> None:
    """Connections that get one answer and then end with a TCP reset, as a load balancer or proxy
    purging its idle connections ends them."""
    request = request_bytes(orjson.dumps(pod_review("nginx")))
    for _ in range(count):
        with tls_socket(server) as sock:
            sock.sendall(request)
            status, _ = read_response(sock)
            assert status == 200
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends RST


def test_connections_reset_by_the_client_are_freed_at_once(guarded: ServerProcess) -> None:
    """uvicorn cancels the keep-alive timer only when a connection ends cleanly; after a reset the
    timer held the protocol, its TLS buffers and the last request for the whole keep-alive timeout
    (100 s), about 50 KB a connection."""
    answered_then_reset(guarded, 50)  # allocator pools and caches reach their working size
    before = rss_kb(guarded.process.pid)
    answered_then_reset(guarded, RESET_CONNECTIONS)
    growth_mb = (rss_kb(guarded.process.pid) - before) / 1024
    assert growth_mb < 4, f"RSS grew by {growth_mb:.1f} MB over {RESET_CONNECTIONS} reset connections"


@pytest.mark.parametrize("split", ["the read that crosses the limit ends them", "they cross the limit unfinished"])
def test_oversized_headers_are_answered_with_431(guarded: ServerProcess, split: str) -> None:
    """Headers are measured when they end, and while they stream; either way the answer is 431."""
    if split.startswith("the read"):  # just under the limit, then a last small piece that ends the headers
        request = request_bytes(b"{}", extra=b"X-Junk: " + b"a" * (65536 - 200) + b"\r\n" + b"X-Last: " + b"b" * 300
                                + b"\r\n")
        pieces = [request[:65536 - 100], request[65536 - 100:]]
    else:
        request = request_bytes(b"{}", extra=b"X-Junk: " + b"a" * 100_000 + b"\r\n")
        pieces = [request[start:start + 4096] for start in range(0, len(request), 4096)]
    with tls_socket(guarded) as sock:
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(0.05)  # each piece its own read on the server
        status, body = read_response(sock)
        assert status == 431
        assert orjson.loads(body) == {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": 431,
            "reason": "RequestHeaderFieldsTooLarge", "message": "the request line and headers exceed 65536 bytes"}
        assert closed_by_peer(sock, 10)


def test_a_chunked_body_that_never_ends_is_answered_413_at_the_limit_and_closed(guarded: ServerProcess) -> None:
    with tls_socket(guarded) as sock:
        sock.sendall(b"POST /validate HTTP/1.1\r\nHost: " + SERVICE_HOST.encode()
                     + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        result = flood(sock, b"4000\r\n" + b" " * 16384 + b"\r\n", seconds=10)  # "never ends", within a bound
    assert result.answer.startswith(b"HTTP/1.1 413 "), result.answer[:200]
    assert b"body exceeds the limit of 65536 bytes" in result.answer
    assert result.cut_after is not None, f"still reading after {result.sent >> 20} MiB"


# --- a thousand idle connections -----------------------------------------------------------------

@pytest.fixture
def open_files() -> Iterator[None]:
    """Room in this process for the idle connections and their server's answers."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * IDLE_CONNECTIONS + 512
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the hard open-file limit ({hard}) is below {wanted}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def soft_open_files(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-file limit")


def test_a_thousand_idle_connections_do_not_lock_out_a_new_client(pki: Path, tmp_path: Path,
                                                                   open_files: None) -> None:
    # Started with a soft limit far below a thousand connections, as some container runtimes do.
    shell = ["/bin/sh", "-c", f'ulimit -Sn {LOW_SOFT_LIMIT} && exec "$0" -m webhook "$@"', sys.executable]
    server = ServerProcess(["--request-read-timeout", "120", "--log-format", "text"], pki, tmp_path / "serve.log",
                           executable=shell)
    idle: list[socket.socket] = []
    try:
        server.wait_ready()
        assert soft_open_files(server.process.pid) > 2 * IDLE_CONNECTIONS
        assert find_logs(server, f"raised the open-file limit from {LOW_SOFT_LIMIT} to", level="INFO")
        keep_alive = server.client(timeout=10)
        assert keep_alive.review("/validate", pod_review("nginx"))["allowed"] is True
        for index in range(IDLE_CONNECTIONS):
            # Half finish the TLS handshake and then say nothing; half never even start it.
            if index % 2:
                idle.append(tls_socket(server))
            else:
                idle.append(socket.create_connection(("127.0.0.1", server.port), timeout=10))

        def served_on_a_new_connection() -> bool:
            fresh = server.client(timeout=10)
            try:
                return fresh.review("/validate", pod_review("evil.io/x"))["allowed"] is False
            finally:
                fresh.close()

        assert served_on_a_new_connection()
        assert keep_alive.review("/validate", pod_review("nginx"))["allowed"] is True
        assert all(not closed_by_peer(sock, 0.001) for sock in idle[1::2][:50])  # they really are still open
        keep_alive.close()
    finally:
        for sock in idle:
            sock.close()
        server.stop()
    assert "Too many open files" not in server.logs()


def test_a_server_that_cannot_raise_its_limit_says_so(pki: Path, tmp_path: Path) -> None:
    shell = ["/bin/sh", "-c", 'ulimit -n 512 && exec "$0" -m webhook "$@"', sys.executable]  # hard limit too
    server = ServerProcess(["--log-format", "text"], pki, tmp_path / "serve.log", executable=shell)
    try:
        server.wait_ready()
        eventually(lambda: find_logs(server, "only 512 open files are allowed (hard limit 512)", level="WARNING"),
                   "a warning about the low limit")
    finally:
        server.stop()
