"""`webhook can-i`, `register` and `unregister` as a user runs them, against the stand-in API server.

The command runs as a real process and finds the stand-in only through a kubeconfig file
(or in-cluster files) written here, the way it finds a real cluster.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.apiserver import GROUP, WEBHOOK_RULES, ApiServer, Request, Rule, docs_cluster, without, write_kubeconfig
from tests.conftest import REPO
from tests.docs import Sandbox, doc_block, run_block
from webhook.certs import ensure_certificates
from webhook.cli import build_parser
from webhook.kube import commands as kube_commands

VALIDATING = "validatingwebhookconfigurations"
MUTATING = "mutatingwebhookconfigurations"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A HOME without ~/.kube/config, so no test ever reads the developer's own cluster."""
    path = tmp_path / "home"
    path.mkdir()
    return path


def webhook(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The command as a separate process, exactly as a user runs it."""
    return subprocess.run([sys.executable, "-m", "webhook", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env, check=False)


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The same parser and handler in this process, with ``env`` as the environment: faster."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = kube_commands.run(build_parser().parse_args(args), env)
    return subprocess.CompletedProcess(["webhook", *args], code, out.getvalue(), err.getvalue())


def environment(home: Path, **extra: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "HOME": str(home), **extra}


def kubeconfig_for(apiserver: ApiServer, directory: Path, token: str, namespace: str | None = None) -> Path:
    return write_kubeconfig(directory / "kubeconfig", apiserver.url, {"token": token},
                            ca_file=apiserver.ca_file, namespace=namespace)


@pytest.fixture
def admin(apiserver: ApiServer, tmp_path: Path, home: Path) -> dict[str, str]:
    """The environment of a user whose kubeconfig grants everything the webhook needs."""
    apiserver.add_user("deployer", "deployer-token", *WEBHOOK_RULES)
    return environment(home, KUBECONFIG=str(kubeconfig_for(apiserver, tmp_path, "deployer-token")))


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    cert_dir = tmp_path / "certs"
    ensure_certificates(cert_dir, "admission-webhook", "admission-webhook")
    return cert_dir


# --- can-i ---------------------------------------------------------------------------------

@pytest.mark.parametrize("ca", ["missing", "garbage"])
def test_a_kubeconfig_ca_file_that_cannot_be_used_is_one_line_not_a_traceback(tmp_path: Path, home: Path,
                                                                               ca: str) -> None:
    ca_file = tmp_path / "ca.pem"
    if ca == "garbage":
        ca_file.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    config = write_kubeconfig(tmp_path / "kubeconfig", "https://127.0.0.1:1", {"token": "t"}, ca_file=ca_file)
    result = webhook("can-i", "list", "pods", env=environment(home, KUBECONFIG=str(config)))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"webhook: error: the TLS files of the cluster configuration ({ca_file}) cannot be used: ")
    if ca == "missing":
        assert line.endswith("No such file or directory")


def test_can_i_yes_prints_the_reason_and_exits_0(apiserver: ApiServer, admin: dict[str, str]) -> None:
    result = webhook("can-i", "watch", "deployments.apps", "--all-namespaces", env=admin)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ('yes - RBAC: allowed by ClusterRoleBinding "admission-webhook" of ClusterRole '
                             '"admission-webhook" to User "deployer"\n')
    assert [(s.method, s.user) for s in apiserver.seen()] == [("POST", "deployer")]


def test_can_i_no_exits_1(apiserver: ApiServer, admin: dict[str, str]) -> None:
    result = cli("can-i", "delete", "pods", "-n", "team", env=admin)
    assert result.returncode == 1
    assert result.stdout == "no\n"


def test_can_i_no_with_a_denial_reason(apiserver: ApiServer, admin: dict[str, str]) -> None:
    apiserver.add_user("deployer", None, Rule(("*",), ("secrets",), ("",), deny="secrets are off limits"))
    result = cli("can-i", "get", "secrets", "-n", "team", env=admin)
    assert (result.returncode, result.stdout) == (1, "no - secrets are off limits\n")


def test_can_i_resolves_known_groups_and_the_context_namespace(
    apiserver: ApiServer, tmp_path: Path, home: Path
) -> None:
    apiserver.add_user("dev", "dev-token", Rule(("list",), ("deployments",), ("apps",), namespaces=("team",)),
                       Rule(("update",), ("pods/ephemeralcontainers",), ("",), namespaces=("team",)))
    env = environment(home, KUBECONFIG=str(kubeconfig_for(apiserver, tmp_path, "dev-token", namespace="team")))
    assert cli("can-i", "list", "deployments", env=env).stdout.startswith("yes - RBAC: allowed by RoleBinding")
    assert cli("can-i", "list", "deployments", "-n", "other", env=env).stdout == "no\n"
    assert cli("can-i", "list", "deployments", "-A", env=env).stdout == "no\n"
    assert cli("can-i", "update", "pods/ephemeralcontainers", env=env).returncode == 0
    assert cli("can-i", "update", "pods", env=env).returncode == 1


def test_can_i_list_shows_every_needed_permission_and_the_one_missing(
    apiserver: ApiServer, tmp_path: Path, home: Path
) -> None:
    apiserver.add_user("ops", "ops-token", *without(WEBHOOK_RULES, "update", MUTATING))
    env = environment(home, KUBECONFIG=str(kubeconfig_for(apiserver, tmp_path, "ops-token")))
    result = webhook("can-i", "--list", env=env)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["VERB", "RESOURCE", "NAMESPACE", "ALLOWED", "REASON"]
    rows = [line.split(None, 4) for line in lines[1:-2]]
    # register: 3 verbs x 2; sync: 2 named x 2; audit: 2 x 9; report: 5; doctor: 11 reads not listed before
    assert len(rows) == 6 + 4 + 18 + 5 + 11
    assert not [row for row in rows if row[0] == "patch"]  # nothing we do sends a PATCH
    denied = [row[:4] for row in rows if row[3] == "no"]
    assert denied == [["update", f"{MUTATING}.{GROUP}", "*", "no"],
                      ["update", f"{MUTATING}.{GROUP}/admission-webhook", "*", "no"]]
    assert next(r[:4] for r in rows if r[:2] == ["watch", "cronjobs.batch"]) == ["watch", "cronjobs.batch", "*", "yes"]
    assert lines[-1] == "2 of 44 permissions missing"


def test_can_i_list_all_granted_exits_0(admin: dict[str, str]) -> None:
    result = cli("can-i", "--list", "--feature", "register", env=admin)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "all 6 permissions granted"


def test_can_i_list_adds_namespaces_for_a_policy_that_selects_by_their_labels(
    admin: dict[str, str], tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("images: {allow: [registry.k8s.io]}\nscopes:\n"
                      "- {name: prod, match: {namespaceSelector: {matchLabels: {env: prod}}}, "
                      "images: {requireDigest: true}}\n")
    result = cli("can-i", "--list", "--policy", str(policy), env=admin)
    assert result.returncode == 0, result.stderr
    rows = [line.split()[:4] for line in result.stdout.splitlines()[1:-2]]
    assert rows[-1] == ["watch", "namespaces", "*", "yes"] and ["list", "namespaces", "*", "yes"] in rows
    assert result.stdout.splitlines()[-1] == "all 45 permissions granted"  # doctor lists namespaces already
    assert " namespaces " not in "".join(row for row in cli("can-i", "--list", env=admin).stdout.splitlines()
                                         if row.startswith("watch"))  # the embedded policy reads none
    assert cli("can-i", "get", "pods", "--policy", str(policy), env=admin).stderr == (
        "webhook: error: --policy goes with --list\n")


def test_can_i_needs_a_verb_and_resource(admin: dict[str, str]) -> None:
    result = cli("can-i", "get", env=admin)
    assert result.returncode == 2
    assert "give a RESOURCE after the VERB" in result.stderr


# --- register ------------------------------------------------------------------------------

def test_register_twice_creates_then_says_unchanged(
    apiserver: ApiServer, admin: dict[str, str], pki: Path
) -> None:
    first = webhook("register", "--cert-dir", str(pki), env=admin)
    assert first.returncode == 0, first.stderr
    assert first.stdout == (f"{VALIDATING}.{GROUP}/admission-webhook created\n"
                            f"{MUTATING}.{GROUP}/admission-webhook created\n")
    stored = apiserver.stored(VALIDATING, "admission-webhook")
    assert stored is not None
    hook = stored["webhooks"][0]
    assert base64.b64decode(hook["clientConfig"]["caBundle"]) == (pki / "ca.crt").read_bytes()
    assert hook["objectSelector"] == {}  # defaulted by the server, and ignored when comparing

    second = webhook("register", "--cert-dir", str(pki), env=admin)
    assert second.returncode == 0, second.stderr
    assert second.stdout == (f"{VALIDATING}.{GROUP}/admission-webhook unchanged\n"
                             f"{MUTATING}.{GROUP}/admission-webhook unchanged\n")
    assert [(s.method, s.status) for s in apiserver.writes()] == [("POST", 201), ("POST", 201)]
    assert apiserver.stored(VALIDATING, "admission-webhook") == stored


def test_register_after_a_ca_change_updates_the_ca_bundle_in_place(
    apiserver: ApiServer, admin: dict[str, str], pki: Path
) -> None:
    assert cli("register", "--cert-dir", str(pki), env=admin).returncode == 0
    before = apiserver.stored(MUTATING, "admission-webhook")
    shutil.rmtree(pki)  # start over: a new CA, and a serving certificate under it
    ensure_certificates(pki, "admission-webhook", "admission-webhook")

    result = cli("register", "--cert-dir", str(pki), env=admin)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{VALIDATING}.{GROUP}/admission-webhook updated",
                                          f"{MUTATING}.{GROUP}/admission-webhook updated"]
    after = apiserver.stored(MUTATING, "admission-webhook")
    assert before is not None and after is not None
    assert base64.b64decode(after["webhooks"][0]["clientConfig"]["caBundle"]) == (pki / "ca.crt").read_bytes()
    assert after["metadata"]["uid"] == before["metadata"]["uid"]  # updated, never deleted and recreated
    assert int(after["metadata"]["resourceVersion"]) > int(before["metadata"]["resourceVersion"])
    assert not apiserver.seen("DELETE")


def test_a_conflict_on_update_is_retried_from_a_fresh_read(
    apiserver: ApiServer, admin: dict[str, str], pki: Path
) -> None:
    assert cli("register", "--cert-dir", str(pki), env=admin).returncode == 0
    shutil.rmtree(pki)
    ensure_certificates(pki, "admission-webhook", "admission-webhook")

    def concurrent_writer(request: Request) -> None:
        """Another client labels the object between our read and our write, once."""
        if request.method == "PUT" and VALIDATING in request.path:
            apiserver.interceptors.remove(concurrent_writer)
            current = apiserver.stored(VALIDATING, "admission-webhook")
            assert current is not None
            current["metadata"]["labels"]["team"] = "platform"
            reply = apiserver._update(VALIDATING, "admission-webhook", current, require_version=True)
            assert reply[0] == 200

    apiserver.interceptors.append(concurrent_writer)  # type: ignore[arg-type]
    result = cli("register", "--cert-dir", str(pki), env=admin)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"{VALIDATING}.{GROUP}/admission-webhook updated"
    puts = [(s.status, s.path.rsplit("/", 2)[1]) for s in apiserver.seen("PUT")]
    assert puts == [(409, VALIDATING), (200, VALIDATING), (200, MUTATING)]
    stored = apiserver.stored(VALIDATING, "admission-webhook")
    assert stored is not None
    assert stored["metadata"]["labels"]["team"] == "platform"  # the other writer's change survives
    assert base64.b64decode(stored["webhooks"][0]["clientConfig"]["caBundle"]) == (pki / "ca.crt").read_bytes()


def test_register_without_permission_stops_before_writing_anything(
    apiserver: ApiServer, tmp_path: Path, home: Path, pki: Path
) -> None:
    apiserver.add_user("ci", "ci-token", *without(WEBHOOK_RULES, "create", MUTATING))
    env = environment(home, KUBECONFIG=str(kubeconfig_for(apiserver, tmp_path, "ci-token")))
    result = webhook("register", "--cert-dir", str(pki), env=env)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        "webhook: error: cannot register the webhooks: user 'tester' of context 'stand-in' in "
        f"{tmp_path / 'kubeconfig'} is missing 1 permission(s), so nothing was changed:\n"
        f"  - create {MUTATING}.{GROUP} cluster-wide\n"
    )
    assert apiserver.writes() == []  # it read both configurations, then asked, and wrote nothing
    assert {s.method for s in apiserver.seen()} <= {"GET", "POST"}
    assert {s.path for s in apiserver.seen() if s.method == "POST"} == {
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"}


def test_register_dry_run_prints_yaml_and_touches_nothing(
    apiserver: ApiServer, admin: dict[str, str], pki: Path
) -> None:
    result = cli("register", "--dry-run", "--cert-dir", str(pki), "--service-namespace", "guard", env=admin)
    assert result.returncode == 0, result.stderr
    validating, mutating = yaml.safe_load_all(result.stdout)
    assert (validating["kind"], mutating["kind"]) == ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
    assert validating["webhooks"][0]["namespaceSelector"]["matchExpressions"][0]["values"] == ["kube-system", "guard"]
    assert apiserver.seen() == []


def test_register_refuses_a_missing_ca_file(admin: dict[str, str], tmp_path: Path) -> None:
    result = cli("register", "--ca-file", str(tmp_path / "nope.crt"), env=admin)
    assert result.returncode == 2
    assert "CA file" in result.stderr and "nope.crt cannot be read" in result.stderr


def test_unregister_deletes_both_and_is_idempotent(
    apiserver: ApiServer, admin: dict[str, str], pki: Path
) -> None:
    assert cli("register", "--cert-dir", str(pki), env=admin).returncode == 0
    first = cli("unregister", env=admin)
    assert first.returncode == 0, first.stderr
    assert first.stdout == (f"{VALIDATING}.{GROUP}/admission-webhook deleted\n"
                            f"{MUTATING}.{GROUP}/admission-webhook deleted\n")
    assert apiserver.stored(VALIDATING, "admission-webhook") is None
    second = cli("unregister", env=admin)
    assert second.stdout == (f"{VALIDATING}.{GROUP}/admission-webhook not found\n"
                             f"{MUTATING}.{GROUP}/admission-webhook not found\n")


# --- how we reach the cluster ---------------------------------------------------------------

def test_in_cluster_configuration_from_env_and_files(apiserver: ApiServer, tmp_path: Path, home: Path) -> None:
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("pod-token\n")
    (account / "ca.crt").write_bytes(apiserver.ca_file.read_bytes())
    (account / "namespace").write_text("guard")
    apiserver.add_user("system:serviceaccount:guard:admission-webhook", "pod-token",
                       Rule(("get",), ("pods",), ("",), namespaces=("guard",)))
    port = apiserver.url.rsplit(":", 1)[1]
    env = environment(home, KUBERNETES_SERVICE_HOST="127.0.0.1", KUBERNETES_SERVICE_PORT=port,
                      WEBHOOK_SERVICEACCOUNT_DIR=str(account))
    result = webhook("can-i", "get", "pods", env=env)
    assert result.returncode == 0, result.stderr
    assert 'to User "system:serviceaccount:guard:admission-webhook"' in result.stdout


def test_client_certificate_from_kubeconfig_data_and_files(apiserver: ApiServer, tmp_path: Path, home: Path) -> None:
    cert, key = apiserver.client_certificate("kube-admin", groups=("system:masters",))
    apiserver.add_user("kube-admin", None, Rule(("*",), ("*",)))
    user = {"client-certificate-data": base64.b64encode(cert).decode(),
            "client-key-data": base64.b64encode(key).decode()}
    path = write_kubeconfig(tmp_path / "kubeconfig", apiserver.url, user, ca_file=apiserver.ca_file)
    result = cli("can-i", "create", "pods", "--kubeconfig", str(path), env=environment(home))
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith('to User "kube-admin"\n')
    (tmp_path / "admin.crt").write_bytes(cert)
    (tmp_path / "admin.key").write_bytes(key)
    files = {"client-certificate": "admin.crt", "client-key": "admin.key"}  # relative to the kubeconfig
    path = write_kubeconfig(tmp_path / "kubeconfig", apiserver.url, files, ca_file=apiserver.ca_file)
    assert cli("can-i", "create", "pods", "--kubeconfig", str(path), env=environment(home)).returncode == 0
    assert [s.user for s in apiserver.seen()] == ["kube-admin", "kube-admin"]


def test_an_unknown_token_is_a_clear_401_that_never_shows_the_token(
    apiserver: ApiServer, tmp_path: Path, home: Path
) -> None:
    path = kubeconfig_for(apiserver, tmp_path, "s3cr3t-t0ken")
    result = webhook("can-i", "get", "pods", "--kubeconfig", str(path), env=environment(home))
    assert result.returncode == 3
    assert result.stderr == (
        f"webhook: error: the Kubernetes API at {apiserver.url} did not accept our credentials (401 Unauthorized) "
        "for POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews; we are user 'tester' of context "
        f"'stand-in' in {path}\n"
    )
    assert len(apiserver.seen()) == 1  # never retried blindly
    assert "s3cr3t" not in result.stdout + result.stderr


def test_exec_plugin_printing_an_exec_credential(apiserver: ApiServer, tmp_path: Path, home: Path) -> None:
    apiserver.add_user("eks-user", "from-plugin", Rule(("list",), ("pods",), ("",)))
    plugin = tmp_path / "bin" / "get-token"
    plugin.parent.mkdir()
    plugin.write_text(f"""#!{sys.executable}
import json, os, sys
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
assert info["spec"]["interactive"] is False, info
assert info["spec"]["cluster"]["server"] == {apiserver.url!r}, info
assert os.environ["CLUSTER_NAME"] == "demo" and sys.argv[1:] == ["token", "--cluster", "demo"]
print(json.dumps({{"apiVersion": info["apiVersion"], "kind": "ExecCredential",
                  "status": {{"token": "from-plugin", "expirationTimestamp": "2999-01-01T00:00:00Z"}}}}))
""")
    plugin.chmod(0o755)
    for api_version in ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1"):
        user = {"exec": {"apiVersion": api_version, "command": "bin/get-token",  # relative to the kubeconfig
                         "args": ["token", "--cluster", "demo"], "env": [{"name": "CLUSTER_NAME", "value": "demo"}],
                         "interactiveMode": "Never", "provideClusterInfo": True}}
        path = write_kubeconfig(tmp_path / "kubeconfig", apiserver.url, user, ca_file=apiserver.ca_file)
        result = webhook("can-i", "list", "pods", "-A", "--kubeconfig", str(path), env=environment(home))
        assert result.returncode == 0, (api_version, result.stderr)
        assert result.stdout.endswith('to User "eks-user"\n')


def test_a_missing_exec_plugin_shows_its_install_hint(apiserver: ApiServer, tmp_path: Path, home: Path) -> None:
    user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": "no-such-plugin",
                     "installHint": "install it with: brew install no-such-plugin"}}
    path = write_kubeconfig(tmp_path / "kubeconfig", apiserver.url, user, ca_file=apiserver.ca_file)
    result = cli("can-i", "list", "pods", "--kubeconfig", str(path), env=environment(home))
    assert result.returncode == 2
    assert result.stderr == ("webhook: error: exec plugin no-such-plugin was not found; "
                             "install it with: brew install no-such-plugin\n")


def test_an_unreachable_api_fails_clearly_within_the_timeout(tmp_path: Path, home: Path, apiserver: ApiServer) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    path = write_kubeconfig(tmp_path / "kubeconfig", f"https://127.0.0.1:{port}", {"token": "t"},
                            ca_file=apiserver.ca_file)
    started = time.monotonic()
    result = webhook("can-i", "get", "pods", "--kubeconfig", str(path), "--request-timeout", "0.5",
                     env=environment(home), timeout=30)
    assert result.returncode == 3
    assert time.monotonic() - started < 10
    assert result.stderr.startswith(f"webhook: error: cannot reach the Kubernetes API at https://127.0.0.1:{port} "
                                    "for POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews: ")
    assert result.stderr.endswith("(tried 4 times, 0.5 s each)\n")


def test_an_api_that_accepts_but_never_answers_times_out(tmp_path: Path, home: Path, apiserver: ApiServer) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # the kernel completes the TCP handshake; nobody ever speaks TLS
        port = silent.getsockname()[1]
        path = write_kubeconfig(tmp_path / "kubeconfig", f"https://127.0.0.1:{port}", {"token": "t"},
                                ca_file=apiserver.ca_file)
        started = time.monotonic()
        result = webhook("can-i", "get", "pods", "--kubeconfig", str(path), "--request-timeout", "0.25",
                         env=environment(home), timeout=30)
        elapsed = time.monotonic() - started
    assert result.returncode == 3
    assert "no answer within 0.25 s (tried 4 times, 0.25 s each)" in result.stderr
    assert elapsed < 10


def test_help_of_the_cluster_commands(home: Path) -> None:
    for command in ("can-i", "register", "unregister"):
        result = webhook(command, "--help", env=environment(home))
        assert result.returncode == 0
        assert "--kubeconfig FILE" in result.stdout and "exit status" in result.stdout
    serve = webhook("serve", "--help", env=environment(home)).stdout
    assert "--register" in serve and "--permission-check-interval SECONDS" in serve


def test_register_mutates_the_custom_resources_the_policy_defaults(
    apiserver: ApiServer, admin: dict[str, str], pki: Path, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "images: {allow: [registry.k8s.io]}\n"
        "defaults:\n"
        "  - {group: example.sealyun.com, versions: [v1alpha1], kinds: [Project], set: {spec: {replicas: 1}}}\n"
        "  - {group: ops.acme.io, versions: ['*'], kinds: [Policy, Box], set: {spec: {paused: false}}}\n"
        "  - {group: '', versions: [v1], kinds: [Pod], set: {metadata: {labels: {team: none}}}}\n"
    )
    result = cli("register", "--dry-run", "--cert-dir", str(pki), "--policy", str(policy), env=admin)
    assert result.returncode == 0, result.stderr
    validating, mutating = yaml.safe_load_all(result.stdout)
    rules = {(r["apiGroups"][0], tuple(r["apiVersions"]), tuple(r["resources"]))
             for r in mutating["webhooks"][0]["rules"]}
    assert ("example.sealyun.com", ("v1alpha1",), ("projects",)) in rules
    assert ("ops.acme.io", ("*",), ("boxes", "policies")) in rules
    assert not [r for r in rules if r[0] == "" and "pods" in r[2] and len(r[2]) == 1]  # pods are covered already
    assert all(r["apiGroups"] != ["ops.acme.io"] for r in validating["webhooks"][0]["rules"])
    assert apiserver.seen() == []


def test_register_names_a_bad_policy(admin: dict[str, str], pki: Path, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("images: {allow: ['*']}\n")
    result = cli("register", "--dry-run", "--cert-dir", str(pki), "--policy", str(policy), env=admin)
    assert result.returncode == 2
    assert f"policy file {policy}: images.allow[0]" in result.stderr


# --- the docs -------------------------------------------------------------------------------

def test_the_cluster_examples_in_the_docs(tmp_path: Path) -> None:
    """docs/cluster.md's examples, run in its order against the stand-in as `python -m tests.apiserver`
    runs it, from a directory with certs/ as `make run` leaves it."""
    sandbox = Sandbox.make(tmp_path)
    server = docs_cluster(sandbox.cwd / "stand-in")
    try:
        ensure_certificates(sandbox.cwd / "certs", "admission-webhook", "admission-webhook")
        ports = {int(server.url.rsplit(":", 1)[1]): 6443}
        run_block(doc_block("docs/cluster.md", "can-i"), sandbox, ports=ports)  # it exports KUBECONFIG
        sandbox.env["KUBECONFIG"] = str(sandbox.cwd / "stand-in" / "kubeconfig")  # for the blocks after it
        run_block(doc_block("docs/cluster.md", "register"), sandbox, ports=ports)
        run_block(doc_block("docs/cluster.md", "register-dry-run"), sandbox, ports=ports)
        run_block(doc_block("docs/cluster.md", "unregister"), sandbox, ports=ports)
        run_block(doc_block("docs/cluster.md", "unreachable"), sandbox, ports=ports)
    finally:
        server.stop()
