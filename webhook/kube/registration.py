"""The two webhook configurations, built by one pure function.

``register`` applies them, ``register --dry-run`` prints them, and the checked-in manifests
are generated from that output, so there is one source of truth. The settings follow the
API server's rules and the official guidance: names of at least three DNS segments,
``kube-system`` and our own namespace excluded by ``kubernetes.io/metadata.name``,
``sideEffects: None``, a short timeout, validation failing closed and mutation failing open.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from cryptography import x509

from webhook.kube.config import ConfigError
from webhook.policy.model import Policy
from webhook.settings import DEFAULT_SERVICE

API_VERSION = "admissionregistration.k8s.io/v1"
VALIDATE_PATH = "/validate"
MUTATE_PATH = "/mutate"
WEBHOOK_DOMAIN = "sealyun.com"
FAILURE_POLICIES = ("Fail", "Ignore")
NAMESPACE_LABEL = "kubernetes.io/metadata.name"
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class RegistrationError(ConfigError):
    """Options that would make a configuration the API server refuses, or no CA to publish."""


@dataclass(frozen=True, slots=True)
class RuleTarget:
    """Resources in one API group that a webhook is called for."""

    group: str
    versions: tuple[str, ...]
    resources: tuple[str, ...]


# Pods (with the subresource `kubectl debug` writes) and every kind with a pod template.
WORKLOAD_TARGETS = (
    RuleTarget("", ("v1",), ("pods", "pods/ephemeralcontainers", "podtemplates", "replicationcontrollers")),
    RuleTarget("apps", ("v1",), ("deployments", "replicasets", "statefulsets", "daemonsets")),
    RuleTarget("batch", ("v1",), ("jobs", "cronjobs")),
)
# The custom resources the embedded default policy defaults; `policy_targets` derives them.
DEFAULT_CUSTOM_RESOURCES = (RuleTarget("example.sealyun.com", ("*",), ("projects",)),)


@dataclass(frozen=True, slots=True)
class RegistrationOptions:
    name: str = DEFAULT_SERVICE  # metadata.name of both configurations
    service_name: str = DEFAULT_SERVICE
    service_namespace: str = DEFAULT_SERVICE
    service_port: int = 443  # the Service's port, which kube-proxy maps to the pod's 8443
    url: str | None = None  # a base URL outside the cluster, instead of the Service
    validating_failure_policy: str = "Fail"
    mutating_failure_policy: str = "Ignore"
    timeout_seconds: int = 5
    exclude_namespaces: tuple[str, ...] = ()  # besides kube-system and the service's namespace
    custom_resources: tuple[RuleTarget, ...] = DEFAULT_CUSTOM_RESOURCES

    @property
    def validating_webhook(self) -> str:
        return f"validate.{self.name}.{WEBHOOK_DOMAIN}"

    @property
    def mutating_webhook(self) -> str:
        return f"mutate.{self.name}.{WEBHOOK_DOMAIN}"


def policy_targets(policy: Policy) -> tuple[RuleTarget, ...]:
    """Mutating rules for the kinds the policy's ``defaults`` name, beyond the workload kinds
    the mutating webhook covers anyway (for image rewriting)."""
    covered = {(target.group, resource) for target in WORKLOAD_TARGETS for resource in target.resources}
    targets: list[RuleTarget] = []
    for rule in policy.defaults.rules:
        versions = ("*",) if "*" in rule.versions else tuple(sorted(rule.versions))
        resources = tuple(r for r in sorted({plural(kind) for kind in rule.kinds}) if (rule.group, r) not in covered)
        if resources:
            targets.append(RuleTarget(rule.group, versions, resources))
    return tuple(targets)


def plural(kind: str) -> str:
    """The resource name that CRD tooling derives from a kind: lower case, English plural."""
    word = kind.lower()
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def build_configurations(options: RegistrationOptions, ca_bundle: bytes | None) -> list[dict[str, Any]]:
    """The ValidatingWebhookConfiguration and the MutatingWebhookConfiguration, in that order.

    ``ca_bundle`` is the PEM the API server trusts for our serving certificate; None leaves
    ``caBundle`` out, for a CA injector or a ``--url`` with a publicly trusted certificate.
    """
    check_options(options)
    validating = _webhook(options, options.validating_webhook, VALIDATE_PATH, ca_bundle,
                          targets=WORKLOAD_TARGETS, failure_policy=options.validating_failure_policy)
    mutating = _webhook(options, options.mutating_webhook, MUTATE_PATH, ca_bundle,
                        targets=WORKLOAD_TARGETS + options.custom_resources,
                        failure_policy=options.mutating_failure_policy)
    # Defaulting may add fields another mutating webhook would react to, and the reverse.
    mutating["reinvocationPolicy"] = "IfNeeded"
    return [
        _configuration("ValidatingWebhookConfiguration", options.name, validating),
        _configuration("MutatingWebhookConfiguration", options.name, mutating),
    ]


def check_options(options: RegistrationOptions) -> RegistrationOptions:
    """Refuse here what the API server would refuse on create, with a message naming the flag."""
    if not _is_subdomain(options.name):
        raise RegistrationError(f"--name {options.name!r} must be a lowercase DNS subdomain")
    for webhook in (options.validating_webhook, options.mutating_webhook):
        if not _is_subdomain(webhook) or webhook.count(".") < 2 or len(webhook) > 253:
            raise RegistrationError(f"webhook name {webhook!r} must be a DNS subdomain of at least three segments")
    for policy in (options.validating_failure_policy, options.mutating_failure_policy):
        if policy not in FAILURE_POLICIES:
            raise RegistrationError(f"failure policy {policy!r} must be Fail or Ignore")
    if not 1 <= options.timeout_seconds <= 30:
        raise RegistrationError(f"--timeout-seconds {options.timeout_seconds} must be between 1 and 30")
    if options.url is None:
        if not 1 <= options.service_port <= 65535:
            raise RegistrationError(f"--service-port {options.service_port} is not a TCP port")
        for label, value in (("--service-name", options.service_name),
                             ("--service-namespace", options.service_namespace)):
            if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", value) or len(value) > 63:
                raise RegistrationError(f"{label} {value!r} must be a DNS label (lowercase, digits, '-')")
    else:
        _check_url(options.url)
    for target in options.custom_resources:
        if not target.versions or not target.resources:
            raise RegistrationError(f"custom resources of group {target.group!r} need versions and resources")
    return options


def read_ca_bundle(path: Path) -> bytes:
    """The CA file's PEM, refused unless it holds at least one certificate."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RegistrationError(f"CA file {path} cannot be read: {exc.strerror or exc} "
                                "(run `webhook certs`, or pass --ca-file FILE)") from None
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError:
        raise RegistrationError(f"CA file {path} holds no PEM certificate") from None
    return data


def to_yaml(configurations: list[dict[str, Any]]) -> str:
    """What ``register --dry-run`` prints: one YAML document per configuration."""
    return "".join(
        "---\n" + yaml.safe_dump(document, sort_keys=False, width=1 << 16) for document in configurations
    )


def _configuration(kind: str, name: str, webhook: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/name": DEFAULT_SERVICE, "app.kubernetes.io/managed-by": "webhook-register"},
        },
        "webhooks": [webhook],
    }


def _webhook(
    options: RegistrationOptions, name: str, path: str, ca_bundle: bytes | None, *,
    targets: tuple[RuleTarget, ...], failure_policy: str,
) -> dict[str, Any]:
    client_config: dict[str, Any]
    if options.url is not None:
        client_config = {"url": options.url.rstrip("/") + path}
    else:
        client_config = {"service": {"name": options.service_name, "namespace": options.service_namespace,
                                     "path": path, "port": options.service_port}}
    if ca_bundle is not None:
        client_config["caBundle"] = base64.b64encode(ca_bundle).decode("ascii")
    excluded = list(dict.fromkeys(("kube-system", options.service_namespace, *options.exclude_namespaces)))
    return {
        "name": name,
        "clientConfig": client_config,
        "rules": [
            {"apiGroups": [t.group], "apiVersions": list(t.versions), "operations": ["CREATE", "UPDATE"],
             "resources": list(t.resources)}
            for t in targets
        ],
        "namespaceSelector": {"matchExpressions": [{"key": NAMESPACE_LABEL, "operator": "NotIn", "values": excluded}]},
        "failurePolicy": failure_policy,
        "matchPolicy": "Equivalent",
        "sideEffects": "None",
        "timeoutSeconds": options.timeout_seconds,
        "admissionReviewVersions": ["v1", "v1beta1"],
    }


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise RegistrationError(f"--url {url!r} must be https://host[:port][/path]")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise RegistrationError(f"--url {url!r} must not carry user info, a query or a fragment")


def _is_subdomain(text: str) -> bool:
    return len(text) <= 253 and _DNS1123_SUBDOMAIN.fullmatch(text) is not None
