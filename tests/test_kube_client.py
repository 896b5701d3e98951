"""The API client over time: rotated tokens, cached exec credentials, retries, and what is never retried.

One ``KubeClient`` makes several calls here, because that is where caching would show.
It is built from a kubeconfig or in-cluster files, as ``serve`` builds it.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from tests.apiserver import GROUP, ApiServer, Reply, Request, Rule, status, write_kubeconfig
from webhook.kube.access import Permission, check
from webhook.kube.client import ApiError, KubeClient, Retry
from webhook.kube.config import ConfigError, load_config

PODS = Permission("list", "pods")
SSAR = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"


def in_cluster_client(apiserver: ApiServer, account: Path, **kwargs: object) -> KubeClient:
    account.mkdir(exist_ok=True)
    (account / "ca.crt").write_bytes(apiserver.ca_file.read_bytes())
    port = apiserver.url.rsplit(":", 1)[1]
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": port,
           "WEBHOOK_SERVICEACCOUNT_DIR": str(account), "HOME": str(account)}
    return KubeClient(load_config(None, None, env), **kwargs)  # type: ignore[arg-type]


def test_a_rotated_token_file_is_used_on_the_next_call(apiserver: ApiServer, tmp_path: Path) -> None:
    grant = Rule(("list",), ("pods",), ("",))
    apiserver.add_user("system:serviceaccount:guard:hook", "token-one", grant)
    apiserver.add_user("system:serviceaccount:guard:hook", "token-two")
    account = tmp_path / "account"
    account.mkdir()
    (account / "token").write_text("token-one")
    with in_cluster_client(apiserver, account) as client:
        assert check(client, PODS).allowed
        (account / "token").write_text("token-two\n")  # the kubelet rotates the projected token
        del apiserver.tokens["token-one"]  # and the old one expires
        assert check(client, PODS).allowed
    assert [s.authorization for s in apiserver.seen()] == ["Bearer token-one", "Bearer token-two"]
    assert [s.status for s in apiserver.seen()] == [201, 201]


def test_an_exec_credential_is_cached_until_refused_then_fetched_again(apiserver: ApiServer, tmp_path: Path) -> None:
    apiserver.add_user("sso-user", "first", Rule(("list",), ("pods",), ("",)))
    apiserver.add_user("sso-user", "second")
    source, runs = tmp_path / "current-token", tmp_path / "runs"
    source.write_text("first")
    plugin = tmp_path / "plugin"
    plugin.write_text(f"""#!{sys.executable}
import json, pathlib
with open({str(runs)!r}, "a") as log:
    log.write("run\\n")
token = pathlib.Path({str(source)!r}).read_text()
print(json.dumps({{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                  "status": {{"token": token}}}}))
""")
    plugin.chmod(0o755)
    user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": str(plugin),
                     "interactiveMode": "IfAvailable"}}
    path = write_kubeconfig(tmp_path / "kubeconfig", apiserver.url, user, ca_file=apiserver.ca_file)
    with KubeClient(load_config(path, None, {"PATH": "/usr/bin:/bin"})) as client:
        assert check(client, PODS).allowed
        assert check(client, PODS).allowed
        assert runs.read_text() == "run\n"  # one run served both calls
        source.write_text("second")
        del apiserver.tokens["first"]
        assert check(client, PODS).allowed  # 401 with the cached token: the plugin runs again
    assert runs.read_text() == "run\nrun\n"
    assert [(s.status, s.authorization) for s in apiserver.seen()] == [
        (201, "Bearer first"), (201, "Bearer first"), (401, "Bearer first"), (201, "Bearer second")]


def test_an_exec_credential_of_the_wrong_version_is_refused(apiserver: ApiServer, tmp_path: Path) -> None:
    plugin = tmp_path / "plugin"
    plugin.write_text(f"""#!{sys.executable}
print('{json.dumps({"apiVersion": "client.authentication.k8s.io/v1beta1", "kind": "ExecCredential",
                    "status": {"token": "x"}})}')
""")
    plugin.chmod(0o755)
    user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": str(plugin),
                     "interactiveMode": "Never"}}
    path = write_kubeconfig(tmp_path / "kubeconfig", apiserver.url, user, ca_file=apiserver.ca_file)
    with KubeClient(load_config(path, None, {})) as client, pytest.raises(ConfigError) as caught:
        check(client, PODS)
    assert str(caught.value) == (f"exec plugin {plugin} is configured for client.authentication.k8s.io/v1 "
                                 "but returned 'client.authentication.k8s.io/v1beta1'")
    assert apiserver.seen() == []


def test_429_and_5xx_are_retried_with_backoff(apiserver: ApiServer, tmp_path: Path) -> None:
    apiserver.add_user("ops", "ops-token", Rule(("list",), ("pods",), ("",)))
    answers: list[Reply] = [
        (429, {**status(429, "TooManyRequests", "too many requests")[1], "_headers": {"Retry-After": "0"}}),
        status(503, "ServiceUnavailable", "etcd leader changed"),
    ]

    def overloaded(request: Request) -> Reply | None:
        return answers.pop(0) if answers and request.path == SSAR else None

    apiserver.interceptors.append(overloaded)
    path = write_kubeconfig(tmp_path / "kubeconfig", apiserver.url, {"token": "ops-token"}, ca_file=apiserver.ca_file)
    with KubeClient(load_config(path, None, {}), retry=Retry(attempts=4, first_delay=0.01)) as client:
        assert check(client, PODS).allowed
    assert [s.status for s in apiserver.seen()] == [429, 503, 201]


def test_403_is_not_retried_and_names_who_was_refused(apiserver: ApiServer, tmp_path: Path) -> None:
    apiserver.add_user("viewer", "viewer-token")
    path = write_kubeconfig(tmp_path / "kubeconfig", apiserver.url, {"token": "viewer-token"},
                            ca_file=apiserver.ca_file)
    with KubeClient(load_config(path, None, {})) as client, pytest.raises(ApiError) as caught:
        client.request("GET", f"/apis/{GROUP}/v1/validatingwebhookconfigurations/admission-webhook")
    assert caught.value.code == 403
    assert str(caught.value) == (
        f"the Kubernetes API refused GET /apis/{GROUP}/v1/validatingwebhookconfigurations/admission-webhook "
        f'(403 Forbidden): validatingwebhookconfigurations.{GROUP} "admission-webhook" is forbidden: '
        f'User "viewer" cannot get resource "validatingwebhookconfigurations" in API group "{GROUP}" at the '
        f"cluster scope; we are user 'tester' of context 'stand-in' in {path}"
    )
    assert len(apiserver.seen()) == 1


def test_an_untrusted_server_certificate_is_not_retried(apiserver: ApiServer, tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "kubeconfig", apiserver.url, {"token": "t"})  # system roots only
    with KubeClient(load_config(path, None, {})) as client, pytest.raises(Exception, match="not trusted") as caught:
        check(client, PODS)
    assert "check the CA in kubeconfig" in str(caught.value)


def test_insecure_skip_tls_verify_works_and_warns(
    apiserver: ApiServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    apiserver.add_user("dev", "dev-token", Rule(("list",), ("pods",), ("",)))
    path = write_kubeconfig(tmp_path / "kubeconfig", apiserver.url, {"token": "dev-token"},
                            cluster={"insecure-skip-tls-verify": True})
    with caplog.at_level(logging.WARNING), KubeClient(load_config(path, None, {})) as client:
        assert check(client, PODS).allowed
    assert f"insecure-skip-tls-verify is set for {apiserver.url}" in caplog.text


def test_tls_server_name_is_sent_and_verified(apiserver: ApiServer, tmp_path: Path) -> None:
    apiserver.add_user("dev", "dev-token", Rule(("list",), ("pods",), ("",)))
    for name, works in (("kubernetes.default.svc", True), ("elsewhere.example", False)):
        path = write_kubeconfig(tmp_path / "kubeconfig", apiserver.url, {"token": "dev-token"},
                                ca_file=apiserver.ca_file, cluster={"tls-server-name": name})
        with KubeClient(load_config(path, None, {})) as client:
            if works:
                assert check(client, PODS).allowed
            else:
                with pytest.raises(Exception, match="not trusted"):
                    check(client, PODS)
