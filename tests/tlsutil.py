"""TLS helpers for tests: new connections verified as the API server verifies, serials, client
certificates and Secret-volume layouts, all made with our own certificate code."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cryptography import x509

from tests.conftest import SERVICE_HOST, ServerProcess
from webhook.pki import (
    KeySpec,
    certs_pem,
    key_pem,
    new_leaf,
    parse_certificates,
    parse_private_key,
    same_public_key,
)

T = TypeVar("T")
PEM = str  # one or more PEM certificates, as a client's trust


def trust(path: Path) -> PEM:
    """What a client trusts, frozen now: a later change of the file does not change it."""
    return path.read_text()


def new_connection(port: int, trusted: PEM, *, cert: tuple[Path, Path] | None = None,
                   timeout: float = 5) -> int:
    """Open a new TLS connection as kube-apiserver does (SNI <svc>.<ns>.svc, CA verified), make one
    request over it, and return the serial number of the certificate the server presented."""
    context = ssl.create_default_context(cadata=trusted)
    context.set_alpn_protocols(["http/1.1"])
    if cert is not None:
        context.load_cert_chain(*cert)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw, \
            context.wrap_socket(raw, server_hostname=SERVICE_HOST) as tls:
        tls.sendall(f"GET /healthz HTTP/1.1\r\nHost: {SERVICE_HOST}\r\nConnection: close\r\n\r\n".encode())
        reply = tls.recv(4096)
        if not reply.startswith(b"HTTP/1.1 200 "):
            raise ConnectionError(f"no 200 over TLS: {reply[:80]!r}")
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number


def connects(port: int, trusted: PEM, **kwargs: object) -> bool:
    try:
        new_connection(port, trusted, **kwargs)  # type: ignore[arg-type]
    except (OSError, ssl.SSLError):
        return False
    return True


def serial_of(path: Path) -> int:
    return parse_certificates(path.read_bytes(), str(path))[0].serial_number


def eventually(probe: Callable[[], T], what: str, *, timeout: float = 10, interval: float = 0.02) -> T:
    """Poll until ``probe`` returns something truthy; fail with ``what`` and the last value otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what} (last: {value!r})")
        time.sleep(interval)


def wait_for_serial(server: ServerProcess, serial: int, trusted: PEM | None = None, **kwargs: object) -> None:
    trusted = trusted or trust(server.cert_dir / "ca.crt")

    def served() -> bool:
        try:
            return new_connection(server.port, trusted, **kwargs) == serial  # type: ignore[arg-type]
        except (OSError, ssl.SSLError):
            return False

    eventually(served, f"a new connection presents serial {serial:x}")


@dataclass(frozen=True)
class LogRecord:
    level: str
    logger: str
    message: str


_TEXT_LINE = re.compile(r"^\S+ \S+ (?P<level>[A-Z]+) (?P<logger>[\w.]+): (?P<message>.*)$")


def log_records(server: ServerProcess) -> list[LogRecord]:
    """The server's log as records, whether it writes text lines or JSON lines."""
    records = []
    for line in server.logs().splitlines():
        if line.startswith("{"):
            data = json.loads(line)
            records.append(LogRecord(str(data["level"]).upper(), data["logger"], data["msg"]))
        elif match := _TEXT_LINE.match(line):
            records.append(LogRecord(match["level"], match["logger"], match["message"]))
    return records


def find_logs(server: ServerProcess, text: str, *, level: str | None = None) -> list[LogRecord]:
    return [r for r in log_records(server) if text in r.message and (level is None or r.level == level)]


def wait_for_log(server: ServerProcess, text: str, *, count: int = 1, level: str | None = None) -> list[LogRecord]:
    """Wait for ``count`` records whose message contains ``text``; return all such records."""
    return eventually(lambda: (found := find_logs(server, text, level=level)) and len(found) >= count and found,
                      f"{text!r} in the server log")


def client_certificate(ca_dir: Path, out: Path, common_name: str, dns: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """A client certificate (clientAuth) for ``common_name``, signed by the CA in ``ca_dir``."""
    ca_key = parse_private_key((ca_dir / "ca.key").read_bytes(), "ca.key")
    ca = next(c for c in parse_certificates((ca_dir / "ca.crt").read_bytes(), "ca.crt")
              if same_public_key(c.public_key(), ca_key.public_key()))
    key = KeySpec().generate()
    cert = new_leaf(ca, ca_key, key, list(dns), common_name=common_name, now=dt.datetime.now(dt.UTC),
                    validity=dt.timedelta(days=1), usage="client", ips=())
    out.mkdir(parents=True, exist_ok=True)
    crt_path, key_path = out / f"{common_name}.crt", out / f"{common_name}.key"
    crt_path.write_bytes(certs_pem([cert]))
    key_path.write_bytes(key_pem(key))
    return crt_path, key_path


class SecretVolume:
    """A directory laid out as the kubelet mounts a Secret: each name is a symlink into ``..data``,
    itself a symlink to a timestamped directory; an update writes a new directory and renames a new
    ``..data`` symlink over the old one, so the files' own paths never see a write."""

    def __init__(self, directory: Path, files: dict[str, bytes]) -> None:
        self.directory = directory
        self.generation = 0
        directory.mkdir(parents=True, exist_ok=True)
        self.update(files)
        for name in files:
            (directory / name).symlink_to(Path("..data") / name)

    def update(self, files: dict[str, bytes]) -> None:
        self.generation += 1
        target = self.directory / f"..2026_11_21_00_00_00.{self.generation}"
        target.mkdir()
        for name, data in files.items():
            (target / name).write_bytes(data)
        link = self.directory / "..data_tmp"
        link.symlink_to(target.name)
        old = (self.directory / "..data").resolve() if (self.directory / "..data").exists() else None
        os.replace(link, self.directory / "..data")
        if old is not None:
            for path in old.iterdir():
                path.unlink()
            old.rmdir()


def handshake(cert_dir: Path, trusted: PEM, *, rounds: int = 10) -> None:
    """A full TLS handshake in memory between our server context for ``cert_dir`` and a client that
    trusts ``trusted``, verifying as the API server does. Raises ssl.SSLError when the client refuses."""
    from webhook.server.tls import server_context  # noqa: PLC0415 - the server stack, only where needed

    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_context(cert_dir / "tls.crt", cert_dir / "tls.key").wrap_bio(
        to_server, to_client, server_side=True)
    client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = ssl.create_default_context(cadata=trusted).wrap_bio(client_in, client_out,
                                                                  server_hostname=SERVICE_HOST)
    done = set()
    for _ in range(rounds):
        for name, side in (("client", client), ("server", server)):
            try:
                side.do_handshake()
                done.add(name)
            except ssl.SSLWantReadError:
                pass
        to_server.write(client_out.read())
        client_in.write(to_client.read())
        if done == {"client", "server"}:
            return
    raise AssertionError("the handshake did not finish")
