"""The stand-in API server keeps the promises the other tests rely on.

If it accepted what kube-apiserver refuses, tests of the product against it would prove
nothing; so its refusals, apply semantics and defaulting are pinned here with plain httpx.
"""

from __future__ import annotations

import json
import shlex
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.apiserver import GROUP, WEBHOOK_RULES, ApiServer, Rule, docs_cluster
from tests.conftest import REPO
from tests.docs import Process, Sandbox, doc_block, map_ports, match
from webhook.kube.registration import RegistrationOptions, build_configurations

BASE = f"/apis/{GROUP}/v1/validatingwebhookconfigurations"


@pytest.fixture
def apiserver(apiserver: ApiServer) -> ApiServer:
    apiserver.add_user("admin", "admin-token", *WEBHOOK_RULES)
    return apiserver


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


# --- pods and workloads: pagination and watch streams ------------------------------------------

def test_lists_come_in_pages_in_key_order_without_kind_on_items(apiserver: ApiServer, http: httpx.Client) -> None:
    for namespace, name in [("b", "x"), ("a-b", "y"), ("a", "z")]:
        apiserver.store.put("pods", {"metadata": {"name": name, "namespace": namespace}, "spec": {}})
    first = http.get("/api/v1/pods", params={"limit": "2"}).json()
    assert (first["kind"], first["apiVersion"]) == ("PodList", "v1")
    assert [f"{i['metadata']['namespace']}/{i['metadata']['name']}" for i in first["items"]] == ["a-b/y", "a/z"]
    assert all("kind" not in item and "apiVersion" not in item for item in first["items"])
    assert first["metadata"]["remainingItemCount"] == 1
    second = http.get("/api/v1/pods", params={"limit": "2", "continue": first["metadata"]["continue"]}).json()
    assert [i["metadata"]["name"] for i in second["items"]] == ["x"]
    assert "continue" not in second["metadata"]
    assert second["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    assert [i["metadata"]["name"] for i in http.get("/api/v1/namespaces/b/pods").json()["items"]] == ["x"]
    apiserver.store.put("pods", {"metadata": {"name": "w", "namespace": "c"}})
    apiserver.store.compact()
    gone = http.get("/api/v1/pods", params={"limit": "2", "continue": first["metadata"]["continue"]})
    assert (gone.status_code, gone.json()["reason"]) == (410, "Expired")
    rest = http.get("/api/v1/pods", params={"limit": "2", "continue": gone.json()["metadata"]["continue"]}).json()
    assert [i["metadata"]["name"] for i in rest["items"]] == ["x", "w"]  # inconsistent: newer objects show


def test_a_watch_is_a_chunked_stream_of_json_lines(apiserver: ApiServer, http: httpx.Client) -> None:
    store = apiserver.store
    start = store.put("pods", {"metadata": {"name": "a", "namespace": "n"}})["metadata"]["resourceVersion"]
    store.put("pods", {"metadata": {"name": "b", "namespace": "n"}})
    store.delete("pods", "n", "a")
    store.put("deployments.apps", {"metadata": {"name": "d", "namespace": "n"}})
    marked = store.bookmark("pods")
    params = {"watch": "true", "resourceVersion": start, "allowWatchBookmarks": "true", "timeoutSeconds": "1"}
    with http.stream("GET", "/api/v1/pods", params=params) as response:
        assert response.headers["transfer-encoding"] == "chunked"
        events = [json.loads(line) for line in response.iter_lines()]  # ends after timeoutSeconds
    assert [(e["type"], e["object"]["metadata"].get("name")) for e in events] == [
        ("ADDED", "b"), ("DELETED", "a"), ("BOOKMARK", None)]
    assert events[0]["object"]["kind"] == "Pod"  # watch events carry kind, unlike list items
    assert events[2]["object"]["metadata"]["resourceVersion"] == str(marked)
    without_bookmarks = {**params, "allowWatchBookmarks": "false"}
    with http.stream("GET", "/api/v1/pods", params=without_bookmarks) as response:
        assert [json.loads(line)["type"] for line in response.iter_lines()] == ["ADDED", "DELETED"]


def test_a_watch_from_before_compaction_gets_410_and_a_drop_cuts_the_body(
    apiserver: ApiServer, http: httpx.Client
) -> None:
    store = apiserver.store
    old = store.put("pods", {"metadata": {"name": "a", "namespace": "n"}})["metadata"]["resourceVersion"]
    store.put("pods", {"metadata": {"name": "b", "namespace": "n"}})
    store.compact()
    with http.stream("GET", "/api/v1/pods", params={"watch": "true", "resourceVersion": old}) as response:
        (line,) = [json.loads(line) for line in response.iter_lines()]
    assert line["type"] == "ERROR"
    assert (line["object"]["code"], line["object"]["reason"]) == (410, "Expired")
    assert line["object"]["message"].startswith(f"too old resource version: {old} (")

    def cut() -> None:
        deadline = time.monotonic() + 10
        while not store.watching("pods") and time.monotonic() < deadline:
            time.sleep(0.01)
        store.drop_watches("pods")

    threading.Thread(target=cut, daemon=True).start()
    with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"), \
            http.stream("GET", "/api/v1/pods", params={"watch": "true"}) as response:
        list(response.iter_lines())


def test_list_and_watch_are_authorized_per_namespace(apiserver: ApiServer, http: httpx.Client) -> None:
    apiserver.add_user("dev", "dev-token", Rule(("list",), ("pods",), ("",), namespaces=("team",)))
    headers = {"Authorization": "Bearer dev-token"}
    assert http.get("/api/v1/namespaces/team/pods", headers=headers).status_code == 200
    refused = http.get("/api/v1/pods", headers=headers)
    assert refused.status_code == 403
    assert refused.json()["message"] == ('pods is forbidden: User "dev" cannot list resource "pods" in API group "" '
                                         "at the cluster scope")
    watch = http.get("/api/v1/namespaces/team/pods", params={"watch": "true"}, headers=headers)
    assert watch.json()["message"].endswith('cannot watch resource "pods" in API group "" in the namespace "team"')


def test_objects_are_got_created_updated_and_deleted_by_name(apiserver: ApiServer, http: httpx.Client) -> None:
    apiserver.add_user("admin", None, Rule(("*",), ("*",)))
    path = "/apis/wgpolicyk8s.io/v1alpha2/namespaces/shop/policyreports"
    report = {"apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "PolicyReport",
              "metadata": {"name": "r", "labels": {"app.kubernetes.io/managed-by": "admission-webhook"}}, "results": []}
    created = http.post(path, json=report)
    assert created.status_code == 201
    assert created.json()["metadata"]["namespace"] == "shop"
    version = created.json()["metadata"]["resourceVersion"]
    assert http.post(path, json=report).json()["reason"] == "AlreadyExists"
    assert http.get(f"{path}/r").json()["metadata"]["uid"] == created.json()["metadata"]["uid"]
    assert http.get(f"{path}/nope").status_code == 404
    changed = {**created.json(), "results": [{"result": "pass"}]}
    updated = http.put(f"{path}/r", json=changed)
    assert updated.status_code == 200 and updated.json()["metadata"]["resourceVersion"] != version
    stale = http.put(f"{path}/r", json=changed)  # still carries the old resourceVersion
    assert (stale.status_code, stale.json()["reason"]) == (409, "Conflict")
    wrong = http.post(path, json={**report, "kind": "ClusterPolicyReport"})
    assert wrong.status_code == 400
    assert http.get(path, params={"labelSelector": "app.kubernetes.io/managed-by=admission-webhook"}).json()["items"]
    assert not http.get(path, params={"labelSelector": "app.kubernetes.io/managed-by!=admission-webhook"}).json()[
        "items"]
    assert not http.get(path, params={"labelSelector": "!app.kubernetes.io/managed-by"}).json()["items"]
    assert http.delete(f"{path}/r").status_code == 200
    assert http.get(f"{path}/r").status_code == 404
    apiserver.store.max_object_bytes = 1000
    huge = {**report, "results": [{"message": "x" * 2000}]}
    assert http.post(path, json=huge).json()["message"] == "etcdserver: request is too large"


def test_namespaces_belong_to_no_namespace_and_are_listed_watched_and_got(
    apiserver: ApiServer, http: httpx.Client
) -> None:
    apiserver.add_user("admin", None, Rule(("get", "list", "watch"), ("namespaces",), ("",)))
    store = apiserver.store
    start = store.put("namespaces", {"metadata": {"name": "shop", "labels": {"env": "prod"}}})
    store.put("namespaces", {"metadata": {"name": "other"}})
    assert start["metadata"]["labels"] == {"env": "prod", "kubernetes.io/metadata.name": "shop"}
    assert "namespace" not in start["metadata"]
    listed = http.get("/api/v1/namespaces").json()
    assert (listed["kind"], [i["metadata"]["name"] for i in listed["items"]]) == ("NamespaceList", ["other", "shop"])
    one = http.get("/api/v1/namespaces", params={"fieldSelector": "metadata.name=shop"}).json()
    assert [i["metadata"]["name"] for i in one["items"]] == ["shop"]
    assert http.get("/api/v1/namespaces/shop").json()["status"] == {"phase": "Active"}
    assert http.get("/api/v1/namespaces/shop/namespaces").status_code == 404  # not a namespaced resource
    store.put("namespaces", {"metadata": {"name": "shop", "labels": {"env": "dev"}}})
    params = {"watch": "true", "resourceVersion": start["metadata"]["resourceVersion"], "timeoutSeconds": "1"}
    with http.stream("GET", "/api/v1/namespaces", params=params) as response:
        events = [json.loads(line) for line in response.iter_lines()]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "other"), ("MODIFIED", "shop")]
    assert events[1]["object"]["metadata"]["labels"]["env"] == "dev"
    apiserver.add_user("dev", "dev-token", Rule(("list",), ("namespaces",), ("",)))
    refused = http.get("/api/v1/namespaces/shop", headers={"Authorization": "Bearer dev-token"})
    assert refused.json()["message"] == ('namespaces "shop" is forbidden: User "dev" cannot get resource "namespaces" '
                                         'in API group "" at the cluster scope')


# --- `python -m tests.apiserver`: the stand-in on its own, for the docs' cluster examples ---------

def test_the_stand_in_runs_as_a_command_with_the_docs_users(tmp_path: Path) -> None:
    """docs/cluster.md's `.venv/bin/python -m tests.apiserver`, run in a directory of its own (with this
    checkout importable) on a port the kernel chooses; what it prints, and the users it has."""
    sandbox = Sandbox.make(tmp_path)
    block = doc_block("docs/cluster.md", "stand-in")
    (step,) = block.steps
    assert step.command == ".venv/bin/python -m tests.apiserver"
    stand_in = Process(shlex.join([*sandbox.python(), "-m", "tests.apiserver"]), sandbox, "--port", "0")
    try:
        printed = stand_in.wait_for("down.kubeconfig")
        port = int(printed.split("https://127.0.0.1:", 1)[1].split(";", 1)[0])
        match(step.output, map_ports(printed, {port: 6443}), what=block.where)

        def can_i(kubeconfig: str) -> list[str]:
            result = subprocess.run(["webhook", "can-i", "--list", "--kubeconfig", f"stand-in/{kubeconfig}"],
                                    cwd=sandbox.cwd, env=sandbox.env, capture_output=True, text=True, timeout=60,
                                    check=False)
            assert result.stdout, result.stderr
            return [str(result.returncode), result.stdout.splitlines()[-1]]

        assert can_i("kubeconfig") == ["0", "all 44 permissions granted"]
        assert can_i("ci.kubeconfig") == ["1", "23 of 44 permissions missing"]
    finally:
        assert stand_in.stop() == 0


def test_the_stand_in_command_names_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "tests.apiserver", "--dir", str(tmp_path), "--port", str(port)],
                                cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert result.stderr == (f"python -m tests.apiserver: cannot listen on 127.0.0.1:{port}: Address already in use; "
                             "choose another --port\n")


def test_the_installed_stand_in_holds_a_running_webhook(tmp_path: Path) -> None:
    """`python -m tests.apiserver --installed` (docs_cluster(installed=True)): what doctor reads, through the API."""
    server = docs_cluster(tmp_path, installed=True)
    try:
        context = ssl.create_default_context(cafile=str(server.ca_file))
        with httpx.Client(base_url=server.url, verify=context, timeout=5,
                          headers={"Authorization": "Bearer jane-token"}) as client:
            def names(path: str, **params: str) -> list[str]:
                return [i["metadata"]["name"] for i in client.get(path, params=params).json()["items"]]

            assert names("/api/v1/namespaces") == ["admission-webhook", "default", "kube-system", "ops", "shop"]
            assert names("/api/v1/nodes") == ["node-a", "node-b", "node-c"]
            slices = "/apis/discovery.k8s.io/v1/namespaces/admission-webhook/endpointslices"
            ours = names(slices, labelSelector="kubernetes.io/service-name=admission-webhook")
            assert ours == ["admission-webhook-x7k2p"]
            assert names(slices, labelSelector="kubernetes.io/service-name=other") == []
            bindings = names("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings")
            assert bindings == ["admission-webhook", "cluster-admin"]
            assert client.get(f"{BASE}/admission-webhook").json()["webhooks"][0]["clientConfig"]["caBundle"]
            assert names("/api/v1/pods") == ["admission-webhook-6f7c9-2xkqp", "admission-webhook-6f7c9-8hd4z",
                                             "admission-webhook-6f7c9-tq5mn"]
    finally:
        server.stop()
