"""Routes, limits and error mapping: the one HTTP layer in front of the admission handlers.

Everything HTTP-shaped is settled here (method, Content-Type, size, JSON envelope) so the
handlers only decide. Errors are answered as a ``metav1.Status`` body, which the API
server quotes in its own error message.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from webhook.admission.deadline import Deadline, budget
from webhook.admission.review import ReviewError, decode_review, encode_response
from webhook.admission.webhook import MUTATING, VALIDATING, Webhook
from webhook.certs import CertFiles
from webhook.pki import CertificateError
from webhook.policy.model import Policy, load_policy
from webhook.server.clientauth import ClientCertificateGate
from webhook.server.lifecycle import Lifecycle
from webhook.server.policy_reload import PolicyReloader, refuse_unservable
from webhook.server.protocol import WRITE_CHUNK, Direct
from webhook.server.telemetry import Telemetry
from webhook.server.tls import rfc3339 as _rfc3339
from webhook.server.tls_reload import ServingTLS
from webhook.settings import ServeSettings

if TYPE_CHECKING:  # the cluster stack (httpx and all) is imported only when a cluster is configured
    from webhook.kube.config import ClusterConfig
    from webhook.kube.monitor import ClusterMonitor
    from webhook.kube.namespaces import NamespaceInformer

log = logging.getLogger("webhook.server")

JSON = "application/json"
PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"
# Time kept back from the API server's ?timeout= for our reply to reach it.
DEADLINE_MARGIN_SECONDS = 0.5
_REASONS = {
    400: "BadRequest",
    404: "NotFound",
    405: "MethodNotAllowed",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
}


class HTTPProblem(Exception):
    def __init__(self, code: int, message: str, *, close: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close = close


@dataclass
class ServerState:
    """What one worker holds. The policy is swapped whole, never edited in place."""

    policy: Policy
    tls: ServingTLS  # what this worker serves; readiness and metrics report it
    lifecycle: Lifecycle
    telemetry: Telemetry
    # Permission checks and caBundle sync in the background; None when serve has no cluster.
    # A certificate reload calls ``cluster.request_sync()`` to publish a new CA at once.
    cluster: ClusterMonitor | None = None
    # Watches --policy FILE; None for the embedded default, which cannot change.
    policy_reload: PolicyReloader | None = None
    # Namespace labels, kept from the first policy that selects by them on; None until then.
    namespaces: NamespaceInformer | None = None
    settings: ServeSettings | None = None

    @classmethod
    def load(cls, settings: ServeSettings, lifecycle: Lifecycle, telemetry: Telemetry,
             tls: ServingTLS | None = None) -> ServerState:
        files = CertFiles(settings.cert_dir)
        tls = tls or ServingTLS.from_settings(settings)
        policy = load_policy(settings.policy)
        # As at start: the file may have changed since the parent read it.
        refuse_unservable(policy, cluster=settings.cluster is not None)
        state = cls(policy, tls, lifecycle, telemetry, settings=settings)
        state.cluster = _cluster_monitor(settings, files, telemetry, lambda: state.policy)
        state.swap_policy(policy)  # with namespace labels, when it selects by them
        if state.cluster is not None:
            tls.on_ca_change(state.cluster.request_sync)  # publish a new ca.crt as the caBundle at once
        telemetry.policy_loaded(state.policy)
        if settings.policy is not None:
            state.policy_reload = PolicyReloader(settings.policy, lambda: state.policy, state.swap_policy, telemetry,
                                                 settings.reload_interval, cluster=settings.cluster is not None)
            state.policy_reload.start()
        with contextlib.suppress(CertificateError):  # refreshed on each scrape too
            telemetry.certificate_expiry.set(tls.status().not_after.timestamp())
        return state


    def swap_policy(self, policy: Policy) -> None:
        """One assignment: a request that already read the old policy keeps it.

        The first policy that selects by namespace labels starts the informer, which then runs
        for good: a later policy may select by them again, and a watch costs little. A new policy
        asks the cluster monitor for a round at once, so the configurations follow its defaults.
        """
        settings = self.settings
        if policy.needs_namespace_labels and self.namespaces is None and settings and settings.cluster:
            self.namespaces = _namespace_informer(settings.cluster, settings)
        if self.namespaces is not None:
            policy = policy.seen_from(namespace_labels=self.namespaces)
        changed = policy.sha256 != self.policy.sha256
        self.policy = policy
        if changed and self.cluster is not None:
            self.cluster.request_sync()  # its defaults may name other custom resources to mutate


def status_body(code: int, message: str) -> bytes:
    """A ``metav1.Status``: the API server quotes its message in its own error."""
    return orjson.dumps({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": _REASONS.get(code, "InternalError"),
        "code": code,
    })


def status_response(code: int, message: str, *, close: bool = False) -> Response:
    headers = {"Connection": "close"} if close else None
    return Response(status_body(code, message), status_code=code, media_type=JSON, headers=headers)


class ReviewRoute:
    """``POST /validate`` or ``/mutate``: the hot path of the server.

    It settles everything HTTP about a review (method, Content-Type, size, the envelope) and
    nothing else, without the framework's routing, middleware and dependency machinery, which
    cost more per request than our whole decision does. FastAPI serves every other path.

    Usually the protocol calls ``refusal`` and ``answer`` itself, as soon as the body is in
    (``protocol.py``). Whatever it leaves to ASGI (a refused request, a chunked body, a request
    pipelined behind another) comes through ``__call__``, which answers by the same two methods.
    """

    def __init__(self, webhook: Webhook, state: ServerState, settings: ServeSettings) -> None:
        self.webhook = webhook
        self.state = state
        self.limit = settings.max_body_bytes
        self.max_values = settings.max_json_values
        self.eval_timeout = settings.eval_timeout

    def refusal(self, headers: Iterable[tuple[bytes, bytes]]) -> HTTPProblem | None:
        """What is wrong with a review's headers, before any of its body is read; None if nothing."""
        content_type = b""
        declared: bytes | None = None
        for name, value in headers:
            if name == b"content-type":
                content_type = value
            elif name == b"content-length":
                declared = value
        if content_type.split(b";", 1)[0].strip().lower() != b"application/json":
            shown = content_type.decode("latin-1") or "none"
            return HTTPProblem(415, f"Content-Type must be {JSON}, got {shown!r}")
        if declared is not None:
            if not declared.isdigit():
                return HTTPProblem(400, "Content-Length is not a number", close=True)
            if int(declared) > self.limit:
                return HTTPProblem(413, f"body of {int(declared)} bytes exceeds the limit of {self.limit} bytes",
                                   close=True)
        return None

    def answer(self, query: bytes, body: bytes, started: float) -> tuple[int, bytes]:
        """The status and body for a whole request body: 200 with a review, or 400."""
        telemetry = self.state.telemetry
        telemetry.inflight.inc()
        try:
            try:
                review = decode_review(body, self.max_values)
            except ReviewError as exc:
                return exc.code, status_body(exc.code, str(exc))
            policy = self.state.policy  # one policy for the whole request, even if a reload lands meanwhile
            seconds = budget(_timeout_param(query), self.eval_timeout, DEADLINE_MARGIN_SECONDS)
            decision = self.webhook.review(review, policy, Deadline.after(seconds, started))
            answer = encode_response(review, decision, mutating=self.webhook.mutating)
            telemetry.observe(self.webhook.name, review, decision, policy, time.monotonic() - started)
            return 200, answer
        finally:
            telemetry.inflight.dec()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.monotonic()
        if scope["method"] != "POST":
            await _send(send, 405, status_body(405, "Method Not Allowed"), extra=((b"allow", b"POST"),))
            return
        try:
            body = await self._read_body(scope, receive)
        except HTTPProblem as problem:
            await _send(send, problem.code, status_body(problem.code, problem.message), close=problem.close)
            return
        status, answer = self.answer(scope["query_string"], body, started)
        await _send(send, status, answer)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        """Read at most ``limit`` bytes: an announced excess is refused before reading anything."""
        problem = self.refusal(scope["headers"])
        if problem is not None:
            raise problem
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise HTTPProblem(400, "the client went away before sending the whole body", close=True)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                raise HTTPProblem(413, f"body exceeds the limit of {self.limit} bytes", close=True)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class AdmissionApp:
    """The HTTPS app: the two review paths go straight to their route, the rest to FastAPI."""

    def __init__(self, routes: dict[str, ReviewRoute], fallback: ASGIApp) -> None:
        self.routes = routes
        self.fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            route = self.routes.get(scope["path"])
            if route is not None:
                await route(scope, receive, send)
                return
        await self.fallback(scope, receive, send)


def _timeout_param(query: bytes) -> str | None:
    """The API server's ``?timeout=10s``, without building a query-parameter object per request."""
    if not query:
        return None
    for part in query.split(b"&"):
        if part.startswith(b"timeout="):
            return part[8:].decode("latin-1")
    return None


async def _send(send: Send, status: int, body: bytes, *, close: bool = False,
                extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    """A large body goes a chunk at a time, so the server's flow control (and its write deadline)
    sees a client that does not read it."""
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    offset = 0
    while len(body) - offset > WRITE_CHUNK:
        await send({"type": "http.response.body", "body": body[offset : offset + WRITE_CHUNK], "more_body": True})
        offset += WRITE_CHUNK
    await send({"type": "http.response.body", "body": body[offset:] if offset else body})


def create_app(settings: ServeSettings, state: ServerState) -> tuple[ASGIApp, Direct]:
    """The HTTPS app, and the review routes the protocol answers without it (``protocol.Direct``)."""
    fallback = _bare_app()
    _add_probes(fallback, state)
    routes = {"/validate": ReviewRoute(VALIDATING, state, settings), "/mutate": ReviewRoute(MUTATING, state, settings)}
    app: ASGIApp = AdmissionApp(routes, fallback)
    direct = Direct({path.encode(): route for path, route in routes.items()})
    if settings.client_ca is not None:
        # Every path on the HTTPS port, probes included (fine-print.md); the probe port stays open.
        gate = ClientCertificateGate(app, allowed=settings.client_allow_names)
        app, direct = gate, Direct(direct.routes, admits=gate.admits)
    return app, direct


def create_probe_app(state: ServerState) -> FastAPI:
    """The plain-HTTP probe port: health, readiness and metrics only, never a review."""
    app = _bare_app()
    _add_probes(app, state)
    return app


def _bare_app() -> FastAPI:
    app = FastAPI(title="admission-webhook", docs_url=None, redoc_url=None, openapi_url=None)
    # client-go strips trailing slashes; a redirect would be a failed call, not a review.
    app.router.redirect_slashes = False

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        response = status_response(exc.status_code, str(exc.detail))
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    return app


def _add_probes(app: FastAPI, state: ServerState) -> None:
    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(orjson.dumps({"status": "ok"}), media_type=JSON)

    @app.get("/readyz")
    async def readyz() -> Response:
        ready, report = readiness(state)
        return Response(orjson.dumps(report), status_code=200 if ready else 503, media_type=JSON)

    @app.get("/metrics")
    async def metrics() -> Response:
        with contextlib.suppress(CertificateError):  # the served certificate can change with every reload
            state.telemetry.certificate_expiry.set(state.tls.status().not_after.timestamp())
        return Response(state.telemetry.render(), media_type=PROMETHEUS)


def readiness(state: ServerState) -> tuple[bool, dict[str, object]]:
    since = state.lifecycle.draining_since
    certificate = certificate_check(state.tls)
    checks: dict[str, object] = {
        "policy": policy_check(state),
        "certificate": certificate,
        "shutdown": {"ready": since is None, "drainingSince": rfc3339(since)},
    }
    # Reported, never a gate: an API server that is down must not take admission down with it.
    checks["kubernetes"] = state.cluster.readiness() if state.cluster else {"ready": True, "enabled": False}
    ready = bool(certificate["ready"]) and since is None
    if state.namespaces is not None:
        # A gate until the first list is in, while the policy needs it; after that, labels last
        # seen stay in force when the API server goes away, so this stays ready.
        namespaces = state.namespaces.readiness()
        namespaces["needed"] = state.policy.needs_namespace_labels
        checks["namespaces"] = namespaces
        ready = ready and (bool(namespaces["ready"]) or not namespaces["needed"])
    return ready, {"ready": ready, "checks": checks}


def policy_check(state: ServerState) -> dict[str, object]:
    """Always ready: a refused reload leaves the last good policy in force, and says so here."""
    policy = state.policy
    check: dict[str, object] = {
        "ready": True, "source": policy.source, "sha256": policy.sha256, "scopes": len(policy.scopes.scopes),
        "exceptions": len(policy.exceptions.items), "expiredExceptions": policy.exceptions.expired(time.time()),
    }
    reload = state.policy_reload
    if reload is not None:
        check["loadedAt"] = rfc3339(reload.loaded_at)
        check["reloadError"] = reload.last_error
        check["reloadErrorAt"] = rfc3339(reload.last_error_at)
    return check


def certificate_check(tls: ServingTLS) -> dict[str, object]:
    """The certificate this worker serves: not ready once it has expired or stopped chaining to ca.crt."""
    try:
        status = tls.status(dt.datetime.now(dt.UTC))
    except CertificateError as exc:
        return {"ready": False, "problem": str(exc)}
    return {
        "ready": status.ready,
        "serial": status.serial,
        "notAfter": _rfc3339(status.not_after),
        "chainsToCA": status.chains_to_ca,
        "problem": status.problem,
        "reloadError": status.reload_error,
    }


def rfc3339(moment: dt.datetime | None) -> str | None:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def _namespace_informer(cluster: ClusterConfig, settings: ServeSettings) -> NamespaceInformer:
    from webhook.kube.namespaces import NamespaceInformer  # noqa: PLC0415 - see the TYPE_CHECKING import

    informer = NamespaceInformer(cluster, request_timeout=settings.request_timeout,
                                 eval_timeout=settings.eval_timeout)
    informer.start()
    return informer


def _cluster_monitor(settings: ServeSettings, files: CertFiles, telemetry: Telemetry,
                     policy: Callable[[], Policy]) -> ClusterMonitor | None:
    if settings.cluster is None:
        return None
    from webhook.kube.monitor import ClusterMonitor  # noqa: PLC0415 - see the TYPE_CHECKING import

    monitor = ClusterMonitor(
        settings.cluster, interval=settings.permission_check_interval, timeout=settings.request_timeout,
        registration=settings.registration, ca_file=files.ca_crt, on_permissions=telemetry.permissions_checked,
        policy=policy,
    )
    monitor.start()
    return monitor

