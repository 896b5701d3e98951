"""An HTTPS stand-in for kube-apiserver, for the endpoints the webhook uses.

It runs on loopback in a thread of the test process, over real TLS (a serving certificate
made by our own ``webhook.certs``), and behaves as the real server does where we depend on it:

- authentication: bearer tokens and client certificates (CN is the user, O the groups);
  an unknown token or no credentials at all get 401 with a ``Status`` body;
- authorization: a small rule table per user answers SelfSubjectAccessReview with real
  ``allowed``/``denied``/``reason`` fields, and guards every other call with the same table
  (403 with the real message naming the user, verb, resource and scope);
- validating and mutating webhook configurations: GET, list, POST, PUT, PATCH (server-side
  apply) and DELETE, with defaulting, the validation we rely on, ``resourceVersion``, 409
  Conflict/AlreadyExists and 404 NotFound, each with a real ``Status`` body;
- every other resource the webhook reads or writes (workloads, namespaces, RBAC, EndpointSlices,
  PodDisruptionBudgets, PolicyReports): paginated lists, chunked watch streams, get, create,
  update and delete (``apiserver_store.py``).

The product reaches it only through a kubeconfig file or in-cluster files written by the
test. ``requests`` records what was asked and answered; ``interceptors`` let a test play a
concurrent writer or an overloaded server without touching the product. An interceptor's
reply may carry ``_raw`` (bytes sent as they are instead of a reply, then the connection is
closed) and ``_delay`` (seconds to wait first, outside the lock): a broken or hung server.

``python -m tests.apiserver`` runs it on its own, on 127.0.0.1:6443, with the users and workloads
the cluster examples in docs/cluster.md were captured with (``docs_cluster``), and writes
kubeconfig files for them: the docs' examples can be run by hand against it.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import json
import re
import signal
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.apiserver_store import RESOURCE_PATH, Dropped, Store, Watch
from tests.reviews import pod_spec, workload
from webhook.certs import ensure_certificates

GROUP = "admissionregistration.k8s.io"
KINDS = {"validatingwebhookconfigurations": "ValidatingWebhookConfiguration",
         "mutatingwebhookconfigurations": "MutatingWebhookConfiguration"}
SSAR = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
CONFIG_PATH = re.compile(rf"^/apis/{re.escape(GROUP)}/v1/(?P<plural>[a-z]+)(?:/(?P<name>[^/]+))?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
Reply = tuple[int, dict[str, Any]]


@dataclass(frozen=True)
class Rule:
    verbs: tuple[str, ...]
    resources: tuple[str, ...]  # "pods", "pods/ephemeralcontainers", "*"
    groups: tuple[str, ...] = ("*",)
    namespaces: tuple[str, ...] | None = None  # None: a ClusterRoleBinding; else RoleBindings there
    names: tuple[str, ...] = ()  # resourceNames
    binding: str = "webhook"
    deny: str = ""  # a deny from a webhook authorizer, with this reason


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    user: str
    status: int
    authorization: str  # the credential presented, so tests can see which token was used
    query: dict[str, str] = field(default_factory=dict)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    user: str = ""
    groups: tuple[str, ...] = ()


def write_kubeconfig(
    path: Path, server: str, user: dict[str, Any], *, ca_file: Path | None = None, namespace: str | None = None,
    context: str = "stand-in", cluster: dict[str, Any] | None = None, user_name: str = "tester",
) -> Path:
    """A kubeconfig as kubectl writes one: one cluster, one user, one context, made current."""
    cluster_body: dict[str, Any] = {"server": server, **(cluster or {})}
    if ca_file is not None:
        cluster_body["certificate-authority"] = str(ca_file)
    context_body = {"cluster": "stand-in", "user": user_name, **({"namespace": namespace} if namespace else {})}
    document = {"apiVersion": "v1", "kind": "Config", "current-context": context,
                "clusters": [{"name": "stand-in", "cluster": cluster_body}],
                "users": [{"name": user_name, "user": user}],
                "contexts": [{"name": context, "context": context_body}]}
    path.write_text(yaml.safe_dump(document))
    return path


def status(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> Reply:
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message, "reason": reason, "code": code}
    if details:
        body["details"] = details
    return code, body


@dataclass
class ApiServer:
    directory: Path
    tokens: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    rules: dict[str, list[Rule]] = field(default_factory=dict)
    objects: dict[str, dict[str, dict[str, Any]]] = field(default_factory=lambda: {p: {} for p in KINDS})
    requests: list[Seen] = field(default_factory=list)
    interceptors: list[Callable[[Request], Reply | None]] = field(default_factory=list)
    port: int = 0  # on 127.0.0.1; 0 lets the kernel choose

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        self._version = 1000
        self.store = Store(self)
        ensure_certificates(self.directory / "serving", "kubernetes", "default")
        self.ca_file = self.directory / "serving" / "ca.crt"
        self.client_ca_key = ec.generate_private_key(ec.SECP256R1())
        self.client_ca = _certificate("stand-in client CA", self.client_ca_key, None, ca=True)
        self.client_ca_file = self.directory / "client-ca.crt"
        self.client_ca_file.write_bytes(self.client_ca.public_bytes(serialization.Encoding.PEM))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.directory / "serving" / "tls.crt", self.directory / "serving" / "tls.key")
        context.load_verify_locations(self.client_ca_file)
        context.verify_mode = ssl.CERT_OPTIONAL
        self.httpd = _TLSServer(("127.0.0.1", self.port), _Handler, context, self)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), name="apiserver", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        self.store.stop()
        self.httpd.shutdown()
        self.httpd.server_close()

    def add_user(self, name: str, token: str | None = None, *rules: Rule, groups: tuple[str, ...] = ()) -> None:
        with self.lock:
            if token:
                self.tokens[token] = (name, groups)
            self.rules.setdefault(name, []).extend(rules)

    def client_certificate(self, name: str, groups: tuple[str, ...] = ()) -> tuple[bytes, bytes]:
        """A client certificate and key (PEM) for ``name``, as a cluster CA would sign them."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(name, key, (self.client_ca, self.client_ca_key), organizations=groups)
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return cert.public_bytes(serialization.Encoding.PEM), key_pem

    def lists(self, path: str) -> list[Seen]:
        """The list calls (not watches) made on one collection path, in order."""
        return [s for s in self.seen("GET") if s.path == path and s.query.get("watch") not in ("true", "1")]

    def watches(self, path: str) -> list[Seen]:
        return [s for s in self.seen("GET") if s.path == path and s.query.get("watch") in ("true", "1")]

    def seen(self, method: str | None = None) -> list[Seen]:
        with self.lock:
            return [s for s in self.requests if method is None or s.method == method]

    def writes(self) -> list[Seen]:
        return [s for s in self.seen() if s.method in ("POST", "PUT", "PATCH", "DELETE") and s.path != SSAR]

    def stored(self, plural: str, name: str) -> dict[str, Any] | None:
        with self.lock:
            found = self.objects[plural].get(name)
            return copy.deepcopy(found) if found else None

    # --- request handling -------------------------------------------------------------

    def handle(self, request: Request, peer: dict[str, Any] | None) -> Reply | Watch:
        with self.lock:
            reply = self._authenticate(request, peer) or self._intercept(request) or self._route(request)
            code = 200 if isinstance(reply, Watch) else reply[0]
            self.requests.append(Seen(request.method, request.path, request.user, code,
                                      request.headers.get("authorization", ""), dict(request.query)))
            return reply

    def _authenticate(self, request: Request, peer: dict[str, Any] | None) -> Reply | None:
        header = request.headers.get("authorization", "")
        if header.startswith("Bearer "):
            known = self.tokens.get(header.removeprefix("Bearer "))
            if known:
                request.user, request.groups = known
                return None
        elif peer:
            subject = dict(pair[0] for pair in peer.get("subject", ()))
            request.user = subject.get("commonName", "")
            request.groups = tuple(v for pair in peer["subject"] for k, v in pair if k == "organizationName")
            return None
        return status(401, "Unauthorized", "Unauthorized")

    def _intercept(self, request: Request) -> Reply | None:
        for interceptor in list(self.interceptors):
            reply = interceptor(request)
            if reply is not None:
                return reply
        return None

    def not_found(self) -> Reply:
        return status(404, "NotFound", "the server could not find the requested resource")

    def _route(self, request: Request) -> Reply | Watch:
        if request.path == SSAR and request.method == "POST":
            return self._access_review(request)
        match = CONFIG_PATH.match(request.path)
        if not match or match["plural"] not in KINDS:
            resource = RESOURCE_PATH.match(request.path)
            return self.store.route(request, resource) if resource else self.not_found()
        plural, name = match["plural"], match["name"] or ""
        verb = {"GET": "get" if name else "list", "POST": "create", "PUT": "update", "PATCH": "patch",
                "DELETE": "delete"}.get(request.method)
        if verb is None or (verb in ("create",) and name) or (verb in ("update", "patch", "delete") and not name):
            return status(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        refused = self._forbidden(request, verb, plural, name)
        if refused:
            return refused
        store = self.objects[plural]
        if verb == "list":
            return 200, {"kind": KINDS[plural] + "List", "apiVersion": f"{GROUP}/v1",
                         "metadata": {"resourceVersion": str(self._version)}, "items": list(store.values())}
        if verb == "create":
            return self._create(plural, _json(request.body))
        if name not in store and not (verb == "patch" and _is_apply(request)):
            return status(404, "NotFound", f'{plural}.{GROUP} "{name}" not found',
                          {"name": name, "group": GROUP, "kind": plural})
        if verb == "get":
            return 200, store[name]
        if verb == "delete":
            gone = store.pop(name)
            return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                         "details": {"name": name, "group": GROUP, "kind": plural, "uid": gone["metadata"]["uid"]}}
        if verb == "update":
            return self._update(plural, name, _json(request.body), require_version=True)
        return self._apply(request, plural, name)

    def _access_review(self, request: Request) -> Reply:
        review = _json(request.body)
        spec = review.get("spec") or {}
        attributes = spec.get("resourceAttributes")
        if attributes is None:
            path = (spec.get("nonResourceAttributes") or {}).get("path", "")
            allowed, denied, reason = False, False, f"no rule for the non-resource URL {path}"
        else:
            allowed, denied, reason = self.authorize(request.user, attributes)
        review["status"] = {"allowed": allowed}
        if denied:
            review["status"]["denied"] = True
        if reason:
            review["status"]["reason"] = reason
        review.setdefault("metadata", {})["creationTimestamp"] = None
        return 201, review

    def authorize(self, user: str, a: dict[str, Any]) -> tuple[bool, bool, str]:
        """Denies first (a webhook authorizer), then RBAC-like allows; no opinion means no."""
        resource = a.get("resource", "") + (f"/{a['subresource']}" if a.get("subresource") else "")
        namespace, name = a.get("namespace", ""), a.get("name", "")
        matching = [r for r in self.rules.get(user, [])
                    if (a.get("verb") in r.verbs or "*" in r.verbs)
                    and (a.get("group", "") in r.groups or "*" in r.groups)
                    and (resource in r.resources or "*" in r.resources)
                    and (r.namespaces is None or namespace in r.namespaces)
                    and (not r.names or name in r.names)]
        for rule in matching:
            if rule.deny:
                return False, True, rule.deny
        for rule in matching:
            if rule.namespaces is None:
                how = f'ClusterRoleBinding "{rule.binding}" of ClusterRole "{rule.binding}"'
            else:
                how = f'RoleBinding "{rule.binding}/{namespace}" of Role "{rule.binding}"'
            return True, False, f'RBAC: allowed by {how} to User "{user}"'
        return False, False, ""

    def _forbidden(self, request: Request, verb: str, plural: str, name: str) -> Reply | None:
        if self.authorize(request.user, {"verb": verb, "group": GROUP, "resource": plural, "name": name})[0]:
            return None
        target = f'{plural}.{GROUP} "{name}"' if name else f"{plural}.{GROUP}"
        return status(403, "Forbidden", f'{target} is forbidden: User "{request.user}" cannot {verb} resource '
                      f'"{plural}" in API group "{GROUP}" at the cluster scope',
                      {"name": name, "group": GROUP, "kind": plural} if name else {"group": GROUP, "kind": plural})

    def _create(self, plural: str, body: dict[str, Any]) -> Reply:
        name = (body.get("metadata") or {}).get("name", "")
        problem = self._invalid(plural, body)
        if problem:
            return problem
        if name in self.objects[plural]:
            return status(409, "AlreadyExists", f'{plural}.{GROUP} "{name}" already exists',
                          {"name": name, "group": GROUP, "kind": plural})
        stored = _defaulted(plural, body)
        stored["metadata"].update(uid=str(uuid.uuid4()), resourceVersion=self._next_version(), generation=1,
                                  creationTimestamp=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        self.objects[plural][name] = stored
        return 201, stored

    def _update(self, plural: str, name: str, body: dict[str, Any], *, require_version: bool) -> Reply:
        current = self.objects[plural][name]
        metadata = body.get("metadata") or {}
        if metadata.get("name") != name:
            return status(400, "BadRequest", f"the name of the object ({metadata.get('name')}) does not match "
                          f"the name on the URL ({name})")
        version = metadata.get("resourceVersion")
        if require_version and not version:
            return self._invalid_reply(plural, name, "metadata.resourceVersion",
                                       "Invalid value: 0x0: must be specified for an update")
        if version and version != current["metadata"]["resourceVersion"]:
            return status(409, "Conflict", f'Operation cannot be fulfilled on {plural}.{GROUP} "{name}": the object '
                          "has been modified; please apply your changes to the latest version and try again",
                          {"name": name, "group": GROUP, "kind": plural})
        problem = self._invalid(plural, body)
        if problem:
            return problem
        updated = _defaulted(plural, body)
        for key in ("uid", "creationTimestamp", "generation", "resourceVersion"):
            updated["metadata"][key] = current["metadata"][key]
        if updated == current:  # a no-op update writes nothing, so resourceVersion stays
            return 200, current
        if updated.get("webhooks") != current.get("webhooks"):
            updated["metadata"]["generation"] = current["metadata"]["generation"] + 1
        updated["metadata"]["resourceVersion"] = self._next_version()
        self.objects[plural][name] = updated
        return 200, updated

    def _apply(self, request: Request, plural: str, name: str) -> Reply:
        if not _is_apply(request):
            return status(415, "UnsupportedMediaType", "the body of the request was in an unknown format - accepted "
                          "media types include: application/json-patch+json, application/merge-patch+json, "
                          "application/apply-patch+yaml")
        if not request.query.get("fieldManager"):
            return self._invalid_reply(plural, name, "fieldManager", "Required value: is required for apply patch")
        applied = yaml.safe_load(request.body) or {}
        current = self.objects[plural].get(name)
        if current is None:
            refused = self._forbidden(request, "create", plural, name)
            return refused or self._create(plural, applied)
        merged = copy.deepcopy(current)
        for key in ("labels", "annotations"):
            if key in (applied.get("metadata") or {}):
                merged["metadata"][key] = {**merged["metadata"].get(key, {}), **applied["metadata"][key]}
        if "resourceVersion" in (applied.get("metadata") or {}):
            merged["metadata"]["resourceVersion"] = applied["metadata"]["resourceVersion"]
        before = {w["name"]: w for w in current.get("webhooks", [])}
        merged["webhooks"] = [_deep_merge(copy.deepcopy(before.get(w.get("name"), {})), w)
                              for w in applied.get("webhooks", [])]
        return self._update(plural, name, merged, require_version=False)

    def _invalid(self, plural: str, body: dict[str, Any]) -> Reply | None:
        name = (body.get("metadata") or {}).get("name", "")
        if body.get("kind") != KINDS[plural] or body.get("apiVersion") != f"{GROUP}/v1":
            return status(400, "BadRequest", f"the object is a {body.get('kind')} of {body.get('apiVersion')}, "
                          f"not a {KINDS[plural]} of {GROUP}/v1")
        if not name:
            return self._invalid_reply(plural, name, "metadata.name",
                                       "Required value: name or generateName is required")
        names: set[str] = set()
        for index, hook in enumerate(body.get("webhooks") or []):
            at = f"webhooks[{index}]"
            hook_name = hook.get("name", "")
            if len(hook_name.split(".")) < 3 or not all(DNS_LABEL.match(p) for p in hook_name.split(".")):
                return self._invalid_reply(plural, name, f"{at}.name", f'Invalid value: "{hook_name}": should be '
                                           "a domain with at least three segments separated by dots")
            if hook_name in names:
                return self._invalid_reply(plural, name, f"{at}.name", f'Duplicate value: "{hook_name}"')
            names.add(hook_name)
            client = hook.get("clientConfig") or {}
            if ("url" in client) == ("service" in client):
                return self._invalid_reply(plural, name, f"{at}.clientConfig",
                                           "Required value: exactly one of url or service is required")
            path = (client.get("service") or {}).get("path", "/")
            if any(not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", s) for s in path.split("/")[1:] if path != "/"):
                return self._invalid_reply(plural, name, f"{at}.clientConfig.service.path",
                                           f'Invalid value: "{path}": segment must be a DNS subdomain')
            if hook.get("sideEffects") not in ("None", "NoneOnDryRun"):
                return self._invalid_reply(plural, name, f"{at}.sideEffects",
                                           'Unsupported value: must be one of "None", "NoneOnDryRun"')
            versions = hook.get("admissionReviewVersions") or []
            if not {"v1", "v1beta1"} & set(versions):
                return self._invalid_reply(plural, name, f"{at}.admissionReviewVersions",
                                           "Required value: must include at least one of v1, v1beta1")
            if not 1 <= hook.get("timeoutSeconds", 10) <= 30:
                return self._invalid_reply(plural, name, f"{at}.timeoutSeconds",
                                           "Invalid value: the timeout value must be between 1 and 30 seconds")
        return None

    def _invalid_reply(self, plural: str, name: str, path: str, problem: str) -> Reply:
        return status(422, "Invalid", f'{KINDS[plural]}.{GROUP} "{name}" is invalid: {path}: {problem}',
                      {"name": name, "group": GROUP, "kind": KINDS[plural],
                       "causes": [{"reason": "FieldValueInvalid", "message": problem, "field": path}]})

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)


def _defaulted(plural: str, body: dict[str, Any]) -> dict[str, Any]:
    """What the API server stores: the object with its defaults filled in."""
    stored = copy.deepcopy(body)
    stored["metadata"] = {k: v for k, v in (stored.get("metadata") or {}).items()
                          if k in ("name", "labels", "annotations", "resourceVersion", "uid",
                                   "creationTimestamp", "generation")}
    for hook in stored.get("webhooks") or []:
        hook.setdefault("failurePolicy", "Fail")
        hook.setdefault("matchPolicy", "Equivalent")
        hook.setdefault("namespaceSelector", {})
        hook.setdefault("objectSelector", {})
        hook.setdefault("timeoutSeconds", 10)
        if plural == "mutatingwebhookconfigurations":
            hook.setdefault("reinvocationPolicy", "Never")
        for rule in hook.get("rules") or []:
            rule.setdefault("scope", "*")
        service = (hook.get("clientConfig") or {}).get("service")
        if service is not None:
            service.setdefault("port", 443)
    return stored


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    for key, value in top.items():
        base[key] = _deep_merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) \
            else copy.deepcopy(value)
    return base


def _json(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _is_apply(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip() == "application/apply-patch+yaml"


def _certificate(
    common_name: str, key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None, *, ca: bool = False,
    organizations: tuple[str, ...] = (),
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                         *(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations)])
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer[0].subject if issuer else subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


class _TLSServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 context: ssl.SSLContext, api: ApiServer) -> None:
        super().__init__(address, handler)
        self.context = context
        self.api = api

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Handshake in the connection's own thread, so one slow client never stalls accept()."""
        request.settimeout(10)
        try:
            connection = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            self.RequestHandlerClass(connection, client_address, self)
        finally:
            connection.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    server: _TLSServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        request = Request(self.command, parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()},
                          {k.lower(): v for k, v in self.headers.items()}, body)
        reply = self.server.api.handle(request, self.connection.getpeercert())
        if isinstance(reply, Watch):
            self._stream(reply)
            return
        code, document = reply
        if "_raw" in document:  # a broken server, played by a test: wait, send these bytes, hang up
            time.sleep(document.get("_delay", 0))
            with contextlib.suppress(OSError):  # the client may have given up meanwhile
                self.wfile.write(document["_raw"])
            self.close_connection = True
            return
        payload = json.dumps({k: v for k, v in document.items() if k != "_headers"}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (document.get("_headers") or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    def _stream(self, watch: Watch) -> None:
        """One JSON event per chunk, as kube-apiserver writes a watch; a drop cuts the connection."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for event in watch.events():
                data = json.dumps(event).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.write(b"0\r\n\r\n")
        except (Dropped, OSError):
            self.close_connection = True  # no final chunk: the client sees the body end early
        # A watch that ends cleanly leaves the connection open for the next request, as
        # kube-apiserver does; closing it unannounced races a client that reuses it.

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


# Everything the webhook's features need, as one ClusterRole would grant it.
WEBHOOK_RULES = (
    Rule(("get", "create", "update", "patch", "delete", "list"),
         ("validatingwebhookconfigurations", "mutatingwebhookconfigurations"), (GROUP,), binding="admission-webhook"),
    Rule(("list", "watch"), ("pods", "podtemplates", "replicationcontrollers"), ("",), binding="admission-webhook"),
    Rule(("list", "watch"), ("deployments", "replicasets", "statefulsets", "daemonsets"), ("apps",),
         binding="admission-webhook"),
    Rule(("list", "watch"), ("jobs", "cronjobs"), ("batch",), binding="admission-webhook"),
    Rule(("list", "watch"), ("namespaces",), ("",), binding="admission-webhook"),
    Rule(("get", "list", "create", "update", "delete"), ("policyreports",), ("wgpolicyk8s.io",),
         binding="admission-webhook"),
    # doctor's reads
    Rule(("list",), ("nodes",), ("",), binding="admission-webhook"),
    Rule(("get",), ("secrets", "configmaps"), ("",), binding="admission-webhook"),
    Rule(("list",), ("clusterroles", "clusterrolebindings", "roles", "rolebindings"), ("rbac.authorization.k8s.io",),
         binding="admission-webhook"),
    Rule(("list",), ("endpointslices",), ("discovery.k8s.io",), binding="admission-webhook"),
    Rule(("list",), ("poddisruptionbudgets",), ("policy",), binding="admission-webhook"),
)


def without(rules: tuple[Rule, ...], verb: str, resource: str) -> tuple[Rule, ...]:
    """``rules`` less one verb on one resource: the shape of a ClusterRole with one line missing."""
    result = []
    for rule in rules:
        if resource in rule.resources and verb in rule.verbs:
            others = tuple(r for r in rule.resources if r != resource)
            if others:
                result.append(Rule(rule.verbs, others, rule.groups, rule.namespaces, rule.names, rule.binding))
            rest = tuple(v for v in rule.verbs if v != verb)
            if rest:
                result.append(Rule(rest, (resource,), rule.groups, rule.namespaces, rule.names, rule.binding))
        else:
            result.append(rule)
    return tuple(result)


# --- the cluster of the docs' examples, and `python -m tests.apiserver` -------------------------

# What user "ci" may do: read the webhook configurations, and list and watch every workload kind
# but CronJobs. Enough to show a refused `register` and a refused `audit`.
CI_RULES = (
    Rule(("get", "list"), ("validatingwebhookconfigurations", "mutatingwebhookconfigurations"), (GROUP,),
         binding="ci"),
    Rule(("list", "watch"), ("pods", "podtemplates", "replicationcontrollers"), ("",), binding="ci"),
    Rule(("list", "watch"), ("deployments", "replicasets", "statefulsets", "daemonsets"), ("apps",), binding="ci"),
    Rule(("list", "watch"), ("jobs",), ("batch",), binding="ci"),
)
DOCS_WORKLOADS = [  # (resource, kind, namespace, name, image)
    ("deployments.apps", "Deployment", "shop", "web", "nginx:1.27"),
    ("deployments.apps", "Deployment", "shop", "legacy", "registry.example.com/legacy/app:2.1"),
    ("replicasets.apps", "ReplicaSet", "shop", "legacy-7d9f8", "registry.example.com/legacy/app:2.1"),
    ("pods", "Pod", "shop", "legacy-7d9f8-x2x4q", "registry.example.com/legacy/app:2.1"),
    ("pods", "Pod", "kube-system", "kube-proxy-q8m2d", "registry.k8s.io/kube-proxy:v1.31.0"),
    ("daemonsets.apps", "DaemonSet", "kube-system", "node-agent", "evil.io/agent:3"),  # exempt
    ("cronjobs.batch", "CronJob", "ops", "backup", "docker.io/bitnami/kubectl:1.31"),
]
UNREACHABLE = "https://127.0.0.1:1"  # nothing listens on port 1: a connection is refused at once


def docs_cluster(directory: Path, port: int = 0, *, installed: bool = False) -> ApiServer:
    """The stand-in as docs/cluster.md's examples meet it, with its kubeconfig files in ``directory``:

    - ``kubeconfig``: user ``jane``, who has every permission the webhook's features need;
    - ``ci.kubeconfig``: user ``ci`` (``CI_RULES``), who lacks some;
    - ``down.kubeconfig``: a cluster that cannot be reached.

    The workloads of ``DOCS_WORKLOADS`` are stored; no webhook configuration exists yet. With
    ``installed``, it holds instead a healthy installation of the webhook (``tests/apiserver_installed.py``),
    for the ``doctor`` examples.
    """
    directory = directory.resolve()  # the kubeconfig files name the CA by an absolute path
    server = ApiServer(directory, port=port)
    server.add_user("jane", "jane-token", *WEBHOOK_RULES)
    server.add_user("ci", "ci-token", *CI_RULES)
    if installed:
        from tests.apiserver_installed import install  # noqa: PLC0415 - it imports this module

        install(server, directory)
    for resource, kind, namespace, name, image in () if installed else DOCS_WORKLOADS:
        server.store.put(resource, workload(kind, pod_spec(image), name=name, namespace=namespace))
    write_kubeconfig(directory / "kubeconfig", server.url, {"token": "jane-token"}, ca_file=server.ca_file,
                     user_name="jane")
    write_kubeconfig(directory / "ci.kubeconfig", server.url, {"token": "ci-token"}, ca_file=server.ca_file,
                     context="ci", user_name="ci")
    write_kubeconfig(directory / "down.kubeconfig", UNREACHABLE, {"token": "jane-token"}, ca_file=server.ca_file,
                     context="down", user_name="jane")
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.apiserver",
        description="Run the stand-in API server the tests use, with the users and workloads of the docs' "
        "cluster examples, until interrupted. It writes kubeconfig, ci.kubeconfig and down.kubeconfig in --dir.",
    )
    parser.add_argument("--dir", type=Path, default=Path("stand-in"),
                        help="where its certificates and kubeconfig files go (default: %(default)s)")
    parser.add_argument("--port", type=int, default=6443, help="port on 127.0.0.1; 0 for any (default: %(default)s)")
    parser.add_argument("--installed", action="store_true",
                        help="hold a healthy installation of the webhook instead of the audit examples' workloads")
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    try:
        server = docs_cluster(args.dir, args.port, installed=args.installed)
    except OSError as exc:
        print(f"python -m tests.apiserver: cannot listen on 127.0.0.1:{args.port}: {exc.strerror}; "
              "choose another --port", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(sig: int, frame: object) -> None:
        # The main thread may be inside stop.wait(), holding the event's lock: set it from another thread.
        threading.Thread(target=stop.set, daemon=True).start()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    kubeconfig = args.dir / "kubeconfig"
    shown = str(kubeconfig) if kubeconfig.is_absolute() else f"$PWD/{kubeconfig}"  # to paste, here
    print(f"stand-in API server at {server.url}; Ctrl-C stops it\n"
          f"export KUBECONFIG={shown}    # user jane, with every permission the webhook needs\n"
          f"{args.dir / 'ci.kubeconfig'}: user ci, who lacks some; "
          f"{args.dir / 'down.kubeconfig'}: a cluster that cannot be reached", flush=True)
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
