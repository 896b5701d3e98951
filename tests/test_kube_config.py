"""Finding the cluster as kubectl does: discovery order, KUBECONFIG merging, paths, in-cluster, errors."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from webhook.kube.config import ConfigError, load_config


def kubeconfig(path: Path, *, current: str | None = None, clusters: dict[str, dict[str, Any]] | None = None,
               users: dict[str, dict[str, Any]] | None = None,
               contexts: dict[str, dict[str, Any]] | None = None) -> Path:
    document: dict[str, Any] = {"apiVersion": "v1", "kind": "Config"}
    if current:
        document["current-context"] = current
    for key, inner, table in (("clusters", "cluster", clusters), ("users", "user", users),
                              ("contexts", "context", contexts)):
        if table is not None:
            document[key] = [{"name": name, inner: body} for name, body in table.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document))
    return path


def simple(path: Path, server: str = "https://a.example:6443", **user: Any) -> Path:
    return kubeconfig(path, current="main", clusters={"c": {"server": server}}, users={"u": user or {"token": "t"}},
                      contexts={"main": {"cluster": "c", "user": "u"}})


def test_kubeconfig_list_merges_first_file_wins(tmp_path: Path) -> None:
    first = kubeconfig(tmp_path / "one" / "config", current="dev",
                       clusters={"shared": {"server": "https://first:6443", "certificate-authority": "ca.pem"}},
                       users={"me": {"tokenFile": "token"}})
    second = kubeconfig(tmp_path / "two" / "config", current="prod",
                        clusters={"shared": {"server": "https://second:6443"}, "other": {"server": "https://o"}},
                        users={"me": {"token": "ignored"}},
                        contexts={"dev": {"cluster": "shared", "user": "me", "namespace": "team"},
                                  "prod": {"cluster": "other", "user": "me"}})
    env = {"KUBECONFIG": f"{first}::{tmp_path / 'missing'}:{second}", "HOME": str(tmp_path)}
    config = load_config(None, None, env)
    assert config.server == "https://first:6443"  # the first file to define "shared" wins
    assert config.ca_file == tmp_path / "one" / "ca.pem"  # relative to the file that said it
    assert config.token_file == tmp_path / "one" / "token"
    assert config.token is None
    assert config.namespace == "team"  # the context came from the second file
    assert config.source == f"kubeconfig {first}:{second}, context 'dev'"
    assert load_config(None, "prod", env).server == "https://o"


def test_the_flag_beats_kubeconfig_which_beats_home(tmp_path: Path) -> None:
    flag = simple(tmp_path / "flag", "https://flag")
    listed = simple(tmp_path / "listed", "https://listed")
    simple(tmp_path / ".kube" / "config", "https://home")
    env = {"KUBECONFIG": str(listed), "HOME": str(tmp_path), "KUBERNETES_SERVICE_HOST": "10.0.0.1",
           "KUBERNETES_SERVICE_PORT": "443"}
    assert load_config(flag, None, env).server == "https://flag"
    assert load_config(None, None, env).server == "https://listed"
    del env["KUBECONFIG"]
    assert load_config(None, None, env).server == "https://home"


def test_in_cluster_comes_last_and_reads_the_service_account_dir(tmp_path: Path) -> None:
    account = tmp_path / "sa"
    account.mkdir()
    (account / "token").write_text("x")
    (account / "ca.crt").write_text("ca")
    (account / "namespace").write_text("guard\n")
    env = {"HOME": str(tmp_path), "KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443",
           "WEBHOOK_SERVICEACCOUNT_DIR": str(account)}
    config = load_config(None, None, env)
    assert config.server == "https://[fd00::1]:443"
    assert (config.token_file, config.ca_file, config.namespace) == (account / "token", account / "ca.crt", "guard")
    assert config.token is None  # read at every request, never at load
    (account / "token").unlink()
    with pytest.raises(ConfigError, match="token is missing"):
        load_config(None, None, env)


def test_no_configuration_anywhere_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, None, {"HOME": str(tmp_path)})
    assert str(caught.value) == ("no cluster configuration: ~/.kube/config not found, and not running in a cluster "
                                 "(KUBERNETES_SERVICE_HOST is not set); pass --kubeconfig FILE")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope", None, {})


@pytest.mark.parametrize(("user", "cluster", "problem"), [
    ({"token": "t"}, {"server": "https://x", "insecure-skip-tls-verify": True, "certificate-authority": "c"},
     "insecure-skip-tls-verify cannot be combined with a certificate authority"),
    ({"client-certificate": "c.crt"}, {"server": "https://x"}, "needs both the certificate and the key"),
    ({"token": "t", "username": "u", "password": "p"}, {"server": "https://x"},
     "more than one authentication method: token, basic auth"),
    ({"auth-provider": {"name": "gcp"}}, {"server": "https://x"}, "auth-provider plugins are not supported"),
    ({"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "x"}}, {"server": "https://x"},
     "exec interactiveMode must be set for client.authentication.k8s.io/v1"),
    ({"exec": {"apiVersion": "client.authentication.k8s.io/v1alpha1", "command": "x"}}, {"server": "https://x"},
     "exec apiVersion 'client.authentication.k8s.io/v1alpha1' is not supported"),
    ({"token": "t"}, {"certificate-authority-data": "bm90IGJhc2U2NA=="}, "the cluster has no server"),
    ({"token": "t"}, {"server": "https://x", "certificate-authority-data": "%%%"},
     "certificate-authority-data is not valid base64"),
])
def test_contradictory_settings_are_refused(
    tmp_path: Path, user: dict[str, Any], cluster: dict[str, Any], problem: str
) -> None:
    path = kubeconfig(tmp_path / "config", current="main", clusters={"c": cluster}, users={"u": user},
                      contexts={"main": {"cluster": "c", "user": "u"}})
    with pytest.raises(ConfigError) as caught:
        load_config(path, None, {})
    assert problem in str(caught.value)


def test_context_errors_name_the_context(tmp_path: Path) -> None:
    path = simple(tmp_path / "config")
    with pytest.raises(ConfigError, match="context 'staging' is not defined"):
        load_config(path, "staging", {})
    unset = kubeconfig(tmp_path / "unset", clusters={}, contexts={})
    with pytest.raises(ConfigError, match="no current-context is set; pass --context NAME"):
        load_config(unset, None, {})


def test_data_fields_and_secrets_stay_out_of_repr(tmp_path: Path) -> None:
    path = simple(tmp_path / "config", token="very-secret",  # noqa: S106 - a test token
                  **{"client-certificate-data": base64.b64encode(b"CERT").decode(),
                     "client-key-data": base64.b64encode(b"KEY").decode()})
    config = load_config(path, None, {"SECRET_ENV": "also-secret"})
    assert (config.client_cert_data, config.client_key_data, config.token) == (b"CERT", b"KEY", "very-secret")
    assert "very-secret" not in repr(config) and "KEY" not in repr(config) and "also-secret" not in repr(config)
    assert config.identity == f"user 'u' of context 'main' in {path}"


def test_exec_command_with_a_slash_is_relative_to_its_kubeconfig(tmp_path: Path) -> None:
    path = simple(tmp_path / "conf" / "config", exec={"apiVersion": "client.authentication.k8s.io/v1beta1",
                                                      "command": "./bin/plugin", "args": ["a", 1]})
    plugin = load_config(path, None, {}).exec_plugin
    assert plugin is not None
    assert (plugin.command, plugin.args, plugin.interactive_mode) == (
        str(tmp_path / "conf" / "bin" / "plugin"), ("a", "1"), "IfAvailable")
    bare = simple(tmp_path / "other", exec={"apiVersion": "client.authentication.k8s.io/v1beta1",
                                            "command": "aws"})
    assert load_config(bare, None, {}).exec_plugin.command == "aws"  # type: ignore[union-attr]
