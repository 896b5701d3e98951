"""Bearer credentials that change while we run: token files and exec credential plugins.

A projected service-account token is rotated by the kubelet, so the file is read for every
request (a few hundred bytes, a few requests a minute) and never cached. An exec plugin is
run once and its token kept until its ``expirationTimestamp``, or until the API server
answers 401, which is the signal client-go also uses to run the plugin again.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import subprocess
import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

import httpx

from webhook.kube.config import ClusterConfig, ConfigError, ExecPlugin

EXEC_TIMEOUT_SECONDS = 60.0
EXPIRY_SKEW = dt.timedelta(seconds=10)


def build_auth(config: ClusterConfig) -> httpx.Auth | None:
    """The request-time credential for ``config``; client certificates live in the TLS context instead."""
    if config.exec_plugin is not None:
        return ExecAuth(config.exec_plugin, config)
    if config.token_file is not None:
        return TokenFileAuth(config.token_file)
    if config.token:
        return StaticTokenAuth(config.token)
    if config.username:
        return httpx.BasicAuth(config.username, config.password or "")
    return None


class StaticTokenAuth(httpx.Auth):
    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request


class TokenFileAuth(httpx.Auth):
    """Reads the token file for every request, so a rotated token is used on the next call."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {read_token(self.path)}"
        yield request


def read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"token file {path} cannot be read: {exc.strerror or exc}") from None
    if not token:
        raise ConfigError(f"token file {path} is empty")
    return token


class ExecAuth(httpx.Auth):
    """Runs a ``client.authentication.k8s.io`` exec plugin and keeps its token until it expires."""

    def __init__(self, plugin: ExecPlugin, config: ClusterConfig) -> None:
        self.plugin = plugin
        self._config = config
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires: dt.datetime | None = None

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token, fresh = self._current()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401 and not fresh:
            # The cached token was refused; the plugin may know a newer one.
            token = self._refresh(stale=token)
            request.headers["Authorization"] = f"Bearer {token}"
            yield request

    def _current(self) -> tuple[str, bool]:
        with self._lock:
            now = dt.datetime.now(dt.UTC)
            if self._token is not None and (self._expires is None or self._expires - EXPIRY_SKEW > now):
                return self._token, False
            self._token, self._expires = run_exec_plugin(self.plugin, self._config)
            return self._token, True

    def _refresh(self, stale: str) -> str:
        with self._lock:
            if self._token is None or self._token == stale:
                self._token, self._expires = run_exec_plugin(self.plugin, self._config)
            return self._token


def run_exec_plugin(plugin: ExecPlugin, config: ClusterConfig) -> tuple[str, dt.datetime | None]:
    """Run the plugin as client-go does: ``KUBERNETES_EXEC_INFO`` in, an ExecCredential on stdout."""
    if plugin.interactive_mode == "Always":
        raise ConfigError(f"exec plugin {plugin.command} needs an interactive terminal "
                          "(interactiveMode: Always), which the webhook never has")
    spec: dict[str, Any] = {"interactive": False}
    if plugin.provide_cluster_info:
        cluster: dict[str, Any] = {"server": config.server}
        if config.tls_server_name:
            cluster["tls-server-name"] = config.tls_server_name
        if config.insecure:
            cluster["insecure-skip-tls-verify"] = True
        ca = config.ca_data or (config.ca_file.read_bytes() if config.ca_file else None)
        if ca:
            cluster["certificate-authority-data"] = base64.b64encode(ca).decode("ascii")
        spec["cluster"] = cluster
    env = dict(config.environ)
    env.update(plugin.env)
    env["KUBERNETES_EXEC_INFO"] = json.dumps({"apiVersion": plugin.api_version, "kind": "ExecCredential",
                                              "spec": spec})
    name = plugin.command
    try:
        result = subprocess.run(  # noqa: S603 - the command comes from the user's own kubeconfig
            [plugin.command, *plugin.args], env=env, stdin=subprocess.DEVNULL, capture_output=True,
            timeout=EXEC_TIMEOUT_SECONDS, check=False, cwd=os.getcwd(),
        )
    except FileNotFoundError:
        hint = f"; {plugin.install_hint.strip()}" if plugin.install_hint else ""
        raise ConfigError(f"exec plugin {name} was not found{hint}") from None
    except PermissionError:
        raise ConfigError(f"exec plugin {name} cannot be run (permission denied)") from None
    except subprocess.TimeoutExpired:
        raise ConfigError(f"exec plugin {name} did not finish within {EXEC_TIMEOUT_SECONDS:.0f} s") from None
    if result.returncode != 0:
        stderr = result.stderr.decode(errors="replace").strip()[-500:]
        raise ConfigError(f"exec plugin {name} exited with status {result.returncode}: {stderr}")
    return parse_exec_credential(result.stdout, plugin)


def parse_exec_credential(output: bytes, plugin: ExecPlugin) -> tuple[str, dt.datetime | None]:
    name = plugin.command
    try:
        credential = json.loads(output)
    except ValueError:
        raise ConfigError(f"exec plugin {name} did not print an ExecCredential as JSON") from None
    if not isinstance(credential, dict) or credential.get("kind") != "ExecCredential":
        raise ConfigError(f"exec plugin {name} printed something other than an ExecCredential")
    if credential.get("apiVersion") != plugin.api_version:
        raise ConfigError(f"exec plugin {name} is configured for {plugin.api_version} "
                          f"but returned {credential.get('apiVersion')!r}")
    status = credential.get("status")
    if not isinstance(status, dict):
        raise ConfigError(f"exec plugin {name} returned no status")
    token = status.get("token")
    if not isinstance(token, str) or not token:
        if status.get("clientCertificateData"):
            raise ConfigError(f"exec plugin {name} returned a client certificate; "
                              "only token credentials are supported")
        raise ConfigError(f"exec plugin {name} returned no token")
    expires = status.get("expirationTimestamp")
    if not expires:
        return token, None
    try:
        when = dt.datetime.fromisoformat(str(expires).replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"exec plugin {name} returned an expirationTimestamp that is not RFC 3339") from None
    return token, when if when.tzinfo else when.replace(tzinfo=dt.UTC)
