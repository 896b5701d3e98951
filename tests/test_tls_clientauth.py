"""--client-ca and --client-allow-name in the real server: who gets a review, who gets a TLS failure
or a 401, on every path, and a client CA that changes while the server runs."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ApiServerClient, ServerProcess, free_ports
from tests.docs import CURL_ERRORS, Process, Sandbox, doc_block, run_block
from tests.reviews import pod_review
from tests.tlsutil import client_certificate, eventually, find_logs, wait_for_log
from webhook.certs import ensure_certificates

Pair = tuple[Path, Path]
REFUSED = (httpx.TransportError, ssl.SSLError, OSError)


@pytest.fixture(scope="module")
def client_pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two client CAs, and client certificates from each."""
    root = tmp_path_factory.mktemp("client-pki")
    ensure_certificates(root / "ca-a", "clients", "a")
    ensure_certificates(root / "ca-b", "clients", "b")
    return {
        "ca_a": root / "ca-a" / "ca.crt",
        "ca_b": root / "ca-b" / "ca.crt",
        "apiserver": client_certificate(root / "ca-a", root / "a", "kube-apiserver"),
        "by_san": client_certificate(root / "ca-a", root / "a", "someone", dns=("apiserver.example.com",)),
        "stranger": client_certificate(root / "ca-a", root / "a", "intruder", dns=("intruder.example.com",)),
        "foreign": client_certificate(root / "ca-b", root / "b", "kube-apiserver"),
    }


@pytest.fixture(scope="module")
def mtls_server(start_server: Any, client_pki: dict[str, Any]) -> Iterator[ServerProcess]:
    with start_server("--client-ca", str(client_pki["ca_a"]), "--client-allow-name", "kube-apiserver",
                      "--client-allow-name", "APIServer.example.com",
                      client_cert=client_pki["apiserver"]) as server:
        yield server


def _client(server: ServerProcess, cert: Pair | None, **kwargs: Any) -> ApiServerClient:
    return server.client(cert=cert, timeout=5, **kwargs)


def test_a_client_certificate_on_the_allow_list_by_cn_is_served(mtls_server: ServerProcess,
                                                                client_pki: dict[str, Any]) -> None:
    client = _client(mtls_server, client_pki["apiserver"])
    assert client.review("/validate", pod_review("nginx"))["allowed"] is True
    assert client.review("/validate", pod_review("evil.io/x"))["allowed"] is False


def test_a_dns_san_on_the_allow_list_is_enough_and_compares_without_case(mtls_server: ServerProcess,
                                                                         client_pki: dict[str, Any]) -> None:
    client = _client(mtls_server, client_pki["by_san"])
    assert client.review("/mutate", pod_review("nginx"))["allowed"] is True


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
@pytest.mark.parametrize("path", ["/validate", "/healthz", "/readyz"])
def test_no_client_certificate_is_refused_on_every_path(mtls_server: ServerProcess, path: str,
                                                        version: ssl.TLSVersion) -> None:
    context = ssl.create_default_context(cafile=str(mtls_server.cert_dir / "ca.crt"))
    context.maximum_version = version
    client = ApiServerClient(mtls_server.port, mtls_server.cert_dir / "ca.crt", timeout=5)
    client.http = httpx.Client(base_url=f"https://127.0.0.1:{mtls_server.port}", verify=context, timeout=5)
    with pytest.raises(REFUSED):
        client.post(path, pod_review("nginx")) if path == "/validate" else client.request("GET", path)


def test_a_certificate_from_another_ca_is_refused(mtls_server: ServerProcess, client_pki: dict[str, Any]) -> None:
    client = _client(mtls_server, client_pki["foreign"])  # the right name, the wrong CA
    with pytest.raises(REFUSED):
        client.post("/validate", pod_review("nginx"))


@pytest.mark.parametrize("path", ["/validate", "/mutate", "/healthz", "/readyz", "/nowhere"])
def test_a_name_not_on_the_allow_list_gets_401_and_never_a_review(mtls_server: ServerProcess,
                                                                  client_pki: dict[str, Any], path: str) -> None:
    client = _client(mtls_server, client_pki["stranger"])
    reply = client.post(path, pod_review("nginx")) if path in ("/validate", "/mutate") \
        else client.request("GET", path)
    assert reply.status_code == 401
    assert reply.json() == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "the client certificate's names are not allowed", "reason": "Unauthorized", "code": 401,
    }
    records = wait_for_log(mtls_server, "refused a client certificate with CN=['intruder']", level="WARNING")
    assert records[0].message == ("refused a client certificate with CN=['intruder'] DNS=['intruder.example.com']: "
                                  "not on --client-allow-name")
    assert len(records) == 1  # once per identity, not once per request


def test_without_an_allow_list_any_certificate_from_the_client_ca_is_served(
    start_server: Any, client_pki: dict[str, Any]
) -> None:
    with start_server("--client-ca", str(client_pki["ca_a"]), client_cert=client_pki["stranger"]) as server:
        assert _client(server, client_pki["stranger"]).review("/validate", pod_review("nginx"))["allowed"] is True
        with pytest.raises(REFUSED):
            _client(server, client_pki["foreign"]).request("GET", "/healthz")


def test_the_client_ca_hot_reloads(start_server: Any, client_pki: dict[str, Any], tmp_path: Path) -> None:
    client_ca = tmp_path / "client-ca.crt"
    client_ca.write_bytes(client_pki["ca_a"].read_bytes())
    with start_server("--reload-interval", "0.05", "--client-ca", str(client_ca),
                      client_cert=client_pki["apiserver"]) as server:
        trusted_by_a = _client(server, client_pki["apiserver"])  # a keep-alive connection, open before the change
        assert trusted_by_a.review("/validate", pod_review("nginx"))["allowed"] is True
        client_ca.write_bytes(client_pki["ca_b"].read_bytes())  # CA A is dropped, CA B is trusted

        def b_accepted() -> bool:
            try:
                return _client(server, client_pki["foreign"]).request("GET", "/healthz").status_code == 200
            except REFUSED:
                return False

        eventually(b_accepted, "a certificate from the new client CA is accepted")
        with pytest.raises(REFUSED):
            _client(server, client_pki["apiserver"]).request("GET", "/healthz")  # a new connection from A
        assert find_logs(server, "client CA reloaded", level="INFO")
        # A broken client CA is refused; the one in force stays.
        client_ca.write_bytes(b"-----BEGIN CERTIFICATE-----\ntruncated")
        wait_for_log(server, f"refused to reload TLS: {client_ca}: not a valid PEM certificate")
        assert _client(server, client_pki["foreign"]).request("GET", "/healthz").status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_the_probe_port_needs_no_client_certificate(mtls_server: ServerProcess, path: str) -> None:
    """--client-ca covers every path of the HTTPS port; the plain-HTTP probe port serves its three
    paths to anyone who can reach it."""
    assert httpx.get(f"http://127.0.0.1:{mtls_server.probe_port}{path}", timeout=5).status_code == 200
    with pytest.raises(REFUSED):
        _client(mtls_server, None).request("GET", path)


def test_the_probe_port_never_reviews(mtls_server: ServerProcess) -> None:
    denials = len(find_logs(mtls_server, "validate denied"))
    for path in ("/validate", "/mutate"):
        reply = httpx.post(f"http://127.0.0.1:{mtls_server.probe_port}{path}", json=pod_review("evil.io/x"),
                           timeout=5)
        assert reply.status_code == 404
    assert len(find_logs(mtls_server, "validate denied")) == denials


def test_the_docs_client_certificate_example(tmp_path: Path) -> None:
    """docs/operations.md: `serve` as shown, with a client CA and certificates for the two names, and
    each curl command as shown, through real curl."""
    sandbox = Sandbox.make(tmp_path)
    (step,) = doc_block("docs/operations.md", "client-ca-serve").steps
    ensure_certificates(sandbox.cwd / "clients", "clients", "ca")  # clients/ca.crt, as the flag says
    for name in ("kube-apiserver", "intruder"):
        client_certificate(sandbox.cwd / "clients", sandbox.cwd, name)
    https, probe = free_ports(2)
    server = Process(step.command, sandbox, "--port", str(https), "--probe-port", str(probe))
    try:
        server.wait_listening(https, probe)
        run_block(doc_block("docs/operations.md", "client-ca-curl"), sandbox, ports={https: 8443, probe: 8081},
                  normalisers=(CURL_ERRORS,))
    finally:
        server.stop()
