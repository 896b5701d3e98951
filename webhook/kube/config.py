"""Where the cluster is and who we are: kubeconfig files and in-cluster service accounts.

Found in client-go's order (``--kubeconfig``, ``KUBECONFIG``, ``~/.kube/config``, in-cluster),
and merged as kubectl merges a ``KUBECONFIG`` list: the first file to name a cluster, user or
context wins, and so does the first ``current-context``. Paths in a file are relative to that
file. Secrets stay out of ``repr`` so a logged config never leaks them.

The environment is a parameter, never read here, so tests hand in their own.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
# Seconds a call to the API server may take; the default of --request-timeout.
DEFAULT_TIMEOUT = 10.0


class ConfigError(Exception):
    """No usable cluster configuration; the message says which file and which key."""


@dataclass(frozen=True, slots=True)
class ExecPlugin:
    """A kubeconfig ``exec`` credential plugin (EKS, GKE, AKS and kubelogin use one)."""

    command: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    api_version: str = EXEC_API_VERSIONS[0]
    install_hint: str | None = None
    provide_cluster_info: bool = False
    interactive_mode: str = "IfAvailable"


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """One resolved context: the API server, how to trust it, and how to prove who we are."""

    server: str
    source: str  # where this came from, for messages: a kubeconfig path and context, or in-cluster
    identity: str  # who we are, for 401/403 messages; never contains a secret
    namespace: str = "default"
    ca_file: Path | None = None
    ca_data: bytes | None = field(default=None, repr=False)
    insecure: bool = False
    tls_server_name: str | None = None
    client_cert_file: Path | None = None
    client_key_file: Path | None = None
    client_cert_data: bytes | None = field(default=None, repr=False)
    client_key_data: bytes | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    token_file: Path | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    exec_plugin: ExecPlugin | None = None
    # The environment an exec plugin runs in (client-go passes the whole process environment).
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def has_credentials(self) -> bool:
        return bool(self.token or self.token_file or self.exec_plugin or self.username
                    or self.client_cert_file or self.client_cert_data)


def load_config(
    kubeconfig: Path | None, context: str | None, environ: Mapping[str, str]
) -> ClusterConfig:
    """Resolve the cluster the way kubectl does, given the process environment ``environ``."""
    if kubeconfig is not None:
        if not kubeconfig.is_file():
            raise ConfigError(f"kubeconfig {kubeconfig} does not exist or is not a file")
        return _from_files([kubeconfig], context, environ)
    listed = [Path(p).expanduser() for p in environ.get("KUBECONFIG", "").split(":") if p]
    if listed:
        present = [p for p in dict.fromkeys(listed) if p.is_file()]
        if present:
            return _from_files(present, context, environ)
    else:
        home = Path(environ["HOME"]) if environ.get("HOME") else Path.home()
        default = home / ".kube" / "config"
        if default.is_file():
            return _from_files([default], context, environ)
    if in_cluster(environ):
        if context:
            raise ConfigError(f"--context {context} needs a kubeconfig, and none was found")
        return in_cluster_config(environ)
    looked = "the files in KUBECONFIG" if listed else "~/.kube/config"
    raise ConfigError(
        f"no cluster configuration: {looked} not found, and not running in a cluster "
        "(KUBERNETES_SERVICE_HOST is not set); pass --kubeconfig FILE"
    )


def in_cluster(environ: Mapping[str, str]) -> bool:
    return bool(environ.get("KUBERNETES_SERVICE_HOST") and environ.get("KUBERNETES_SERVICE_PORT"))


def in_cluster_config(environ: Mapping[str, str]) -> ClusterConfig:
    """The pod's service account, as client-go's ``InClusterConfig`` reads it."""
    host = environ.get("KUBERNETES_SERVICE_HOST", "")
    port = environ.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise ConfigError("not in a cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be set")
    directory = Path(environ.get("WEBHOOK_SERVICEACCOUNT_DIR") or SERVICE_ACCOUNT_DIR)
    token_file = directory / "token"
    ca_file = directory / "ca.crt"
    for needed in (token_file, ca_file):
        if not needed.is_file():
            raise ConfigError(f"in-cluster configuration: {needed} is missing (is a service-account token mounted?)")
    try:
        namespace = (directory / "namespace").read_text().strip() or "default"
    except OSError:
        namespace = "default"
    if _is_ipv6(host):
        host = f"[{host}]"
    return ClusterConfig(
        server=f"https://{host}:{port}",
        source="in-cluster service account",
        identity=f"the pod's service account in namespace {namespace} (token {token_file})",
        namespace=namespace,
        ca_file=ca_file,
        token_file=token_file,
        environ=dict(environ),
    )


@dataclass(frozen=True, slots=True)
class _Entry:
    body: dict[str, Any]
    origin: Path  # the file that defined it: relative paths resolve against its directory


def _from_files(paths: list[Path], context: str | None, environ: Mapping[str, str]) -> ClusterConfig:
    clusters: dict[str, _Entry] = {}
    users: dict[str, _Entry] = {}
    contexts: dict[str, _Entry] = {}
    current: str | None = None
    for path in paths:
        document = _read_yaml(path)
        for key, table, inner in (("clusters", clusters, "cluster"), ("users", users, "user"),
                                  ("contexts", contexts, "context")):
            for index, item in enumerate(_list(document, key, path)):
                if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                    raise ConfigError(f"kubeconfig {path}: {key}[{index}] needs a name")
                body = item.get(inner) or {}
                if not isinstance(body, dict):
                    raise ConfigError(f"kubeconfig {path}: {key}[{index}].{inner} must be a mapping")
                table.setdefault(item["name"], _Entry(body, path))
        if not current and isinstance(document.get("current-context"), str) and document["current-context"]:
            current = document["current-context"]
    files = ":".join(str(p) for p in paths)
    name = context or current
    if not name:
        raise ConfigError(f"kubeconfig {files}: no current-context is set; pass --context NAME")
    if name not in contexts:
        raise ConfigError(f"kubeconfig {files}: context {name!r} is not defined")
    ctx = contexts[name].body
    cluster_name = ctx.get("cluster")
    if cluster_name not in clusters:
        raise ConfigError(f"kubeconfig {files}: context {name!r} names cluster {cluster_name!r}, which is not defined")
    user_name = ctx.get("user")
    if user_name and user_name not in users:
        raise ConfigError(f"kubeconfig {files}: context {name!r} names user {user_name!r}, which is not defined")
    cluster = clusters[cluster_name]
    user = users[user_name] if user_name else _Entry({}, cluster.origin)
    where = f"context {name!r} in {files}"
    config = ClusterConfig(
        server=_server(cluster.body, where),
        source=f"kubeconfig {files}, context {name!r}",
        identity=f"user {user_name!r} of context {name!r} in {user.origin}" if user_name
        else f"no user (anonymous) in context {name!r} of {files}",
        namespace=str(ctx.get("namespace") or "default"),
        environ=dict(environ),
        **_cluster_fields(cluster, where),
        **_user_fields(user, where, str(user_name)),
    )
    return config


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        document = yaml.safe_load(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"kubeconfig {path} cannot be read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"kubeconfig {path} is not valid YAML: {exc}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(f"kubeconfig {path} must be a mapping (kind: Config)")
    return document


def _list(document: dict[str, Any], key: str, path: Path) -> list[Any]:
    value = document.get(key) or []
    if not isinstance(value, list):
        raise ConfigError(f"kubeconfig {path}: {key} must be a list")
    return value


def _server(body: dict[str, Any], where: str) -> str:
    server = body.get("server")
    if not isinstance(server, str) or not server:
        raise ConfigError(f"{where}: the cluster has no server")
    if "://" not in server:
        server = f"https://{server}"
    return server.rstrip("/")


def _cluster_fields(entry: _Entry, where: str) -> dict[str, Any]:
    body = entry.body
    insecure = body.get("insecure-skip-tls-verify") is True
    ca_file = _path(entry, "certificate-authority")
    ca_data = _data(body, "certificate-authority-data", where)
    if ca_file and ca_data:
        raise ConfigError(f"{where}: certificate-authority and certificate-authority-data are both set")
    if insecure and (ca_file or ca_data):
        raise ConfigError(f"{where}: insecure-skip-tls-verify cannot be combined with a certificate authority")
    tls_server_name = body.get("tls-server-name")
    return {
        "ca_file": ca_file,
        "ca_data": ca_data,
        "insecure": insecure,
        "tls_server_name": tls_server_name if isinstance(tls_server_name, str) and tls_server_name else None,
    }


def _user_fields(entry: _Entry, where: str, user_name: str) -> dict[str, Any]:
    body = entry.body
    where = f"{where}, user {user_name!r}"
    if body.get("auth-provider"):
        raise ConfigError(f"{where}: auth-provider plugins are not supported (client-go removed them too); "
                          "use an exec credential plugin")
    cert_file, key_file = _path(entry, "client-certificate"), _path(entry, "client-key")
    cert_data = _data(body, "client-certificate-data", where)
    key_data = _data(body, "client-key-data", where)
    if bool(cert_file or cert_data) != bool(key_file or key_data):
        raise ConfigError(f"{where}: a client certificate needs both the certificate and the key")
    token = body.get("token") or None
    username, password = body.get("username") or None, body.get("password") or None
    plugin = _exec(entry, where) if body.get("exec") else None
    methods = [m for m, present in (("token", token or body.get("tokenFile")), ("basic auth", username),
                                    ("exec", plugin)) if present]
    if len(methods) > 1:
        raise ConfigError(f"{where}: more than one authentication method: {', '.join(methods)}")
    return {
        "client_cert_file": cert_file,
        "client_key_file": key_file,
        "client_cert_data": cert_data,
        "client_key_data": key_data,
        "token": str(token) if token else None,
        "token_file": _path(entry, "tokenFile"),
        "username": str(username) if username else None,
        "password": str(password) if password else None,
        "exec_plugin": plugin,
    }


def _exec(entry: _Entry, where: str) -> ExecPlugin:
    spec = entry.body["exec"]
    if not isinstance(spec, dict) or not isinstance(spec.get("command"), str) or not spec["command"]:
        raise ConfigError(f"{where}: exec needs a command")
    api_version = spec.get("apiVersion")
    if api_version not in EXEC_API_VERSIONS:
        raise ConfigError(f"{where}: exec apiVersion {api_version!r} is not supported; "
                          f"use {' or '.join(EXEC_API_VERSIONS)}")
    mode = spec.get("interactiveMode")
    if not mode:
        if api_version == EXEC_API_VERSIONS[0]:
            raise ConfigError(f"{where}: exec interactiveMode must be set for {api_version}")
        mode = "IfAvailable"
    if mode not in ("Never", "IfAvailable", "Always"):
        raise ConfigError(f"{where}: exec interactiveMode {mode!r} is not Never, IfAvailable or Always")
    command = spec["command"]
    if "/" in command and not Path(command).is_absolute():
        command = str(entry.origin.parent / command)
    env = []
    for item in spec.get("env") or []:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ConfigError(f"{where}: exec env entries need a name and a value")
        env.append((item["name"], str(item.get("value", ""))))
    return ExecPlugin(
        command=command,
        args=tuple(str(a) for a in spec.get("args") or []),
        env=tuple(env),
        api_version=api_version,
        install_hint=spec.get("installHint") or None,
        provide_cluster_info=spec.get("provideClusterInfo") is True,
        interactive_mode=mode,
    )


def _path(entry: _Entry, key: str) -> Path | None:
    value = entry.body.get(key)
    if not isinstance(value, str) or not value:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else entry.origin.parent / path


def _data(body: dict[str, Any], key: str, where: str) -> bytes | None:
    value = body.get(key)
    if not value:
        return None
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where}: {key} is not valid base64") from None


def _is_ipv6(host: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address)
    except ValueError:
        return False
