"""One worker, default flags, against clients out to exhaust its memory: bodies that decode into
far more than their size, bodies that never finish, answers that are never read, and thousands
of connections that come and go. For each, the worker's peak resident memory (VmHWM, reset
before the attack) stays under what the manifests give it, and a normal review is answered
within 2 s all the while.

The same measure (``tests.steady.attack``) guards the attacks on the decision itself, next to
their other tests: unique 2 MB images (test_fuzz.py), a 7 MB object in warn mode and 50,000
containers to mutate (test_operations.py).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import ServerProcess, write_policy
from tests.reviews import project, review
from tests.steady import assert_survived, attack, status_kb
from tests.test_abusive_clients import closed_by_peer, read_head, read_response, request_bytes, tls_socket
from tests.tlsutil import find_logs, wait_for_log

MIB = 1024 * 1024
BODY_LIMIT = 8 * MIB


@pytest.fixture
def server(start_server: Any) -> Iterator[ServerProcess]:
    with start_server() as started:
        yield started


def padded_review(obj: dict[str, Any], filler: bytes, size: int, **kwargs: Any) -> bytes:
    """A review of ``obj`` whose ``spec.filler`` repeats ``filler`` (a JSON value) to make ``size`` bytes."""
    template = review(obj, **kwargs)
    template["request"]["object"].setdefault("spec", {})["filler"] = "@@"
    head, tail = orjson.dumps(template).split(b'"@@"')
    count = (size - len(head) - len(tail) - 2) // (len(filler) + 1)
    return head + b"[" + b",".join([filler] * count) + b"]" + tail


def post_raw(server: ServerProcess, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    with tls_socket(server, timeout=30) as sock:
        sock.sendall(request_bytes(body, path=f"{path}?timeout=10s"))
        status, answer = read_response(sock)
    return status, orjson.loads(answer)


@pytest.mark.parametrize("path", ["/validate", "/mutate"])
def test_eight_mib_of_nested_empty_arrays_is_refused_before_it_is_decoded(server: ServerProcess, path: str) -> None:
    body = padded_review(project({"replicas": 2}), b"[[]]", BODY_LIMIT - 1024)
    with attack(server) as figures:
        for _ in range(3):
            status, answer = post_raw(server, path, body)
            assert status == 413
            assert answer["kind"] == "Status" and answer["reason"] == "RequestEntityTooLarge"
            assert "more than 500000 JSON values (--max-json-values)" in answer["message"]
    assert_survived(server, figures)


@pytest.mark.parametrize("filler", [b'"ab"', b'{"a":0}', b"[]", b"1.5"], ids=["strings", "objects", "arrays", "floats"])
def test_a_body_just_within_the_value_limit_is_answered_within_memory(server: ServerProcess, filler: bytes) -> None:
    """The costliest shapes per counted value, as many as the limit lets through, to /mutate, which
    also copies the object: the limit itself keeps the worker within its memory."""
    per_value = filler.count(b",") + 2 * (filler.count(b"[") + filler.count(b"{")) + 1  # and its comma
    body = padded_review(project({"replicas": 2}), filler, BODY_LIMIT)
    values = 2 * (body.count(b"[") + body.count(b"{")) + body.count(b",") + 1
    if values > 500_000:  # trim to just under the limit
        keep = (499_000 - (values - per_value * body.count(filler))) // per_value
        body = padded_review(project({"replicas": 2}), filler, 1024 + keep * (len(filler) + 1))
    with attack(server) as figures:
        status, answer = post_raw(server, "/mutate", body)
    assert status == 200, answer
    assert answer["response"]["allowed"] is True
    assert_survived(server, figures)


def unfinished_body(server: ServerProcess, outcome: list[str]) -> None:
    """Announce 8 MiB, send all of it but the last byte, then wait for what the server says."""
    chunk = b"x" * 65536
    try:
        with tls_socket(server, timeout=30) as sock:
            sock.sendall(request_bytes(b"", path="/validate?timeout=10s").replace(
                b"Content-Length: 0", f"Content-Length: {BODY_LIMIT}".encode()))
            sent = 0
            while sent < BODY_LIMIT - 1:
                piece = chunk[: BODY_LIMIT - 1 - sent]
                sock.sendall(piece)
                sent += len(piece)
            answer = sock.recv(65536)  # the read timeout (10 s) closes whatever is left
            outcome.append("503" if answer.startswith(b"HTTP/1.1 503") else "closed")
    except (OSError, ssl.SSLError) as exc:
        outcome.append(type(exc).__name__)


def test_thirty_unfinished_eight_mib_bodies_are_let_go(server: ServerProcess) -> None:
    outcome: list[str] = []
    with attack(server) as figures:
        threads = [threading.Thread(target=unfinished_body, args=(server, outcome), daemon=True) for _ in range(30)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(40)
    assert_survived(server, figures)
    assert len(outcome) == 30
    assert "503" in outcome, outcome  # the worker told some of them to go, to stay within its budget
    wait_for_log(server, "--max-buffered-bytes")


def test_a_body_refused_for_the_budget_is_told_503(start_server: Any) -> None:
    """A client whose body is let go while it sends gets a Status it can read and retry on."""
    with start_server("--max-buffered-bytes", str(MIB)) as small:
        with tls_socket(small, timeout=10) as sock:
            sock.sendall(request_bytes(b"", path="/validate").replace(b"Content-Length: 0",
                                                                       f"Content-Length: {2 * MIB}".encode()))
            with contextlib.suppress(OSError):
                sock.sendall(b" " * (MIB + 1))
            head, body = read_head(sock)
        assert head.startswith(b"http/1.1 503")
        assert b"connection: close" in head
        assert b'"reason":"ServiceUnavailable"' in body


def churn(server: ServerProcess, count: int) -> None:
    """Open ``count`` TLS connections at once, one review on every tenth, then close them all."""
    context = ssl.create_default_context(cafile=str(server.cert_dir / "ca.crt"))
    body = orjson.dumps(review(project({"replicas": 1})))
    sockets: list[ssl.SSLSocket] = []
    try:
        for index in range(count):
            raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock = context.wrap_socket(raw, server_hostname="admission-webhook.admission-webhook.svc")
            sockets.append(sock)
            if index % 10 == 0:
                sock.sendall(request_bytes(body, path="/mutate"))
                assert read_response(sock)[0] == 200
    finally:
        for sock in sockets:
            sock.close()


def test_connection_churn_does_not_ratchet_memory(server: ServerProcess) -> None:
    rss_mb: list[float] = []
    with attack(server) as figures:
        for _ in range(10):
            churn(server, 1000)
            time.sleep(1.5)  # the worker trims its heap a second after a burst of closes
            rss_mb.append(status_kb(server.process.pid, "VmRSS") / 1024)
    print("RSS after each round (MB):", [round(x) for x in rss_mb])
    assert_survived(server, figures)
    assert rss_mb[-1] - rss_mb[0] <= 40


def big_answer_policy(directory: Path) -> Path:
    """Defaults that give each Project a 5 MB field, so every /mutate answer is a 7 MB patch."""
    return write_policy(directory, (
        "images: {allow: [docker.io/library/*]}\n"
        "defaults:\n"
        "  - {group: example.sealyun.com, versions: ['*'], kinds: [Project], set: {spec: {notes: "
        f"'{'n' * (5 * MIB + 100_000)}'}}}}}}\n"
    ))


def never_reads(server: ServerProcess, body: bytes, sockets: list[ssl.SSLSocket]) -> None:
    sock = tls_socket(server, timeout=30)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(request_bytes(body, path="/mutate"))
    sockets.append(sock)


def test_twenty_clients_that_never_read_a_seven_mb_patch_are_let_go(start_server: Any, tmp_path: Path) -> None:
    with start_server("--policy", str(big_answer_policy(tmp_path))) as big:
        body = orjson.dumps(review(project({"replicas": 1})))
        client = big.client()  # a client that reads: the answer is a 7 MB patch
        try:
            assert len(client.post("/mutate", body).content) > 7 * 10**6
        finally:
            client.close()
        sockets: list[ssl.SSLSocket] = []
        try:
            with attack(big) as figures:
                for _ in range(20):
                    never_reads(big, body, sockets)
                time.sleep(14)  # the write timeout (10 s) passes
            assert_survived(big, figures)
            # Each was let go: told off for the budget as the answers piled up, or at the write timeout.
            timed_out = find_logs(big, "did not take its answer")
            evicted = find_logs(big, "(--max-buffered-bytes)")
            assert len(timed_out) + len(evicted) == 20
            assert evicted and timed_out
        finally:
            for sock in sockets:
                sock.close()


def served_on_a_new_connection(server: ServerProcess) -> bool:
    client = server.client(timeout=10)
    try:
        return client.review("/validate", review(project({"replicas": 1})))["allowed"] is True
    finally:
        client.close()


def test_a_newcomer_at_the_connection_limit_displaces_the_longest_idle_connection(start_server: Any) -> None:
    with start_server("--max-connections", "20", "--request-read-timeout", "60") as small:
        idle = [tls_socket(small) for _ in range(20)]
        try:
            time.sleep(0.3)
            reading = tls_socket(small)  # displaces idle[0]; then sends half a request line
            reading.sendall(b"POST /validate HTTP/1.1\r\n")
            time.sleep(0.3)
            assert served_on_a_new_connection(small)  # displaces idle[1]
            assert closed_by_peer(idle[0], 5) and closed_by_peer(idle[1], 5)
            assert not closed_by_peer(reading, 0.2)
            assert not any(closed_by_peer(sock, 0.01) for sock in idle[2:])
            wait_for_log(small, "reached its limit of 20 connections (--max-connections)", count=2)
            reading.close()
        finally:
            for sock in idle:
                sock.close()


def test_when_every_connection_is_reading_the_slowest_reader_is_displaced(start_server: Any) -> None:
    with start_server("--max-connections", "10", "--request-read-timeout", "60") as small:
        readers = [tls_socket(small) for _ in range(10)]
        try:
            for sock in readers:
                sock.sendall(b"POST /validate HTTP/1.1\r\n")
            time.sleep(0.3)
            assert served_on_a_new_connection(small)
            assert closed_by_peer(readers[0], 5)
            assert not any(closed_by_peer(sock, 0.01) for sock in readers[1:])
        finally:
            for sock in readers:
                sock.close()
