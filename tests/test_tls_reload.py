"""Hot reload of the serving certificate in the real server: under load, refused pairs, Secret-volume
symlink swaps, several workers, and what /readyz and the log say about the served certificate."""

from __future__ import annotations

import datetime as dt
import http.client
import socket
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography import x509

from tests.conftest import SERVICE, SERVICE_HOST, ServerProcess
from tests.reviews import pod_review
from tests.tlsutil import (
    SecretVolume,
    connects,
    eventually,
    find_logs,
    new_connection,
    serial_of,
    trust,
    wait_for_log,
    wait_for_serial,
)
from webhook.certs import CertOptions, ensure_certificates, issue_serving_certificate
from webhook.cli import main
from webhook.server.tls_reload import ServingTLS
from webhook.settings import ServeSettings

FAST = ("--reload-interval", "0.05")
ROTATIONS = 6
CLIENTS = 4


@dataclass
class KeepAliveClient:
    """One API-server-like client on one keep-alive connection for its whole life. It never
    reconnects: a connection the server closed counts as a failure, as it would for an in-flight call."""

    port: int
    trusted: str
    name: str
    sent: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    serial: int | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        context = ssl.create_default_context(cadata=self.trusted)
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as Go's net/http does
        tls = context.wrap_socket(raw, server_hostname=SERVICE_HOST)
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        self.serial = x509.load_der_x509_certificate(der).serial_number
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, context=context)
        connection.sock = tls  # the connection to keep; http.client would open a new one only if it were closed
        try:
            while not self.stop.is_set():
                self._one(connection, tls)
                if self.errors:
                    return
        finally:
            connection.close()

    def _one(self, connection: http.client.HTTPSConnection, tls: ssl.SSLSocket) -> None:
        uid = f"{self.name}-{self.sent}"
        self.sent += 1
        try:
            connection.request("POST", "/validate?timeout=10s", body=orjson.dumps(pod_review("nginx", uid=uid)),
                               headers={"Host": f"{SERVICE_HOST}:{self.port}", "Content-Type": "application/json"})
            reply = connection.getresponse()
            body = reply.read()
            if reply.status != 200 or orjson.loads(body)["response"]["uid"] != uid:
                raise AssertionError(f"{reply.status} {body[:200]!r}")
            if connection.sock is not tls:
                raise AssertionError("the keep-alive connection was closed and replaced")
        except Exception as exc:  # noqa: BLE001 - every kind of failure is counted and reported
            self.failed += 1
            self.errors.append(f"request {uid}: {exc!r}")


@pytest.fixture
def cert_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "certs"
    ensure_certificates(directory, SERVICE, SERVICE)
    return directory


def test_rotation_under_load_fails_no_request(start_server: Any, cert_dir: Path) -> None:
    trusted = trust(cert_dir / "ca.crt")
    with start_server(*FAST, cert_dir=cert_dir) as server:
        first = serial_of(cert_dir / "tls.crt")
        clients = [KeepAliveClient(server.port, trusted, f"c{i}") for i in range(CLIENTS)]
        threads = [threading.Thread(target=client.run, daemon=True) for client in clients]
        for thread in threads:
            thread.start()
        try:
            eventually(lambda: all(c.sent > 5 for c in clients), "every client is sending")
            served = [first]
            for _ in range(ROTATIONS):
                before = sum(c.sent for c in clients)
                serial = issue_serving_certificate(cert_dir, SERVICE, SERVICE).serial_number
                wait_for_serial(server, serial, trusted)  # a new connection presents the new serial
                served.append(serial)
                eventually(lambda b=before: sum(c.sent for c in clients) > b + 2 * CLIENTS,  # type: ignore[misc]
                           "requests keep flowing after the rotation")
        finally:
            for client in clients:
                client.stop.set()
            for thread in threads:
                thread.join(timeout=20)
        reloads = find_logs(server, "reloaded TLS: serving certificate serial", level="INFO")
    sent, failed = sum(c.sent for c in clients), sum(c.failed for c in clients)
    print(f"\nrotation under load: {sent} requests sent, {failed} failed, {ROTATIONS} rotations, "
          f"{CLIENTS} keep-alive clients")
    assert failed == 0, [e for c in clients for e in c.errors]
    assert len(set(served)) == ROTATIONS + 1
    # Connections opened before the first rotation carried on with the certificate they started with.
    assert [c.serial for c in clients] == [first] * CLIENTS
    assert len(reloads) == ROTATIONS


def _mismatched_key(cert_dir: Path, tmp_path: Path) -> dict[str, bytes]:
    other = tmp_path / "other"
    ensure_certificates(other, SERVICE, SERVICE)
    return {"tls.key": (other / "tls.key").read_bytes()}


def _truncated_cert(cert_dir: Path, tmp_path: Path) -> dict[str, bytes]:
    data = (cert_dir / "tls.crt").read_bytes()
    return {"tls.crt": data[: len(data) // 2]}


def _garbage_key(cert_dir: Path, tmp_path: Path) -> dict[str, bytes]:
    return {"tls.key": b"-----BEGIN PRIVATE KEY-----\nnot base64 at all\n-----END PRIVATE KEY-----\n"}


def _empty_cert(cert_dir: Path, tmp_path: Path) -> dict[str, bytes]:
    return {"tls.crt": b""}


BREAKAGES = [
    (_mismatched_key, "does not belong to"),
    (_truncated_cert, "not a valid PEM certificate"),
    (_garbage_key, "not a valid PEM private key"),
    (_empty_cert, "no PEM certificate in it"),
]


def test_a_broken_pair_keeps_the_old_certificate_serving(start_server: Any, cert_dir: Path, tmp_path: Path) -> None:
    trusted = trust(cert_dir / "ca.crt")
    with start_server(*FAST, cert_dir=cert_dir) as server:
        client = server.client()
        for count, (breakage, logged) in enumerate(BREAKAGES, start=1):
            good = {name: (cert_dir / name).read_bytes() for name in ("tls.crt", "tls.key")}
            old = serial_of(cert_dir / "tls.crt")
            for name, data in breakage(cert_dir, tmp_path / str(count)).items():
                (cert_dir / name).write_bytes(data)
            record = wait_for_log(server, "refused to reload TLS", count=count, level="ERROR")[-1]
            assert record.logger == "webhook.tls"
            assert logged in record.message and f"still serving serial {old:x}" in record.message
            assert "PRIVATE KEY" not in server.logs()  # never a key, or any part of one, in the log
            assert new_connection(server.port, trusted) == old
            assert client.review("/validate", pod_review("nginx"))["allowed"] is True  # the open connection too
            report = client.request("GET", "/readyz").json()["checks"]["certificate"]
            assert report["ready"] is True and report["serial"] == f"{old:x}" and logged in report["reloadError"]
            # Fixed: a good pair is picked up again.
            for name, data in good.items():
                (cert_dir / name).write_bytes(data)
            fresh = issue_serving_certificate(cert_dir, SERVICE, SERVICE).serial_number
            wait_for_serial(server, fresh, trusted)
            assert client.request("GET", "/readyz").json()["checks"]["certificate"]["reloadError"] is None
        assert server.process.poll() is None


def test_a_secret_volume_symlink_swap_is_picked_up(start_server: Any, tmp_path: Path) -> None:
    source = tmp_path / "source"
    ensure_certificates(source, SERVICE, SERVICE)

    def files() -> dict[str, bytes]:
        return {name: (source / name).read_bytes() for name in ("tls.crt", "tls.key", "ca.crt")}

    volume = SecretVolume(tmp_path / "mounted", files())
    assert (volume.directory / "tls.crt").is_symlink()
    with start_server(*FAST, cert_dir=volume.directory) as server:
        trusted = trust(volume.directory / "ca.crt")
        link_stat = (volume.directory / "tls.crt").lstat()
        new = issue_serving_certificate(source, SERVICE, SERVICE).serial_number
        volume.update(files())
        # The watched names themselves were never written: only ..data moved.
        assert (volume.directory / "tls.crt").lstat().st_mtime_ns == link_stat.st_mtime_ns
        wait_for_serial(server, new, trusted)
        assert wait_for_log(server, f"reloaded TLS: serving certificate serial {new:x} (was ", level="INFO")


def test_every_worker_reloads(start_server: Any, cert_dir: Path) -> None:
    trusted = trust(cert_dir / "ca.crt")
    with start_server(*FAST, "--workers", "2", cert_dir=cert_dir) as server:
        wait_for_log(server, "serving certificate serial", count=2)  # both workers loaded
        for _ in range(2):
            new = issue_serving_certificate(cert_dir, SERVICE, SERVICE).serial_number
            wait_for_log(server, f"serving certificate serial {new:x} (was", count=2)  # each worker says so
            # And each worker serves it: many new connections, spread over both, all see it.
            assert {new_connection(server.port, trusted) for _ in range(30)} == {new}


def test_readiness_reports_the_served_certificate_and_its_chain(start_server: Any, cert_dir: Path,
                                                                tmp_path: Path) -> None:
    with start_server(*FAST, cert_dir=cert_dir) as server:
        client = server.client()
        report = client.request("GET", "/readyz").json()["checks"]["certificate"]
        leaf = x509.load_pem_x509_certificate((cert_dir / "tls.crt").read_bytes())
        assert report == {
            "ready": True, "serial": f"{leaf.serial_number:x}",
            "notAfter": leaf.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "chainsToCA": True, "problem": None, "reloadError": None,
        }
        # ca.crt now names another CA: the API server with that caBundle would refuse us.
        other = tmp_path / "other"
        ensure_certificates(other, SERVICE, SERVICE)
        original_ca = (cert_dir / "ca.crt").read_bytes()
        (cert_dir / "ca.crt").write_bytes((other / "ca.crt").read_bytes())

        def readyz() -> tuple[int, dict[str, Any]]:
            reply = client.request("GET", "/readyz")
            return reply.status_code, reply.json()

        _, body = eventually(lambda: (r := readyz())[0] == 503 and r, "readyz turns 503")
        assert body["ready"] is False
        assert body["checks"]["certificate"]["chainsToCA"] is False
        assert "does not chain to" in body["checks"]["certificate"]["problem"]
        assert wait_for_log(server, "does not chain to", level="WARNING")[0].message.endswith(
            "an API server with that caBundle will refuse it")
        (cert_dir / "ca.crt").write_bytes(original_ca)
        eventually(lambda: readyz()[0] == 200, "readyz is 200 again")


def _serve_unverified(server: ServerProcess, path: str) -> tuple[int, dict[str, Any]]:
    """For an expired certificate, which a verifying client refuses: still our TLS, CA unchecked."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=SERVICE_HOST) as tls:
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {SERVICE_HOST}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), orjson.loads(body)


def test_expiry_warns_from_30_days_before_and_an_expired_certificate_is_not_ready(
    start_server: Any, cert_dir: Path
) -> None:
    def issue(days: int, *, ago: int = 0) -> int:
        now = dt.datetime.now(dt.UTC) - dt.timedelta(days=ago)
        options = CertOptions(leaf_validity=dt.timedelta(days=days))
        return issue_serving_certificate(cert_dir, SERVICE, SERVICE, options=options, now=now).serial_number

    warning = "the served certificate (serial {:x}) expires in {} days"
    first = issue(31)
    with start_server(*FAST, cert_dir=cert_dir) as server:
        assert not find_logs(server, "expires in")  # 30 days and some hours left: no warning yet
        second = issue(30)
        wait_for_serial(server, second)
        assert wait_for_log(server, warning.format(second, 29), level="WARNING")
        assert server.client().request("GET", "/readyz").status_code == 200  # a warning, still ready

        third = issue(1, ago=2)  # expired yesterday
        wait_for_log(server, f"serial {third:x} (was {second:x})")
        status, body = _serve_unverified(server, "/readyz")
        assert status == 503
        report = body["checks"]["certificate"]
        assert report["problem"].startswith("the served certificate expired at ")
        assert report["chainsToCA"] is True  # expired, but from the right CA
        assert not connects(server.port, trust(cert_dir / "ca.crt"))  # clients refuse it, as they should
        assert find_logs(server, f"the served certificate (serial {third:x}) expired at ", level="ERROR")
        assert first != second


def test_serve_refuses_to_start_with_a_mismatched_pair(cert_dir: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    for name, data in _mismatched_key(cert_dir, tmp_path).items():
        (cert_dir / name).write_bytes(data)
    assert main(["serve", "--cert-dir", str(cert_dir), "--port", "1"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"webhook: error: {cert_dir / 'tls.key'} does not belong to {cert_dir / 'tls.crt'} "
        f"(serial {serial_of(cert_dir / 'tls.crt'):x}): the key does not match the certificate"
    )


def test_a_ca_change_is_announced_to_listeners(cert_dir: Path, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """In-process: the hook a caBundle sync uses to publish a new ca.crt at once."""
    tls = ServingTLS.from_settings(ServeSettings(cert_dir=cert_dir, reload_interval=0.02))
    seen: list[str] = []
    tls.on_ca_change(lambda: 1 / 0)  # a failing listener neither stops the others nor the watching
    tls.on_ca_change(lambda: seen.append("changed"))
    tls.start()
    try:
        assert tls.status().chains_to_ca is True
        ensure_certificates(tmp_path / "other", SERVICE, SERVICE)
        (cert_dir / "ca.crt").write_bytes((tmp_path / "other" / "ca.crt").read_bytes())
        eventually(lambda: seen == ["changed"], "the listener heard of the change")
        assert tls.status().chains_to_ca is False
        assert "a listener for " in caplog.text and "ZeroDivisionError" in caplog.text
    finally:
        tls.stop()
