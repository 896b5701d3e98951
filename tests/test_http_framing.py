"""How reviews are framed on the wire, over real TLS: pipelined requests, bodies in pieces,
``Connection: close``, HTTP/1.0, ``Expect: 100-continue``, chunked bodies, the access log, a
client that reads its answers late, and a shutdown while a body is still arriving.

The server answers a plain review inside its protocol and leaves anything else to ASGI
(``webhook/server/protocol.py``); these are the cases where the two meet or where one is
easy to get wrong, and each must look on the wire exactly as a plain HTTP/1.1 server would.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import SERVICE_HOST, ServerProcess
from tests.reviews import pod_review, project, review
from tests.test_abusive_clients import (
    closed_by_peer,
    read_head,
    read_response,
    read_whole,
    request_bytes,
    tls_socket,
)
from tests.tlsutil import wait_for_log

DENIED_IMAGE = "evil.example.com/miner:1"


def body_of(uid: str, *images: str) -> bytes:
    return orjson.dumps(pod_review(*(images or ("nginx",)), uid=uid))


def verdict(body: bytes) -> tuple[str, bool]:
    answer = orjson.loads(body)["response"]
    return answer["uid"], answer["allowed"]


@pytest.fixture(scope="module")
def server(start_server: Any) -> Iterator[ServerProcess]:
    with start_server("--access-log") as started:
        yield started


def test_pipelined_requests_are_answered_in_order(server: ServerProcess) -> None:
    """Reviews and probes sent in one write, each answered in turn on the same connection."""
    mutate = orjson.dumps(review(project({"owner": "docs-team"}), uid="p-1"))
    wire = b"".join([
        request_bytes(body_of("a-1")),
        f"GET /healthz HTTP/1.1\r\nHost: {SERVICE_HOST}\r\n\r\n".encode(),
        request_bytes(body_of("a-2", DENIED_IMAGE)),
        request_bytes(mutate, path="/mutate?timeout=10s"),
        request_bytes(body_of("a-3")),
    ])
    with tls_socket(server) as sock:
        sock.sendall(wire)
        answers = [read_response(sock) for _ in range(5)]
    statuses = [status for status, _ in answers]
    assert statuses == [200] * 5
    assert verdict(answers[0][1]) == ("a-1", True)
    assert orjson.loads(answers[1][1]) == {"status": "ok"}
    assert verdict(answers[2][1]) == ("a-2", False)
    patched = orjson.loads(answers[3][1])["response"]
    assert patched["uid"] == "p-1" and patched["patchType"] == "JSONPatch"
    assert verdict(answers[4][1]) == ("a-3", True)


def test_a_body_that_arrives_a_few_bytes_at_a_time_is_judged_whole(server: ServerProcess) -> None:
    wire = request_bytes(body_of("drip-1", DENIED_IMAGE))
    head_end = wire.index(b"\r\n\r\n") + 4
    with tls_socket(server) as sock:
        sock.sendall(wire[:head_end])
        body = wire[head_end:]
        step = max(1, len(body) // 40)
        for start in range(0, len(body), step):
            sock.sendall(body[start:start + step])
            time.sleep(0.005)
        status, answer = read_response(sock)
        assert status == 200 and verdict(answer) == ("drip-1", False)
        # and the connection serves the next review as usual
        sock.sendall(request_bytes(body_of("drip-2")))
        assert verdict(read_response(sock)[1]) == ("drip-2", True)


def test_connection_close_is_answered_then_the_connection_is_closed(server: ServerProcess) -> None:
    with tls_socket(server) as sock:
        sock.sendall(request_bytes(body_of("close-1"), extra=b"Connection: close\r\n"))
        head, answer = read_whole(sock)
        assert head.startswith(b"http/1.1 200 ") and verdict(answer) == ("close-1", True)
        assert b"\r\nconnection: close" in head
        assert closed_by_peer(sock, 5)


@pytest.mark.parametrize("connection", ["", "Connection: keep-alive\r\n"])
def test_an_http_1_0_review_is_answered_and_closed(server: ServerProcess, connection: str) -> None:
    """As uvicorn treats HTTP/1.0: answered, then closed, even when it asks to be kept alive."""
    body = body_of("old-1")
    wire = (f"POST /validate HTTP/1.0\r\nHost: {SERVICE_HOST}\r\nContent-Type: application/json\r\n"
            f"{connection}Content-Length: {len(body)}\r\n\r\n").encode() + body
    with tls_socket(server) as sock:
        sock.sendall(wire)
        head, answer = read_whole(sock)
        assert head.startswith(b"http/1.1 200 ") and verdict(answer) == ("old-1", True)
        assert b"\r\nconnection: close" in head
        assert closed_by_peer(sock, 5)


def test_expect_100_continue_gets_continue_then_the_answer(server: ServerProcess) -> None:
    body = body_of("expect-1")
    headers = request_bytes(body, extra=b"Expect: 100-continue\r\n")[:-len(body)]
    with tls_socket(server) as sock:
        sock.sendall(headers)
        head, rest = read_head(sock)
        assert head.startswith(b"http/1.1 100 ") and rest == b""
        sock.sendall(body)
        status, answer = read_response(sock)
        assert status == 200 and verdict(answer) == ("expect-1", True)


def test_a_chunked_review_within_the_limit_is_judged(server: ServerProcess) -> None:
    body = body_of("chunked-1", DENIED_IMAGE)
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in (body[:100], body[100:]))
    wire = (f"POST /validate?timeout=10s HTTP/1.1\r\nHost: {SERVICE_HOST}\r\nContent-Type: application/json\r\n"
            f"Transfer-Encoding: chunked\r\n\r\n").encode() + chunks + b"0\r\n\r\n"
    with tls_socket(server) as sock:
        sock.sendall(wire)
        status, answer = read_response(sock)
    assert status == 200 and verdict(answer) == ("chunked-1", False)


def test_the_access_log_has_a_line_for_each_request_on_both_ports(server: ServerProcess) -> None:
    with tls_socket(server) as sock:
        sock.sendall(request_bytes(body_of("logged-1"), path="/validate?timeout=7s"))
        assert read_response(sock)[0] == 200
    with socket.create_connection(("127.0.0.1", server.probe_port), timeout=10) as plain:
        plain.sendall(b"GET /readyz HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
        assert read_response(plain)[0] == 200
    review_line = wait_for_log(server, '"POST /validate?timeout=7s HTTP/1.1" 200')
    probe_line = wait_for_log(server, '"GET /readyz HTTP/1.1" 200')
    assert review_line[0].logger == probe_line[0].logger == "uvicorn.access"


def test_a_client_that_reads_its_answers_late_gets_all_of_them_in_order(server: ServerProcess) -> None:
    """Thousands of pipelined reviews, unread for a while, so that the server's writes back up and
    later requests take the ASGI path behind the direct ones: every one is answered, in order."""
    count = 3000
    wire = b"".join(request_bytes(body_of(f"late-{i}")) for i in range(count))
    with tls_socket(server, timeout=30) as sock:
        sender = threading.Thread(target=sock.sendall, args=(wire,), daemon=True)
        sender.start()
        time.sleep(1.0)  # the server's writes back up meanwhile
        uids = []
        for _ in range(count):
            status, answer = read_response(sock)
            assert status == 200
            uids.append(verdict(answer)[0])
        sender.join(10)
    assert uids == [f"late-{i}" for i in range(count)]


def test_shutdown_while_a_body_is_arriving_answers_it_then_closes(pki: Path, tmp_path: Path) -> None:
    """uvicorn shuts idle connections at the end of the drain; one in the middle of a review is
    not idle: it gets its answer, marked ``connection: close``, and only then is closed."""
    server = ServerProcess(["--drain-seconds", "0.5"], pki, tmp_path / "serve.log")
    try:
        server.wait_ready()
        wire = request_bytes(body_of("shutdown-1"))
        half = len(wire) - 200
        with tls_socket(server) as sock:
            sock.sendall(wire[:half])
            time.sleep(0.3)  # the headers are in and taken
            server.process.send_signal(signal.SIGTERM)
            wait_for_log(server, "SIGTERM: not ready")
            time.sleep(1.5)  # past the drain: the server is shutting its connections down
            assert server.process.poll() is None
            sock.sendall(wire[half:])
            head, answer = read_whole(sock)
            assert head.startswith(b"http/1.1 200 ") and verdict(answer) == ("shutdown-1", True)
            assert b"\r\nconnection: close" in head
            assert closed_by_peer(sock, 5)
        assert server.process.wait(timeout=15) == 0
    finally:
        server.stop()
