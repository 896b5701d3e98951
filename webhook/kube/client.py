"""The one HTTP client for the API server: TLS, credentials, timeouts, retries, Status errors.

Every call is bounded: each attempt by ``timeout`` and the whole call by a few attempts with
backoff. 429, 5xx and connection failures are retried because they pass; 401 and 403 are
not, because asking again with the same credentials gets the same answer. Their error names
who we are and what was refused, so the fix (a token, a RoleBinding) is obvious.
"""

from __future__ import annotations

import logging
import os
import random
import ssl
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from webhook import __version__
from webhook.kube.auth import build_auth
from webhook.kube.config import DEFAULT_TIMEOUT, ClusterConfig, ConfigError

log = logging.getLogger("webhook.kube")

RETRIABLE = frozenset({429, 500, 502, 503, 504})


class KubeError(Exception):
    """A call that did not succeed; ``str()`` is a complete sentence for the user."""


class Unreachable(KubeError):
    """The API server could not be reached, or kept failing, within the attempts allowed."""


class StreamBroken(KubeError):
    """A long response (a watch) stopped before it was complete, or could not be started."""


class ApiError(KubeError):
    """The API server answered with an error ``Status``."""

    def __init__(self, message: str, *, code: int, reason: str, status: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.status = status or {}


@dataclass(frozen=True, slots=True)
class Retry:
    attempts: int = 4
    first_delay: float = 0.25
    max_delay: float = 2.0

    def delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after and retry_after.isdigit():
            return min(float(retry_after), self.max_delay)
        base: float = min(self.first_delay * 2**attempt, self.max_delay)
        return base * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not secrecy


class KubeClient:
    """A thread-safe client for one cluster; callers use ``request`` and get parsed JSON."""

    def __init__(self, config: ClusterConfig, *, timeout: float = DEFAULT_TIMEOUT, retry: Retry | None = None) -> None:
        self.config = config
        self.timeout = timeout
        self.retry = retry or Retry()
        if config.insecure:
            log.warning("insecure-skip-tls-verify is set for %s: the API server's certificate is NOT verified",
                        config.server)
        self._http = httpx.Client(
            base_url=config.server,
            verify=ssl_context(config),
            auth=build_auth(config),
            timeout=httpx.Timeout(timeout),
            headers={"Accept": "application/json", "User-Agent": f"admission-webhook/{__version__}"},
            trust_env=False,
            follow_redirects=False,
        )
        self._extensions = {"sni_hostname": config.tls_server_name} if config.tls_server_name else {}

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> KubeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self, method: str, path: str, *, body: Any = None, params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """Send one API call, retrying what is worth retrying, and return the decoded JSON body."""
        content = None if body is None else orjson.dumps(body)
        headers = {"Content-Type": content_type} if content is not None else {}
        what = f"{method} {path}"
        last = ""
        answered = False  # the last attempt got an answer (a retriable status), not silence
        retry_after: str | None = None
        for attempt in range(self.retry.attempts):
            if attempt:
                time.sleep(self.retry.delay(attempt - 1, retry_after))
            retry_after, answered = None, False
            try:
                response = self._http.request(method, path, content=content, headers=headers, params=params,
                                              extensions=self._extensions)
            except httpx.TimeoutException:
                last = f"no answer within {self.timeout:g} s"
                continue
            except httpx.TransportError as exc:
                last = _transport_problem(exc)
                if "CERTIFICATE_VERIFY_FAILED" in last:  # asking again gets the same certificate
                    raise KubeError(f"cannot talk to the Kubernetes API at {self.config.server}: "
                                    f"its TLS certificate is not trusted ({last}); check the CA in "
                                    f"{self.config.source}") from None
                continue
            if response.status_code in RETRIABLE:
                retry_after = response.headers.get("Retry-After")
                last = f"HTTP {response.status_code}: {_status(response).get('message') or response.reason_phrase}"
                answered = True
                continue
            return self._result(response, what)
        tried = (f"tried once, with a {self.timeout:g} s timeout" if self.retry.attempts == 1
                 else f"tried {self.retry.attempts} times, {self.timeout:g} s each")
        if answered:  # it is there, and refuses: "cannot reach" would send the reader to the network
            raise Unreachable(f"the Kubernetes API at {self.config.server} kept failing {what}: {last} ({tried})")
        raise Unreachable(f"cannot reach the Kubernetes API at {self.config.server} for {what}: {last} ({tried})")

    @contextmanager
    def stream(self, path: str, *, params: dict[str, str], read_timeout: float) -> Iterator[Iterator[str]]:
        """One long GET whose body arrives a line at a time: a watch, one JSON event per line.

        Tried once: whether and when to try again is the watcher's decision (it backs off,
        and resumes from the last resourceVersion it saw). A refusal raises ``ApiError``
        as ``request`` does; a connection that fails or drops raises ``StreamBroken``.
        """
        what = f"GET {path} (watch)"
        timeout = httpx.Timeout(self.timeout, read=read_timeout)
        try:
            with self._http.stream("GET", path, params=params, timeout=timeout,
                                   extensions=self._extensions) as response:
                if response.status_code != 200:
                    response.read()
                    self._result(response, what)  # raises ApiError for every error status
                yield response.iter_lines()
        except httpx.TimeoutException:
            raise StreamBroken(f"{what}: nothing arrived within {read_timeout:g} s") from None
        except httpx.TransportError as exc:
            raise StreamBroken(f"{what} from {self.config.server}: {_transport_problem(exc)}") from None

    def _result(self, response: httpx.Response, what: str) -> dict[str, Any]:
        if 200 <= response.status_code < 300:
            try:
                document = orjson.loads(response.content) if response.content else {}
            except orjson.JSONDecodeError:
                raise KubeError(f"the API server at {self.config.server} answered {what} with "
                                "a body that is not JSON") from None
            return document if isinstance(document, dict) else {}
        status = _status(response)
        message = str(status.get("message") or response.reason_phrase)
        reason = str(status.get("reason") or response.reason_phrase)
        code = response.status_code
        if code == 401:
            text = (f"the Kubernetes API at {self.config.server} did not accept our credentials "
                    f"(401 Unauthorized) for {what}; we are {self.config.identity}")
        elif code == 403:
            text = f"the Kubernetes API refused {what} (403 Forbidden): {message}; we are {self.config.identity}"
        else:
            text = f"the Kubernetes API answered {what} with {code} {reason}: {message}"
        raise ApiError(text, code=code, reason=reason, status=status)


def ssl_context(config: ClusterConfig) -> ssl.SSLContext:
    """Trust exactly the configured CA (system roots only when none is given), and present our client cert.

    A file the kubeconfig names that cannot be read or does not parse is a ConfigError naming it,
    which the CLI prints as one line, as kubectl does.
    """
    try:
        return _ssl_context(config)
    except (OSError, ssl.SSLError, ValueError) as exc:
        files = ", ".join(str(f) for f in (config.ca_file, config.client_cert_file, config.client_key_file) if f)
        problem = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        where = f" ({files})" if files else ""
        raise ConfigError(f"the TLS files of the cluster configuration{where} cannot be used: {problem}") from None


def _ssl_context(config: ClusterConfig) -> ssl.SSLContext:
    if config.insecure:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif config.ca_data is not None:
        context = ssl.create_default_context(cadata=config.ca_data.decode("ascii", errors="replace"))
    elif config.ca_file is not None:
        context = ssl.create_default_context(cafile=str(config.ca_file))
    else:
        context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if config.client_cert_file and config.client_key_file:
        context.load_cert_chain(config.client_cert_file, config.client_key_file)
    elif config.client_cert_data and config.client_key_data:
        _load_cert_data(context, config.client_cert_data, config.client_key_data)
    return context


def _load_cert_data(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """``ssl`` loads key pairs only from files: write them to a private directory for the moment it takes."""
    with tempfile.TemporaryDirectory(prefix="webhook-kube-") as directory:
        cert_path, key_path = Path(directory) / "client.crt", Path(directory) / "client.key"
        for path, data in ((cert_path, cert), (key_path, key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        context.load_cert_chain(cert_path, key_path)


def _status(response: httpx.Response) -> dict[str, Any]:
    try:
        document = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return {}
    return document if isinstance(document, dict) and document.get("kind") == "Status" else {}


def _transport_problem(exc: httpx.TransportError) -> str:
    cause: BaseException = exc
    while cause.__context__ is not None and not isinstance(cause, (ssl.SSLError, OSError)):
        cause = cause.__context__
    return str(cause) or type(cause).__name__
