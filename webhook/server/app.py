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
from webhook.logs import configure_logging
from webhook.pki import CertificateError
from webhook.policy.model import Policy, load_policy
from webhook.server.clientauth import ClientCertificateGate
from webhook.server.tls import rfc3339
from webhook.server.tls_reload import ServingTLS
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
    tls: ServingTLS  # what this process serves; readiness reports it


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


def create_app(settings: ServeSettings, tls: ServingTLS | None = None) -> FastAPI:
    """Build the ASGI app; called once in every worker process, with that worker's TLS state."""
    configure_logging(settings.log_level)
    state = ServerState(
        policy=load_policy(settings.policy),
        tls=tls or ServingTLS.from_settings(settings),
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
        ready, report = readiness(state)
        return Response(orjson.dumps(report), status_code=200 if ready else 503, media_type=JSON)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        response = status_response(exc.status_code, str(exc.detail))
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    if settings.client_ca is not None:
        # Every path, probes included: the fine print wants a client certificate on the whole port.
        app.add_middleware(ClientCertificateGate, allowed=settings.client_allow_names)
    return app


def readiness(state: ServerState) -> tuple[bool, dict[str, object]]:
    checks: dict[str, object] = {
        "policy": {"ready": True, "source": state.policy.source, "sha256": state.policy.sha256},
        "certificate": certificate_check(state.tls),
    }
    ready = all(bool(check["ready"]) for check in checks.values() if isinstance(check, dict))
    return ready, {"ready": ready, "checks": checks}


def certificate_check(tls: ServingTLS) -> dict[str, object]:
    """The certificate this process serves: not ready once it has expired or stopped chaining to ca.crt."""
    try:
        status = tls.status(dt.datetime.now(dt.UTC))
    except CertificateError as exc:
        return {"ready": False, "problem": str(exc)}
    return {
        "ready": status.ready,
        "serial": status.serial,
        "notAfter": rfc3339(status.not_after),
        "chainsToCA": status.chains_to_ca,
        "problem": status.problem,
        "reloadError": status.reload_error,
    }
