"""Who may call, when ``--client-ca`` is set.

The TLS handshake has already refused any client without a certificate from the client CA. This
gate refuses the rest by name: the certificate's subject CN or one of its DNS SANs must be on
``--client-allow-name``. A refused request gets 401 with a ``metav1.Status`` body, on every path,
and never reaches a handler, so it is never answered with a review.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Mapping

import orjson
from cryptography import x509
from cryptography.x509.oid import NameOID
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("webhook.server")
_LOGGED_LIMIT = 1000


@functools.lru_cache(maxsize=256)
def client_names(pem: str) -> tuple[frozenset[str], frozenset[str]]:
    """The certificate's subject CNs (compared exactly) and DNS SANs (compared case-insensitively)."""
    cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
    cns = frozenset(str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME))
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = frozenset(name.lower() for name in sans.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        dns = frozenset()
    return cns, dns


class ClientCertificateGate:
    def __init__(self, app: ASGIApp, allowed: Iterable[str] = ()) -> None:
        self.app = app
        self.allowed = frozenset(allowed)
        self._allowed_dns = frozenset(name.lower() for name in self.allowed)
        self._logged: set[str] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = self.refusal(scope.get("extensions", {}).get("tls"))
        if problem is not None:
            await _refuse(send, problem)
            return
        await self.app(scope, receive, send)

    def refusal(self, tls: Mapping[object, object] | None) -> str | None:
        """Why a connection with these TLS facts (the ASGI TLS extension) is refused; None if it is not."""
        chain = (tls or {}).get("client_cert_chain") or []
        if not chain:
            return "a client certificate is required"
        if self.allowed:
            cns, dns = client_names(chain[0])  # type: ignore[index]
            if not (cns & self.allowed or dns & self._allowed_dns):
                self._log_once(cns, dns)
                return "the client certificate's names are not allowed"
        return None

    def admits(self, tls: Mapping[object, object] | None) -> bool:
        """For the protocol's direct routes: a refused connection is left to ``__call__`` to answer."""
        return self.refusal(tls) is None

    def _log_once(self, cns: frozenset[str], dns: frozenset[str]) -> None:
        who = f"CN={sorted(cns)} DNS={sorted(dns)}"
        if who in self._logged:
            return
        if len(self._logged) >= _LOGGED_LIMIT:
            self._logged.clear()
        self._logged.add(who)
        log.warning("refused a client certificate with %s: not on --client-allow-name", who)


async def _refuse(send: Send, message: str) -> None:
    body = orjson.dumps({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": "Unauthorized", "code": 401,
    })
    await send({
        "type": "http.response.start",
        "status": 401,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close")],
    })
    await send({"type": "http.response.body", "body": body})
