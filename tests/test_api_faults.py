"""A failing Kubernetes API, played by the stand-in: slow beyond the timeout, 500 every time, 401,
a body cut short, a body that is not JSON, and a certificate that does not verify.

``can-i`` and ``register`` get a clear error within their timeouts (each attempt bounded by
``--request-timeout``; at most four attempts, for what is worth retrying). ``serve`` keeps answering
admission requests throughout, and shows the fault in ``/readyz`` and the log. Everything reaches
the stand-in through a kubeconfig file written here.
"""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.apiserver import CONFIG_PATH, GROUP, SSAR, WEBHOOK_RULES, ApiServer, Reply, Request, status, write_kubeconfig
from tests.conftest import ServerProcess
from tests.reviews import pod_review
from tests.steady import steady_client
from tests.test_kube_cli import cli, environment
from tests.tlsutil import eventually, find_logs
from webhook.certs import ensure_certificates

# --request-timeout, the bound on each attempt. The CLI waits it out only for the slow fault; a
# tighter one for the others would let a loaded machine turn their answer into a timeout.
TIMEOUT = 1.0
SLOW_TIMEOUT = 0.3
SERVE_TIMEOUT = 0.5  # serve reports rounds until one shows the fault, so a timeout in between is harmless
ATTEMPTS = 4  # webhook.kube.client.Retry
BACKOFF = 0.25 + 0.5 + 1.0  # the longest the three waits between attempts can be
SLACK = 5.0  # a loaded machine
VALIDATING = "validatingwebhookconfigurations"
MUTATING = "mutatingwebhookconfigurations"
CUT_SHORT = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
             b'{"kind":"SelfSubjectAccessReview","apiVer')
NOT_JSON_BODY = b'{"kind":"SelfSubjectAccessReview","apiVer'
NOT_JSON = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(NOT_JSON_BODY)).encode() + b"\r\n\r\n" + NOT_JSON_BODY)


@dataclass(frozen=True)
class Fault:
    name: str
    reply: Reply | None  # what the stand-in answers; None: it presents a certificate nobody trusts
    error: str  # what the error says, with {t} for the timeout
    attempts: int  # how many calls the command makes before it gives up

    def message(self, timeout: float) -> str:
        return self.error.format(t=f"{timeout:g}")

    def cli_timeout(self) -> float:
        return SLOW_TIMEOUT if self.name == "slow" else TIMEOUT

    def within_the_timeouts(self, elapsed: float) -> bool:
        return elapsed <= max(self.attempts, 1) * self.cli_timeout() + BACKOFF + SLACK

    def reached(self, calls: int) -> bool:
        """Whether ``calls`` calls reaching the stand-in fit: on a loaded machine an attempt can time
        out before the stand-in has read it, so retried faults may be seen fewer times."""
        return calls == self.attempts if self.attempts < ATTEMPTS else 1 <= calls <= ATTEMPTS


RETRIED = f"(tried {ATTEMPTS} times, {{t}} s each)"
FAULTS = [
    Fault("slow", (0, {"_raw": b"", "_delay": 10.0}), "no answer within {t} s " + RETRIED, ATTEMPTS),
    Fault("500", status(500, "InternalError", "etcdserver: request timed out"),
          "HTTP 500: etcdserver: request timed out " + RETRIED, ATTEMPTS),
    Fault("401", status(401, "Unauthorized", "Unauthorized"), "did not accept our credentials (401 Unauthorized)", 1),
    Fault("cut short", (0, {"_raw": CUT_SHORT}),
          "peer closed connection without sending complete message body (received 41 bytes, expected 1000) "
          + RETRIED, ATTEMPTS),
    Fault("not JSON", (0, {"_raw": NOT_JSON}), "with a body that is not JSON", 1),
    Fault("untrusted certificate", None, "its TLS certificate is not trusted", 0),
]


@pytest.fixture
def apiserver(apiserver: ApiServer) -> ApiServer:
    apiserver.add_user("hook", "hook-token", *WEBHOOK_RULES)
    return apiserver


@pytest.fixture
def untrusted(tmp_path: Path) -> ssl.SSLContext:
    """A serving context like the stand-in's, from a CA no kubeconfig here trusts."""
    directory = tmp_path / "impostor"
    ensure_certificates(directory, "kubernetes", "default")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "tls.crt", directory / "tls.key")
    return context


@contextlib.contextmanager
def playing(apiserver: ApiServer, fault: Fault, untrusted: ssl.SSLContext,
            where: Callable[[Request], bool] = lambda request: True) -> Iterator[None]:
    """The stand-in plays ``fault`` on the calls ``where`` picks, until the block ends."""
    def interceptor(request: Request) -> Reply | None:
        if fault.reply is None or not where(request):
            return None
        code, document = fault.reply
        return code, dict(document)

    trusted = apiserver.httpd.context
    apiserver.interceptors.append(interceptor)
    if fault.reply is None:
        apiserver.httpd.context = untrusted
    try:
        yield
    finally:
        apiserver.interceptors.remove(interceptor)
        apiserver.httpd.context = trusted


def kubeconfig(apiserver: ApiServer, directory: Path) -> Path:
    return write_kubeconfig(directory / "kubeconfig", apiserver.url, {"token": "hook-token"},
                            ca_file=apiserver.ca_file)


# --- the CLI -------------------------------------------------------------------------------------

@pytest.mark.parametrize("fault", FAULTS, ids=lambda fault: fault.name)
def test_can_i_fails_clearly_within_its_timeouts(apiserver: ApiServer, untrusted: ssl.SSLContext, tmp_path: Path,
                                                 fault: Fault) -> None:
    env = environment(tmp_path, KUBECONFIG=str(kubeconfig(apiserver, tmp_path)))
    with playing(apiserver, fault, untrusted):
        started = time.monotonic()
        result = cli("can-i", "create", f"{VALIDATING}.{GROUP}", "--request-timeout", str(fault.cli_timeout()),
                     env=env)
        elapsed = time.monotonic() - started
    assert result.returncode == 3, result
    assert result.stdout == ""
    assert result.stderr.startswith("webhook: error: ") and result.stderr.count("\n") == 1
    assert fault.message(fault.cli_timeout()) in result.stderr
    assert "hook-token" not in result.stderr
    assert fault.reached(len(apiserver.seen())), apiserver.seen()
    assert fault.within_the_timeouts(elapsed), elapsed


def _a_configuration(request: Request) -> bool:
    return CONFIG_PATH.match(request.path) is not None


# The client code is the one can-i uses; slow is left out here only because waiting it out is the costly case.
@pytest.mark.parametrize("fault", [f for f in FAULTS if f.name != "slow"], ids=lambda fault: fault.name)
def test_register_fails_clearly_within_its_timeouts_and_writes_nothing(
    apiserver: ApiServer, untrusted: ssl.SSLContext, tmp_path: Path, fault: Fault
) -> None:
    """The permission check passes; then the configurations' own calls fail."""
    ensure_certificates(tmp_path / "certs", "admission-webhook", "admission-webhook")
    env = environment(tmp_path, KUBECONFIG=str(kubeconfig(apiserver, tmp_path)))
    with playing(apiserver, fault, untrusted, where=_a_configuration):
        started = time.monotonic()
        result = cli("register", "--cert-dir", str(tmp_path / "certs"), "--request-timeout",
                     str(fault.cli_timeout()), env=env)
        elapsed = time.monotonic() - started
    assert result.returncode == 3, result
    assert fault.message(fault.cli_timeout()) in result.stderr
    assert result.stderr.count("\n") == 1
    assert apiserver.stored(VALIDATING, "admission-webhook") is None
    assert apiserver.stored(MUTATING, "admission-webhook") is None
    reached = [s for s in apiserver.seen() if CONFIG_PATH.match(s.path)]
    assert len(reached) == fault.attempts
    assert fault.within_the_timeouts(elapsed), elapsed


def test_register_survives_a_create_whose_answer_was_cut_short(apiserver: ApiServer, tmp_path: Path) -> None:
    """The API server created the configuration but the answer never arrived whole: the retry meets
    409 AlreadyExists, reads what is there, and finds it already right."""
    ensure_certificates(tmp_path / "certs", "admission-webhook", "admission-webhook")
    cut = []

    def created_then_cut(request: Request) -> Reply | None:
        if request.method == "POST" and request.path.endswith(VALIDATING) and not cut:
            cut.append(apiserver._route(request))
            return 0, {"_raw": CUT_SHORT}
        return None

    apiserver.interceptors.append(created_then_cut)
    env = environment(tmp_path, KUBECONFIG=str(kubeconfig(apiserver, tmp_path)))
    result = cli("register", "--cert-dir", str(tmp_path / "certs"), "--request-timeout", str(TIMEOUT), env=env)
    assert result.returncode == 0, result.stderr
    assert cut[0][0] == 201
    assert result.stdout == (f"{VALIDATING}.{GROUP}/admission-webhook unchanged\n"
                             f"{MUTATING}.{GROUP}/admission-webhook created\n")
    assert [(s.method, s.status) for s in apiserver.writes()] == [("POST", 0), ("POST", 409), ("POST", 201)]
    assert apiserver.stored(VALIDATING, "admission-webhook") == cut[0][1]


# --- serve ---------------------------------------------------------------------------------------

def cluster_report(server: ServerProcess) -> tuple[int, dict[str, Any]]:
    client = server.client(timeout=10)
    try:
        reply = client.request("GET", "/readyz")
        return reply.status_code, reply.json()["checks"]["kubernetes"]
    finally:
        client.close()


def test_serve_answers_admission_through_every_api_fault(
    apiserver: ApiServer, untrusted: ssl.SSLContext, tmp_path: Path, start_server: Any
) -> None:
    path = kubeconfig(apiserver, tmp_path)
    with start_server("--kubeconfig", str(path), "--register", "--request-timeout", str(SERVE_TIMEOUT),
                      "--permission-check-interval", "0.2", "--log-format", "text",
                      cert_dir=tmp_path / "certs") as server, steady_client(server) as steady:
        eventually(lambda: cluster_report(server)[1].get("state") == "ok", "the cluster check is ok")
        for fault in FAULTS:
            answered = steady.answered
            with playing(apiserver, fault, untrusted):
                code, report = eventually(
                    lambda f=fault: (r := cluster_report(server))[1].get("state") == "error"  # type: ignore[misc]
                    and f.message(SERVE_TIMEOUT) in r[1]["error"] and r,
                    f"/readyz reports the {fault.name} fault", timeout=ATTEMPTS * SERVE_TIMEOUT + BACKOFF + SLACK,
                    interval=0.1)
                assert code == 200 and report["ready"] is True, (fault.name, report)
                assert find_logs(server, fault.message(SERVE_TIMEOUT), level="WARNING"), fault.name
                assert steady.answered > answered, f"no review was answered during the {fault.name} fault"
            eventually(lambda: cluster_report(server)[1].get("state") == "ok",
                       f"the cluster check recovers from the {fault.name} fault", interval=0.1)
        assert steady.failures == []
    assert apiserver.stored(VALIDATING, "admission-webhook") is not None


def test_serve_starts_after_one_attempt_when_the_api_never_answers(
    apiserver: ApiServer, tmp_path: Path, start_server: Any
) -> None:
    """Nothing listens until start-up has talked to the API, and a liveness probe kills a server that
    does not listen: so start-up tries once, and the background check retries."""
    timeout = 2.0
    apiserver.interceptors.append(lambda request: (0, {"_raw": b"", "_delay": 30.0}))
    path = kubeconfig(apiserver, tmp_path)
    with start_server("--kubeconfig", str(path), "--register", "--request-timeout", str(timeout),
                      "--log-format", "text", cert_dir=tmp_path / "certs") as server:
        at_ready = len(apiserver.seen())
        client = server.client()
        assert client.review("/validate", pod_review("evil.io/x"))["allowed"] is False
        client.close()
        warning = find_logs(server, "serving anyway, and trying again in the background", level="WARNING")
    # One call at start-up, and perhaps the first of the background check's, which starts with the server.
    assert at_ready <= 2, [s.path for s in apiserver.seen()]
    assert next(s.path for s in apiserver.seen()) == SSAR
    assert len(warning) == 1 and f"(tried once, with a {timeout:g} s timeout)" in warning[0].message
