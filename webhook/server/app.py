"""Routes, limits and error mapping: the one HTTP layer in front of the admission handlers.

Everything HTTP-shaped is settled here (method, Content-Type, size, JSON envelope) so the
handlers only decide. Errors are answered as a ``metav1.Status`` body, which the API
server quotes in its own error message.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from webhook.admission.mutate import mutate
from webhook.admission.review import ReviewError, decode_review, encode_response
from webhook.admission.validate import validate
from webhook.admission.webhook import Webhook
from webhook.certs import CertFiles, read_certificate
from webhook.kube.monitor import ClusterMonitor
from webhook.logs import configure_logging
from webhook.policy.model import Policy, load_policy
from webhook.settings import ServeSettings

log = logging.getLogger("webhook.server")

VALIDATING = Webhook("validate", validate, mutating=False)
MUTATING = Webhook("mutate", mutate, mutating=True)
JSON = "application/json"
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
    """What the running server holds. The policy is swapped whole, never edited in place."""

    policy: Policy
    certificate_not_after: dt.datetime | None
    # Permission checks and caBundle sync in the background; None when serve has no cluster.
    # A certificate reload calls ``cluster.request_sync()`` to publish a new CA at once.
    cluster: ClusterMonitor | None = None


def status_response(code: int, message: str, *, close: bool = False) -> Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": _REASONS.get(code, "InternalError"),
        "code": code,
    }
    headers = {"Connection": "close"} if close else None
    return Response(orjson.dumps(body), status_code=code, media_type=JSON, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """Read at most ``limit`` bytes: an announced excess is refused before reading anything."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != JSON:
        raise HTTPProblem(415, f"Content-Type must be {JSON}, got {content_type or 'none'!r}")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise HTTPProblem(400, "Content-Length is not a number", close=True)
        if int(declared) > limit:
            raise HTTPProblem(413, f"body of {declared} bytes exceeds the limit of {limit} bytes", close=True)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPProblem(413, f"body exceeds the limit of {limit} bytes", close=True)
        chunks.append(chunk)
    return b"".join(chunks)


def review_endpoint(
    webhook: Webhook, state: ServerState, limit: int
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            body = await read_body(request, limit)
            review = decode_review(body)
        except HTTPProblem as problem:
            return status_response(problem.code, problem.message, close=problem.close)
        except ReviewError as exc:
            return status_response(400, str(exc))
        policy = state.policy  # one policy for the whole request, even if a reload lands meanwhile
        decision = webhook.review(review, policy)
        return Response(encode_response(review, decision, mutating=webhook.mutating), media_type=JSON)

    endpoint.__name__ = f"{webhook.name}_endpoint"
    return endpoint


def create_app(settings: ServeSettings) -> FastAPI:
    """Build the ASGI app; called once in every worker process."""
    configure_logging(settings.log_level)
    files = CertFiles(settings.cert_dir)
    state = ServerState(
        policy=load_policy(settings.policy),
        certificate_not_after=_not_after(files),
        cluster=_cluster_monitor(settings, files),
    )
    app = FastAPI(title="admission-webhook", docs_url=None, redoc_url=None, openapi_url=None)
    # client-go strips trailing slashes; a redirect would be a failed call, not a review.
    app.router.redirect_slashes = False
    app.state.server = state
    for path, hook in (("/validate", VALIDATING), ("/mutate", MUTATING)):
        app.add_api_route(path, review_endpoint(hook, state, settings.max_body_bytes), methods=["POST"])

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(orjson.dumps({"status": "ok"}), media_type=JSON)

    @app.get("/readyz")
    async def readyz() -> Response:
        ready, report = readiness(state, files)
        return Response(orjson.dumps(report), status_code=200 if ready else 503, media_type=JSON)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        response = status_response(exc.status_code, str(exc.detail))
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    return app


def readiness(state: ServerState, files: CertFiles) -> tuple[bool, dict[str, object]]:
    now = dt.datetime.now(dt.UTC)
    not_after = state.certificate_not_after
    cert_ok = not_after is not None and not_after > now
    checks: dict[str, object] = {
        "policy": {"ready": True, "source": state.policy.source, "sha256": state.policy.sha256},
        "certificate": {
            "ready": cert_ok,
            "notAfter": not_after.strftime("%Y-%m-%dT%H:%M:%SZ") if not_after else None,
        },
    }
    # Reported, never a gate: an API server that is down must not take admission down with it.
    checks["kubernetes"] = state.cluster.readiness() if state.cluster else {"ready": True, "enabled": False}
    return cert_ok, {"ready": cert_ok, "checks": checks}


def _cluster_monitor(settings: ServeSettings, files: CertFiles) -> ClusterMonitor | None:
    if settings.cluster is None:
        return None
    monitor = ClusterMonitor(
        settings.cluster, interval=settings.permission_check_interval, timeout=settings.request_timeout,
        registration=settings.registration, ca_file=files.ca_crt,
    )
    monitor.start()
    return monitor


def _not_after(files: CertFiles) -> dt.datetime | None:
    try:
        return read_certificate(files.tls_crt).not_valid_after_utc
    except (OSError, ValueError):
        return None
