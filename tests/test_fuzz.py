"""Structure-aware fuzzing of /validate and /mutate against the real server over TLS.

Invariants, whatever arrives: never a 5xx; never ``allowed: true`` for a Pod that holds an
image outside the allowlist; the response uid echoes the request uid. Set
``FUZZ_EXAMPLES=5000`` for a longer run than CI's.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ApiServerClient, ServerProcess
from tests.reviews import pod_review
from tests.steady import assert_survived, attack

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
ALLOWED = ["nginx", "nginx:1.27", "registry.k8s.io/pause:3.9", "ghcr.io/acme/app@sha256:" + "a" * 64,
           "quay.io/org/app", "docker.io/library/redis:7"]
DENIED = ["evil.io/x", "registry.k8s.io.evil.com/pause", "ghcr.io.evil.com/x", "docker.io/acmeevil/x",
          "acme/app", "quay.io.evil/x", "localhost:5000/x", "REGISTRY.K8S.IO.EVIL/x", "", " nginx",
          "nginx\n", "nginx@sha256:" + "a" * 63, "registry.k8s.io:443/pause", "ghcr.io:5000/a/b"]
IMAGES = st.sampled_from(ALLOWED + DENIED) | st.text(max_size=40)
LEAVES = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
          | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30))
JSON_VALUES = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=4) |
                           st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def fuzz_server(start_server: Any) -> Iterator[ServerProcess]:
    with start_server() as server:
        yield server


@pytest.fixture(scope="module")
def client(fuzz_server: ServerProcess) -> Iterator[ApiServerClient]:
    api = fuzz_server.client()
    yield api
    api.close()


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from paths(value, (*prefix, index))


@st.composite
def reviews(draw: st.DrawFn) -> dict[str, Any]:
    """A real-shaped Pod review, then a few random edits anywhere in it."""
    body = pod_review(*draw(st.lists(IMAGES, min_size=1, max_size=4)),
                      init=tuple(draw(st.lists(IMAGES, max_size=2))),
                      ephemeral=tuple(draw(st.lists(IMAGES, max_size=1))),
                      api_version=draw(st.sampled_from(["admission.k8s.io/v1", "admission.k8s.io/v1beta1"])))
    for _ in range(draw(st.integers(0, 3))):
        candidates = list(paths(body))[1:]
        path = draw(st.sampled_from(candidates))
        parent = body
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(JSON_VALUES)
        elif action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(JSON_VALUES)
        elif isinstance(parent, list):
            parent.append(draw(JSON_VALUES))
    return body


def holds_a_disallowed_image(body: Any) -> bool:
    """True when this is a judged Pod CREATE with some image not in ALLOWED."""
    request = body.get("request") if isinstance(body, dict) else None
    if not isinstance(request, dict) or request.get("operation") != "CREATE":
        return False
    gvk = request.get("kind")
    if gvk != {"group": "", "version": "v1", "kind": "Pod"} or request.get("namespace") == "kube-system":
        return False
    spec = (request.get("object") or {}).get("spec") if isinstance(request.get("object"), dict) else None
    if not isinstance(spec, dict):
        return False
    for name in ("containers", "initContainers", "ephemeralContainers"):
        for container in spec.get(name) or [] if isinstance(spec.get(name), list) else []:
            if isinstance(container, dict) and container.get("image") not in ALLOWED and "image" in container:
                return True
    return False


def check(client: ApiServerClient, path: str, content: bytes, body: Any) -> None:
    reply = client.post(path, content)
    assert reply.status_code < 500, reply.text
    assert reply.status_code in (200, 400), reply.text
    if reply.status_code != 200:
        return
    response = reply.json()["response"]
    assert response["uid"] == body["request"]["uid"]
    if path == "/validate" and holds_a_disallowed_image(body):
        assert response["allowed"] is False, orjson.dumps(body)[:2000]
    if path == "/mutate":
        assert response["allowed"] is True


@SETTINGS
@given(reviews(), st.sampled_from(["/validate", "/mutate"]))
def test_fuzzed_reviews_keep_the_invariants(client: ApiServerClient, body: dict[str, Any], path: str) -> None:
    check(client, path, orjson.dumps(body), body)


@SETTINGS
@given(reviews(), st.binary(max_size=8), st.integers(0, 10_000))
def test_corrupted_bytes_never_break_the_server(client: ApiServerClient, body: dict[str, Any], junk: bytes,
                                                cut: int) -> None:
    raw = orjson.dumps(body)
    content = raw[: cut % (len(raw) + 1)] + junk
    reply = client.post("/validate", content)
    assert reply.status_code in (200, 400), reply.text
    if reply.status_code == 200:
        assert reply.json()["response"]["uid"] == body["request"]["uid"]


EXTREMES = {
    "deeply nested": b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":'
                     + b'{"a":' * 100_000 + b"1" + b"}" * 100_001,
    "invalid utf-8": b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"\xc3\x28"}}',
    "duplicate keys": b'{"apiVersion":"admission.k8s.io/v1","apiVersion":"x","kind":"AdmissionReview",'
                      b'"request":{"uid":"a"}}',
    "request is a list": b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":[1]}',
    "lone surrogate": b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"\\ud800"}}',
    "huge integer": b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":1'
                    + b"0" * 5000 + b"}}",
}


@pytest.mark.parametrize("name", sorted(EXTREMES))
def test_extreme_bodies_get_400(client: ApiServerClient, name: str) -> None:
    assert client.post("/validate", EXTREMES[name]).status_code == 400


def test_a_1mb_image_name_is_denied_with_a_short_message(client: ApiServerClient) -> None:
    body = pod_review("evil.io/" + "a" * 1_000_000)
    response = client.review("/validate", body)
    assert response["allowed"] is False
    assert len(response["status"]["message"]) < 2000


@pytest.mark.parametrize("shape", ["int", "map", "list-of-strings"])
def test_wrong_types_for_containers(client: ApiServerClient, shape: str) -> None:
    body = pod_review("nginx")
    spec = body["request"]["object"]["spec"]
    spec["containers"] = {"int": 42, "map": {"a": {"image": "nginx"}}, "list-of-strings": ["evil.io/x"]}[shape]
    response = client.review("/validate", body)
    assert (response["allowed"], response["status"]["code"]) == (False, 422)


def test_100k_containers(client: ApiServerClient) -> None:
    body = pod_review("nginx")
    containers = [{"name": f"c{i}", "image": "nginx"} for i in range(99_999)] + [{"name": "x", "image": "evil.io/x"}]
    body["request"]["object"]["spec"]["containers"] = containers  # about 3.5 MB, under the 8 MiB limit
    response = client.review("/validate", body)
    assert response["allowed"] is False
    assert 'spec.containers[99999] "x"' in response["status"]["message"]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_memory_does_not_grow_under_fuzzing(client: ApiServerClient, fuzz_server: ServerProcess) -> None:
    body = pod_review("nginx", "evil.io/x", init=("Bad Image",))
    for _ in range(300):  # warm caches and allocator pools
        client.post("/validate", orjson.dumps(body))
    before = rss_kb(fuzz_server.process.pid)
    for index in range(2000):
        varied = copy.deepcopy(body)
        varied["request"]["uid"] = f"mem-{index}"
        varied["request"]["object"]["spec"]["containers"][1]["image"] = f"evil.io/x{index}"
        assert client.post("/validate", orjson.dumps(varied)).status_code == 200
    growth_mb = (rss_kb(fuzz_server.process.pid) - before) / 1024
    assert growth_mb < 20, f"RSS grew by {growth_mb:.1f} MB over 2000 reviews"


def test_unique_huge_images_leave_no_memory_behind(client: ApiServerClient, fuzz_server: ServerProcess) -> None:
    """Verdicts are remembered per image string: a string too long to be a reference never is,
    and the rest are bounded by size, so 240 reviews of a unique 2 MB image keep nothing."""
    def body(index: int) -> bytes:
        return orjson.dumps(pod_review(f"evil.io/{index:04d}" + "a" * 2_000_000, uid=f"huge-{index}"))

    for index in range(10):  # warm the allocator for 2 MB bodies
        assert client.post("/validate", body(index)).status_code == 200
    before = rss_kb(fuzz_server.process.pid)
    with attack(fuzz_server) as figures:
        for index in range(10, 250):
            reply = client.post("/validate", body(index))
            assert reply.status_code == 200 and reply.json()["response"]["allowed"] is False
    growth_mb = (rss_kb(fuzz_server.process.pid) - before) / 1024
    assert growth_mb < 30, f"RSS grew by {growth_mb:.1f} MB over 240 reviews of a unique 2 MB image"
    assert_survived(fuzz_server, figures)
