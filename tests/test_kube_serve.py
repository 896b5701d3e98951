"""`serve` with cluster access: registration at start, background checks, /readyz, and never a gate.

The server runs as a real process (``start_server`` from conftest) and reaches the stand-in
API server through a kubeconfig file.
"""

from __future__ import annotations

import base64
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.apiserver import WEBHOOK_RULES, ApiServer, docs_cluster, without, write_kubeconfig
from tests.conftest import REPO, ServerProcess, eventually, free_ports
from tests.docs import TIMES, Process, Sandbox, doc_block, map_ports, match, run_block
from webhook.certs import ensure_certificates

VALIDATING = "validatingwebhookconfigurations"
MUTATING = "mutatingwebhookconfigurations"


def kubeconfig(apiserver: ApiServer, tmp_path: Path, token: str, server: str | None = None) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", server or apiserver.url, {"token": token},
                            ca_file=apiserver.ca_file)


def readyz(server: ServerProcess) -> tuple[int, dict[str, Any]]:
    client = server.client(timeout=5)
    try:
        reply = client.request("GET", "/readyz")
        return reply.status_code, reply.json()
    finally:
        client.close()



def ca_bundle(apiserver: ApiServer, plural: str) -> bytes | None:
    stored = apiserver.stored(plural, "admission-webhook")
    return base64.b64decode(stored["webhooks"][0]["clientConfig"]["caBundle"]) if stored else None


def test_serve_registers_keeps_the_ca_bundle_in_sync_and_never_deletes(
    apiserver: ApiServer, tmp_path: Path, start_server: Any
) -> None:
    apiserver.add_user("hook", "hook-token", *WEBHOOK_RULES)
    cert_dir = tmp_path / "certs"
    with start_server("--kubeconfig", str(kubeconfig(apiserver, tmp_path, "hook-token")), "--register",
                      "--permission-check-interval", "0.3", cert_dir=cert_dir) as server:
        # registered before the port opened, with the CA the server was started with
        assert ca_bundle(apiserver, VALIDATING) == (cert_dir / "ca.crt").read_bytes()
        assert ca_bundle(apiserver, MUTATING) == (cert_dir / "ca.crt").read_bytes()
        code, report = eventually(lambda: (r := readyz(server))[1]["checks"]["kubernetes"].get("checkedAt") and r)
        assert code == 200
        cluster = report["checks"]["kubernetes"]
        assert cluster["ready"] is True and cluster["enabled"] is True
        assert cluster["state"] == "ok"
        assert cluster["permissions"] == {"checked": 4, "missing": []}
        assert cluster["registration"] == {"ValidatingWebhookConfiguration": "unchanged",
                                           "MutatingWebhookConfiguration": "unchanged"}

        # stage 1 of a CA rotation: ca.crt becomes old + new, and the caBundle must follow
        new_ca = tmp_path / "new-ca"
        ensure_certificates(new_ca, "admission-webhook", "admission-webhook")
        bundle = (cert_dir / "ca.crt").read_bytes() + (new_ca / "ca.crt").read_bytes()
        (cert_dir / "ca.crt").write_bytes(bundle)
        assert eventually(lambda: ca_bundle(apiserver, VALIDATING) == bundle == ca_bundle(apiserver, MUTATING))
        # the line is written once both updates are answered, so it may trail the stand-in's view
        updated = "registration: validatingwebhookconfigurations.admissionregistration.k8s.io/admission-webhook updated"
        assert eventually(lambda: updated in server.logs())
    assert apiserver.stored(VALIDATING, "admission-webhook") is not None
    assert apiserver.stored(MUTATING, "admission-webhook") is not None
    assert not apiserver.seen("DELETE")


def test_the_mutating_rules_follow_a_reloaded_policys_defaults(
    apiserver: ApiServer, tmp_path: Path, start_server: Any
) -> None:
    """A policy reload that defaults another custom resource reaches the mutating configuration at
    once (long before the next permission check), without a restart."""
    from tests.test_policy_reload import write_atomically  # noqa: PLC0415

    apiserver.add_user("hook", "hook-token", *WEBHOOK_RULES)
    policy = tmp_path / "policy.yaml"
    policy.write_text("images: {allow: [registry.k8s.io]}\n")
    with start_server("--kubeconfig", str(kubeconfig(apiserver, tmp_path, "hook-token")), "--register",
                      "--policy", str(policy), "--reload-interval", "0.1", "--permission-check-interval", "3600"):
        def groups() -> list[str]:
            stored = apiserver.stored(MUTATING, "admission-webhook") or {"webhooks": [{"rules": []}]}
            return [group for rule in stored["webhooks"][0]["rules"] for group in rule["apiGroups"]]

        assert "example.sealyun.com" not in groups()
        write_atomically(policy, "images: {allow: [registry.k8s.io]}\ndefaults:\n- {group: example.sealyun.com, "
                                 "versions: [v1alpha1], kinds: [Project], set: {spec: {replicas: 1}}}\n")
        assert eventually(lambda: "example.sealyun.com" in groups())
        rule = next(r for r in apiserver.stored(MUTATING, "admission-webhook")["webhooks"][0]["rules"]
                    if r["apiGroups"] == ["example.sealyun.com"])
        assert (rule["apiVersions"], rule["resources"]) == (["v1alpha1"], ["projects"])


def test_a_missing_permission_is_logged_and_reported_but_the_server_stays_ready(
    apiserver: ApiServer, tmp_path: Path, start_server: Any
) -> None:
    apiserver.add_user("hook", "hook-token", *without(WEBHOOK_RULES, "update", MUTATING))
    path = kubeconfig(apiserver, tmp_path, "hook-token")
    with start_server("--kubeconfig", str(path), "--register", "--permission-check-interval", "0.3") as server:
        code, report = eventually(lambda: (r := readyz(server))[1]["checks"]["kubernetes"].get("checkedAt") and r)
        assert code == 200 and report["ready"] is True
        assert report["checks"]["kubernetes"]["state"] == "missing-permissions"
        assert report["checks"]["kubernetes"]["permissions"]["missing"] == [
            {"verb": "update", "resource": f"{MUTATING}.admissionregistration.k8s.io", "namespace": "*"}]
        line = (f"missing permission: user 'tester' of context 'stand-in' in {path} cannot update "
                f"{MUTATING}.admissionregistration.k8s.io admission-webhook cluster-wide")
        assert eventually(lambda: server.logs().count(line) >= 2)  # at start, and again at each re-check
        assert "cannot list pods" not in server.logs()  # serve checks only what serve uses
        metrics = httpx.get(f"http://127.0.0.1:{server.probe_port}/metrics").text
        resource = f"{MUTATING}.admissionregistration.k8s.io/admission-webhook"
        assert f'webhook_permission_allowed{{resource="{resource}",verb="update"}} 0.0' in metrics
        assert f'webhook_permission_allowed{{resource="{resource}",verb="get"}} 1.0' in metrics


def test_without_register_serve_checks_nothing_and_writes_nothing(
    apiserver: ApiServer, tmp_path: Path, start_server: Any
) -> None:
    apiserver.add_user("hook", "hook-token")  # no grants at all
    path = kubeconfig(apiserver, tmp_path, "hook-token")
    with start_server("--kubeconfig", str(path), "--permission-check-interval", "0.3") as server:
        code, report = eventually(lambda: (r := readyz(server))[1]["checks"]["kubernetes"].get("checkedAt") and r)
        assert code == 200 and report["checks"]["kubernetes"]["state"] == "ok"
        assert report["checks"]["kubernetes"]["permissions"] == {"checked": 0, "missing": []}
    assert apiserver.writes() == []


def test_an_api_server_that_is_down_does_not_make_the_server_unready(
    apiserver: ApiServer, tmp_path: Path, start_server: Any
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"https://127.0.0.1:{closed.getsockname()[1]}"
    path = kubeconfig(apiserver, tmp_path, "t", server=url)
    with start_server("--kubeconfig", str(path), "--register", "--request-timeout", "0.2") as server:
        code, report = eventually(lambda: (r := readyz(server))[1]["checks"]["kubernetes"].get("checkedAt") and r)
        assert code == 200 and report["ready"] is True
        cluster = report["checks"]["kubernetes"]
        assert cluster["state"] == "error"
        assert cluster["error"].startswith(f"cannot reach the Kubernetes API at {url}")
        assert "serving anyway, and trying again in the background" in server.logs()


def test_require_permissions_refuses_to_start_without_them(apiserver: ApiServer, tmp_path: Path) -> None:
    apiserver.add_user("hook", "hook-token", *without(WEBHOOK_RULES, "update", VALIDATING))
    path = kubeconfig(apiserver, tmp_path, "hook-token")
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "serve", "--kubeconfig", str(path), "--register", "--require-permissions",
         "--cert-dir", str(tmp_path / "certs"), "--port", "1"],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
    )
    assert result.returncode == 1
    assert (f"cannot update {VALIDATING}.admissionregistration.k8s.io admission-webhook cluster-wide"
            in result.stdout + result.stderr)
    assert "not starting: 1 permission(s) missing and --require-permissions is set" in result.stdout + result.stderr
    assert apiserver.writes() == []


def test_without_cluster_flags_serve_never_talks_to_a_cluster(default_server: ServerProcess) -> None:
    code, report = readyz(default_server)
    assert code == 200
    assert report["checks"]["kubernetes"] == {"ready": True, "enabled": False}


def test_the_docs_serve_register_example(tmp_path: Path) -> None:
    """docs/cluster.md: `serve --register` after the break-glass, against the stand-in as
    `python -m tests.apiserver` runs it, from a directory with certs/ as `make run` leaves it."""
    sandbox = Sandbox.make(tmp_path)
    apiserver = docs_cluster(sandbox.cwd / "stand-in")
    ensure_certificates(sandbox.cwd / "certs", "admission-webhook", "admission-webhook")
    https, probe = free_ports(2)
    ports = {int(apiserver.url.rsplit(":", 1)[1]): 6443, https: 8443, probe: 8081}
    block = doc_block("docs/cluster.md", "serve-register")
    (step,) = block.steps
    server = Process(step.command, sandbox, "--port", str(https), "--probe-port", str(probe))
    try:
        server.wait_listening(https, probe)
        match(step.output, map_ports(server.output(), ports), (TIMES,), what=block.where)
        eventually(lambda: httpx.get(f"http://127.0.0.1:{probe}/readyz").json()["checks"]["kubernetes"]
                   .get("checkedAt"))
        run_block(doc_block("docs/cluster.md", "serve-register-readyz"), sandbox, ports=ports, normalisers=(TIMES,))
    finally:
        server.stop()
        apiserver.stop()
