"""The real server over real TLS, called the way kube-apiserver calls it."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import SERVICE_HOST, ApiServerClient, ServerProcess, write_policy
from tests.reviews import fixture, pod_create, pod_review


def test_allows_the_real_generatename_pod(api: ApiServerClient) -> None:
    response = api.review("/validate", pod_create())
    assert response == {"uid": pod_create()["request"]["uid"], "allowed": True}


def test_denies_with_403_and_a_message(api: ApiServerClient) -> None:
    body = pod_review("nginx:1.27", init=("evil.io/x:1",))
    response = api.review("/validate", body)
    assert response["allowed"] is False
    assert response["status"] == {
        "status": "Failure",
        "code": 403,
        "reason": "Forbidden",
        "message": 'spec.initContainers[0] "init0": image "evil.io/x:1" (evil.io/x:1) is not from an allowed '
        "registry; allowed: registry.k8s.io, docker.io/library/*, ghcr.io/*, quay.io/*",
    }


def test_an_unparseable_image_is_denied_with_the_reason(api: ApiServerClient) -> None:
    response = api.review("/validate", pod_review("UPPER/Case:1"))
    assert response["allowed"] is False
    assert "does not parse: repository name 'Case' must be lowercase" in response["status"]["message"]


@pytest.mark.parametrize("name", ["widget-update.json", "configmap-delete.json"])
def test_real_update_and_delete_fixtures(api: ApiServerClient, name: str) -> None:
    assert api.review("/validate", fixture(name))["allowed"] is True
    assert api.review("/mutate", fixture(name)) == {"uid": fixture(name)["request"]["uid"], "allowed": True}


@pytest.mark.parametrize("path", ["/validate", "/mutate"])
def test_v1beta1_is_answered_in_v1beta1(api: ApiServerClient, path: str) -> None:
    body = pod_review("evil.io/x", api_version="admission.k8s.io/v1beta1")
    response = api.review(path, body)  # review() asserts the echoed apiVersion and uid
    assert response["allowed"] is (path == "/mutate")


def test_mutate_allows_without_a_patch(api: ApiServerClient) -> None:
    response = api.review("/mutate", pod_create())
    assert response == {"uid": pod_create()["request"]["uid"], "allowed": True}


def test_content_type_with_parameters_is_accepted(api: ApiServerClient) -> None:
    reply = api.post("/validate", pod_create(), content_type="application/json; charset=utf-8")
    assert reply.status_code == 200 and reply.json()["response"]["allowed"] is True


def _status(reply: httpx.Response, code: int, text: str) -> None:
    assert reply.status_code == code, reply.text
    body = reply.json()
    assert body["kind"] == "Status" and body["code"] == code
    assert text in body["message"]
    assert "Traceback" not in reply.text


def _without(key: str) -> dict[str, Any]:
    body = pod_review("nginx")
    del body["request"][key]
    return body


def _with(key: str, value: Any) -> dict[str, Any]:
    body = pod_review("nginx")
    body["request"][key] = value
    return body


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}', "request is missing"),
        (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": []}', "not an object"),
        (b'{"kind": "AdmissionReview", "request": {"uid": "x"}}', "unsupported AdmissionReview apiVersion"),
        (b'{"apiVersion": "admission.k8s.io/v2", "kind": "AdmissionReview", "request": {}}', "apiVersion"),
        (b'{"apiVersion": "admission.k8s.io/v1", "kind": "Pod", "request": {}}', "kind must be AdmissionReview"),
        (orjson.dumps(_without("uid")), "request.uid"),
        (orjson.dumps(_with("uid", "")), "request.uid"),
        (orjson.dumps(_with("uid", 42)), "request.uid"),
        (orjson.dumps(_with("operation", "PATCH")), "request.operation"),
        (orjson.dumps(_without("kind")), "request.kind"),
        (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "not valid JSON"),
        (b'{"apiVersion": "admission.k8s.io/v1", "x": "\xff"}', "not valid JSON"),
    ],
)
@pytest.mark.parametrize("path", ["/validate", "/mutate"])
def test_bad_bodies_get_400(api: ApiServerClient, path: str, body: bytes, text: str) -> None:
    _status(api.post(path, body), 400, text)


@pytest.mark.parametrize("content_type", ["text/plain", "application/yaml", "application/jsonx", ""])
def test_wrong_content_type_gets_415(api: ApiServerClient, content_type: str) -> None:
    _status(api.post("/validate", pod_create(), content_type=content_type), 415, "Content-Type")


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
@pytest.mark.parametrize("path", ["/validate", "/mutate"])
def test_other_methods_get_405(api: ApiServerClient, method: str, path: str) -> None:
    _status(api.request(method, path), 405, "Method Not Allowed")


def test_no_slash_redirects(api: ApiServerClient) -> None:
    reply = api.post("/validate/", pod_create())
    assert reply.status_code == 404  # never a 307 that the API server would count as a failed call


def test_health_and_readiness(api: ApiServerClient, default_server: ServerProcess) -> None:
    assert api.request("GET", "/healthz").json() == {"status": "ok"}
    reply = api.request("GET", "/readyz")
    assert reply.status_code == 200
    report = reply.json()
    assert report["ready"] is True
    assert report["checks"]["policy"]["source"] == "<embedded default policy>"
    not_after = dt.datetime.strptime(report["checks"]["certificate"]["notAfter"], "%Y-%m-%dT%H:%M:%SZ")
    assert not_after.year >= dt.datetime.now().year


def test_serves_many_reviews_on_one_keepalive_connection(api: ApiServerClient) -> None:
    for index in range(50):
        body = pod_review("nginx", uid=f"uid-{index}")
        assert api.review("/validate", body)["uid"] == f"uid-{index}"


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls_1_1_is_refused(default_server: ServerProcess) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(default_server.cert_dir / "ca.crt")
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("ALL:@SECLEVEL=0")
    with socket.create_connection(("127.0.0.1", default_server.port), timeout=5) as raw, pytest.raises(ssl.SSLError):
        context.wrap_socket(raw, server_hostname=SERVICE_HOST)


def test_certificate_names_the_service_and_negotiates_http11(default_server: ServerProcess) -> None:
    context = ssl.create_default_context(cafile=str(default_server.cert_dir / "ca.crt"))
    context.set_alpn_protocols(["http/1.1"])
    with socket.create_connection(("127.0.0.1", default_server.port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=SERVICE_HOST) as tls:
        assert tls.selected_alpn_protocol() == "http/1.1"
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


# --- body limits --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_server(start_server: Any) -> Iterator[ServerProcess]:
    with start_server("--max-body-bytes", "4096") as server:
        yield server


def test_announced_oversized_body_gets_413(small_server: ServerProcess) -> None:
    client = small_server.client()
    big = pod_review(*["nginx"] * 200)
    _status(client.post("/validate", big), 413, "exceeds the limit of 4096 bytes")
    assert client.review("/validate", pod_review("nginx"))["allowed"] is True  # and it keeps serving


def test_chunked_oversized_body_gets_413(small_server: ServerProcess) -> None:
    client = small_server.client()

    def chunks() -> Iterator[bytes]:
        yield orjson.dumps(pod_review("nginx"))[:-1]
        for _ in range(100):
            yield b" " * 1000

    _status(client.post("/validate", chunks()), 413, "exceeds the limit")


def test_a_10gb_content_length_is_refused_before_any_body(small_server: ServerProcess) -> None:
    context = ssl.create_default_context(cafile=str(small_server.cert_dir / "ca.crt"))
    with socket.create_connection(("127.0.0.1", small_server.port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=SERVICE_HOST) as tls:
        started = time.monotonic()
        tls.sendall(
            b"POST /validate?timeout=10s HTTP/1.1\r\nHost: " + SERVICE_HOST.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n"
        )
        reply = tls.recv(65536)
        assert reply.startswith(b"HTTP/1.1 413 ")
        assert time.monotonic() - started < 2


# --- certificates made at start-up ---------------------------------------------------------

def test_serve_generates_certificates_when_there_are_none(start_server: Any, tmp_path: Path) -> None:
    cert_dir = tmp_path / "fresh"
    with start_server(cert_dir=cert_dir) as server:
        assert {p.name for p in cert_dir.iterdir()} >= {"ca.crt", "ca.key", "tls.crt", "tls.key"}
        assert f"trust the CA at {cert_dir / 'ca.crt'}" in server.logs()
        client = server.client()
        assert client.review("/validate", pod_create())["allowed"] is True


def test_serve_uses_a_custom_policy(start_server: Any, tmp_path: Path) -> None:
    path = write_policy(tmp_path, "images:\n  mode: warn\n  allow: [quay.io/org/app]\n")
    with start_server("--policy", str(path)) as server:
        response = server.client().review("/validate", pod_review("quay.io/org/app:1", "nginx"))
        assert response["allowed"] is True
        assert response["warnings"] == [
            'policy would deny (warn mode): spec.containers[1] "c1": image "nginx" (docker.io/library/nginx) '
            "is not from an allowed registry"
        ]


def test_two_workers_serve_reviews(start_server: Any) -> None:
    with start_server("--workers", "2") as server:
        for index in range(20):
            client = server.client()  # a new connection each time, spread over both workers
            assert client.review("/validate", pod_review("evil.io/x", uid=f"w{index}"))["allowed"] is False
            client.close()


def test_probe_port_serves_only_probes_in_plain_http(default_server: ServerProcess) -> None:
    base = f"http://127.0.0.1:{default_server.probe_port}"
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{base}/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    review = httpx.post(f"{base}/validate", json=pod_review("nginx"))
    assert review.status_code == 404  # reviews only over TLS


def test_probe_port_zero_turns_it_off(start_server: Any) -> None:
    with start_server("--probe-port", "0") as server:
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{server.probe_port}/healthz")
        assert server.client().request("GET", "/readyz").status_code == 200
