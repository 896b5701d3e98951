"""The stand-in API server keeps the promises the other tests rely on.

If it accepted what kube-apiserver refuses, tests of the product against it would prove
nothing; so its refusals, apply semantics and defaulting are pinned here with plain httpx.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.apiserver import GROUP, WEBHOOK_RULES, ApiServer
from webhook.kube.registration import RegistrationOptions, build_configurations

BASE = f"/apis/{GROUP}/v1/validatingwebhookconfigurations"


@pytest.fixture
def apiserver(tmp_path: Path) -> Iterator[ApiServer]:
    server = ApiServer(tmp_path / "apiserver")
    server.add_user("admin", "admin-token", *WEBHOOK_RULES)
    yield server
    server.stop()


@pytest.fixture
def http(apiserver: ApiServer) -> Iterator[httpx.Client]:
    context = ssl.create_default_context(cafile=str(apiserver.ca_file))
    with httpx.Client(base_url=apiserver.url, verify=context, timeout=5,
                      headers={"Authorization": "Bearer admin-token"}) as client:
        yield client


def desired() -> dict[str, Any]:
    return build_configurations(RegistrationOptions(), b"-----BEGIN CERTIFICATE-----\n")[0]


def test_no_credentials_get_401_with_a_status_body(apiserver: ApiServer) -> None:
    context = ssl.create_default_context(cafile=str(apiserver.ca_file))
    reply = httpx.get(f"{apiserver.url}{BASE}", verify=context, timeout=5)
    assert reply.status_code == 401
    assert reply.json() == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": "Unauthorized", "reason": "Unauthorized", "code": 401}


def test_what_the_real_server_refuses_is_refused(http: httpx.Client) -> None:
    bad = desired()
    bad["webhooks"][0]["name"] = "two.segments"
    reply = http.post(BASE, json=bad)
    assert reply.status_code == 422
    assert reply.json()["message"].endswith("webhooks[0].name: Invalid value: \"two.segments\": should be a domain "
                                            "with at least three segments separated by dots")
    assert http.post(BASE, json=desired()).status_code == 201
    assert http.post(BASE, json=desired()).json()["reason"] == "AlreadyExists"
    stale = http.get(f"{BASE}/admission-webhook").json()
    stale["metadata"]["labels"]["x"] = "1"
    assert http.put(f"{BASE}/admission-webhook", json=stale).status_code == 200
    assert http.put(f"{BASE}/admission-webhook", json=stale).json()["reason"] == "Conflict"
    del stale["metadata"]["resourceVersion"]
    assert http.put(f"{BASE}/admission-webhook", json=stale).status_code == 422


def test_server_side_apply_creates_then_merges(http: httpx.Client) -> None:
    headers = {"Content-Type": "application/apply-patch+yaml"}
    body = yaml.safe_dump(desired())
    assert http.patch(f"{BASE}/admission-webhook", content=body, headers=headers).status_code == 422  # no manager
    created = http.patch(f"{BASE}/admission-webhook", content=body, headers=headers,
                         params={"fieldManager": "test"})
    assert created.status_code == 201
    assert created.json()["webhooks"][0]["objectSelector"] == {}  # defaulted
    again = http.patch(f"{BASE}/admission-webhook", content=body, headers=headers, params={"fieldManager": "test"})
    assert again.json()["metadata"]["resourceVersion"] == created.json()["metadata"]["resourceVersion"]
    merge = http.patch(f"{BASE}/admission-webhook", content=b"{}",
                       headers={"Content-Type": "application/merge-patch+json"})
    assert merge.status_code == 415
