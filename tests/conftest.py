"""Real parts: the server runs as `python -m webhook serve` on loopback, over TLS made by our own
code, and the client calls it the way the API server does (SNI ``<svc>.<ns>.svc``, CA verified)."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
import pytest

from tests.apiserver import ApiServer
from webhook.certs import ensure_certificates

SERVICE = "admission-webhook"
SERVICE_HOST = f"{SERVICE}.{SERVICE}.svc"
REPO = Path(__file__).resolve().parent.parent


def free_ports(count: int) -> list[int]:
    """Distinct free ports: each socket is held until all are chosen, so the kernel cannot hand
    out one port twice (it did, and a server's probe port collided with its HTTPS port)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class ApiServerClient:
    """Speaks to the webhook as kube-apiserver does: POST, JSON, ?timeout=, SNI <svc>.<ns>.svc."""

    def __init__(self, port: int, ca_file: Path, *, cert: tuple[Path, Path] | None = None,
                 **client_args: Any) -> None:
        self.port = port
        self.ca_file = ca_file
        context = ssl.create_default_context(cafile=str(ca_file))
        if cert is not None:  # a client certificate, for a server run with --client-ca
            context.load_cert_chain(*cert)
        client_args.setdefault("timeout", 30)
        self.http = httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=context, **client_args)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Host": f"{SERVICE_HOST}:{self.port}", "User-Agent": "kube-apiserver-admission"}
        headers.update(kwargs.pop("headers", {}))
        return self.http.request(
            method, path, headers=headers, extensions={"sni_hostname": SERVICE_HOST}, **kwargs
        )

    def post(self, path: str, body: Any, *, content_type: str = "application/json", **kwargs: Any) -> httpx.Response:
        content = orjson.dumps(body) if isinstance(body, (dict, list)) else body
        headers = {"Content-Type": content_type, **kwargs.pop("headers", {})}
        return self.request("POST", f"{path}?timeout=10s", content=content, headers=headers, **kwargs)

    def review(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST a review and check the protocol invariants every answer must keep."""
        reply = self.post(path, body)
        assert reply.status_code == 200, reply.text
        assert reply.headers["content-type"] == "application/json"
        document: dict[str, Any] = reply.json()
        assert document["apiVersion"] == body["apiVersion"]
        assert document["kind"] == "AdmissionReview"
        assert document["response"]["uid"] == body["request"]["uid"]
        assert isinstance(document["response"]["allowed"], bool)
        if path == "/validate":
            assert "patch" not in document["response"] and "patchType" not in document["response"]
        return document["response"]  # type: ignore[no-any-return]

    def close(self) -> None:
        self.http.close()


class ServerProcess:
    def __init__(self, args: list[str], cert_dir: Path, log_path: Path, *,
                 executable: list[str] | None = None, cwd: Path = REPO,
                 client_cert: tuple[Path, Path] | None = None) -> None:
        self.port, self.probe_port = free_ports(2)
        self.cert_dir = cert_dir
        self.log_path = log_path
        self.client_cert = client_cert
        command = [*(executable or [sys.executable, "-m", "webhook"]), "serve", "--host", "127.0.0.1",
                   "--port", str(self.port), "--probe-port", str(self.probe_port), "--cert-dir", str(cert_dir), *args]
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, cwd=cwd)

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.logs()}")
            if (self.cert_dir / "ca.crt").exists():
                client = self.client(timeout=2)
                try:
                    if client.request("GET", "/healthz").status_code == 200:
                        return
                except (httpx.HTTPError, OSError, ssl.SSLError):
                    pass
                finally:
                    client.close()
            time.sleep(0.05)
        raise RuntimeError(f"server not ready after {timeout}s:\n{self.logs()}")

    def logs(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def client(self, **kwargs: Any) -> ApiServerClient:
        kwargs.setdefault("cert", self.client_cert)
        return ApiServerClient(self.port, self.cert_dir / "ca.crt", **kwargs)

    def stop(self) -> int:
        """Stop at once (SIGINT skips the drain that SIGTERM starts)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cert_dir = tmp_path_factory.mktemp("pki")
    ensure_certificates(cert_dir, SERVICE, SERVICE)
    return cert_dir


@pytest.fixture(scope="session")
def start_server(tmp_path_factory: pytest.TempPathFactory, pki: Path) -> Iterator[Any]:
    """Start servers on demand; all are stopped at the end of the session."""
    started: list[ServerProcess] = []

    @contextmanager
    def start(*args: str, cert_dir: Path | None = None,
              client_cert: tuple[Path, Path] | None = None) -> Iterator[ServerProcess]:
        log_path = tmp_path_factory.mktemp("server") / "server.log"
        server = ServerProcess(list(args), cert_dir or pki, log_path, client_cert=client_cert)
        started.append(server)
        try:
            server.wait_ready()
            yield server
        finally:
            server.stop()

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def default_server(start_server: Any) -> Iterator[ServerProcess]:
    with start_server() as server:
        yield server


@pytest.fixture
def api(default_server: ServerProcess) -> Iterator[ApiServerClient]:
    client = default_server.client()
    yield client
    client.close()


def write_policy(directory: Path, text: str) -> Path:
    path = directory / "policy.yaml"
    path.write_text(text)
    return path



T = TypeVar("T")


def eventually(probe: Callable[[], T], timeout: float = 10.0) -> T:
    """Poll ``probe`` until it returns something true, or the timeout passes; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


@pytest.fixture
def apiserver(tmp_path: Path) -> Iterator[ApiServer]:
    server = ApiServer(tmp_path / "apiserver")
    yield server
    server.stop()


def pytest_unconfigure(config: pytest.Config) -> None:
    """A thread a test left running keeps the interpreter from exiting, and CI waits for ever.

    Give such threads a moment, then name them and leave at once with a failing status.
    """
    deadline = time.monotonic() + 10
    lingering = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    for thread in lingering:
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [t.name for t in lingering if t.is_alive()]
    if stuck:
        sys.stderr.write(f"tests left non-daemon threads running: {', '.join(stuck)}\n")
        sys.stderr.flush()
        os._exit(3)
