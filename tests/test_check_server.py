"""`webhook check` and the running server give the same decision and the same patch.

For generated objects, written out as YAML or JSON and read back by check's own reader,
check's answer is compared with what the real server answers over TLS when the API server's
sequence is played against it: /mutate with the object, the patch applied by an independent
RFC 6902 implementation, then /validate with the result. Two policies: the embedded default,
and one that rewrites registries and defaults Pods and Projects.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ApiServerClient, ServerProcess
from tests.reviews import FIXTURES, WORKLOADS, applied, container, decoded_patch, project, review, workload
from webhook import check
from webhook.check_format import record
from webhook.manifests import read
from webhook.policy.model import Policy, load_policy

MUTATING_POLICY = FIXTURES / "mutating-policy.yaml"
IMAGES = st.sampled_from([
    "nginx", "nginx:1.27", "bitnami/redis:7", "docker.io/bitnami/redis", "ghcr.io/acme/app:2", "evil.io/x:1",
    "registry.k8s.io/pause:3.9", "quay.io/Org/app", "quay.io/acme/tools:1", "mirror.acme.io/dockerhub/library/nginx",
    "localhost:5000/x", "nginx@sha256:" + "a" * 64, "nginx@sha256:" + "a" * 63, "", "index.docker.io/nginx",
]) | st.text(max_size=20) | st.none() | st.integers(0, 9)  # not strings: 422 Invalid
SCALARS = (st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=12)
           | st.sampled_from(["yes", "off", "2024-01-01", "1e3", "0x1F", "~", "=", "<<", "null", "12:30"]))
EXTRAS = st.dictionaries(st.text(min_size=1, max_size=8), SCALARS, max_size=3)
SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def mirror_server(start_server: Any) -> Iterator[ServerProcess]:
    with start_server("--policy", str(MUTATING_POLICY)) as server:
        yield server


@pytest.fixture(scope="module")
def servers(default_server: ServerProcess, mirror_server: ServerProcess) -> Iterator[list[tuple[Policy, Any]]]:
    clients = [default_server.client(), mirror_server.client()]
    yield [(load_policy(None), clients[0]), (load_policy(MUTATING_POLICY), clients[1])]
    for client in clients:
        client.close()


@st.composite
def objects(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from([*WORKLOADS, "Project"]))
    name = draw(st.sampled_from(["web", "db-0", "a.b"]))
    if kind == "Project":
        spec = draw(st.none() | st.fixed_dictionaries({}, optional={
            "replicas": st.none() | st.integers(0, 5), "paused": st.booleans(), "owner": st.text(max_size=8)}))
        obj = project(spec, name=name)
    else:
        def containers(prefix: str, low: int, high: int) -> list[dict[str, Any]]:
            images = draw(st.lists(IMAGES, min_size=low, max_size=high))
            made = [container(f"{prefix}{i}", image) for i, image in enumerate(images)]
            for each in made:
                if draw(st.booleans()):
                    each["securityContext"] = draw(st.fixed_dictionaries(
                        {}, optional={"allowPrivilegeEscalation": st.none() | st.booleans()}))
            return made
        spec: dict[str, Any] = {"containers": containers("c", 1, 3)}
        if draw(st.booleans()):
            spec["initContainers"] = containers("init", 0, 2)
        obj = workload(kind, spec, name=name)
    metadata = obj["metadata"]
    metadata["labels"] = {**metadata.get("labels", {}), **{k: str(v) for k, v in draw(EXTRAS).items()}}
    metadata["annotations"] = draw(EXTRAS)  # not strings: the server judges them as they are
    namespace = draw(st.sampled_from([None, "shop", "kube-system"]))
    if namespace is None:
        del metadata["namespace"]
    else:
        metadata["namespace"] = namespace
    if draw(st.booleans()):
        metadata["generateName"] = metadata.pop("name") + "-"
    return obj


def server_answer(api: ApiServerClient, obj: dict[str, Any], namespace: str) -> dict[str, Any]:
    """What the API server would see: /mutate, its patch applied, then /validate on the result."""
    mutation = api.review("/mutate", review(obj, namespace=namespace))
    patch = decoded_patch(mutation)
    final = applied(obj, patch)
    validation = api.review("/validate", review(final, namespace=namespace))
    status = validation.get("status")
    return {
        "allowed": validation["allowed"],
        "status": None if status is None else {k: status.get(k) for k in ("code", "reason", "message")},
        "warnings": mutation.get("warnings", []) + validation.get("warnings", []),
        "patch": patch,
        "final": final,
    }


def check_answer(obj: dict[str, Any], policy: Policy, as_json: bool) -> dict[str, Any]:
    """check's own reader and evaluation, in this process, on the object written out as a file would be."""
    text = json.dumps(obj) if as_json else yaml.safe_dump(obj, sort_keys=False)
    (result,) = check.evaluate(read(["-"], io.BytesIO(text.encode())), policy)
    assert isinstance(result, check.Result), result
    answer = record(result)
    return {"allowed": answer["allowed"], "status": answer["status"], "warnings": answer["warnings"],
            "patch": answer["patch"], "final": result.admission.final}


@SETTINGS
@given(obj=objects(), as_json=st.booleans())
def test_check_and_the_server_agree(servers: list[tuple[Policy, ApiServerClient]], obj: dict[str, Any],
                                    as_json: bool) -> None:
    namespace = obj["metadata"].get("namespace", "default")  # what check documents
    for policy, api in servers:
        assert check_answer(obj, policy, as_json) == server_answer(api, obj, namespace)


def test_the_property_sees_every_kind_of_answer(servers: list[tuple[Policy, ApiServerClient]]) -> None:
    """The generated objects cover denials, 422s, warnings and patches, so agreement means something."""
    seen: set[str] = set()

    @SETTINGS
    @given(obj=objects())
    def collect(obj: dict[str, Any]) -> None:
        for policy, _ in servers:
            answer = check_answer(obj, policy, as_json=False)
            seen.add("allowed" if answer["allowed"] else str(answer["status"]["code"]))
            seen.update(["patch"] if answer["patch"] else [])
            seen.update(["warnings"] if answer["warnings"] else [])

    collect()
    assert {"allowed", "403", "422", "patch", "warnings"} <= seen, seen
