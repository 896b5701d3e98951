"""Our two webhook configurations, as they are live: the gaps that no engine test can see.

Each was a real bypass at a peer: a configuration deleted, a caBundle edited, rules without
``pods/ephemeralcontainers`` (``kubectl debug`` went unchecked), ``failurePolicy: Ignore``.
What ``register`` would write (``build_configurations``) is the reference, so the fix for
almost every finding is to run ``register`` again with the same flags.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from typing import Any

import orjson
from cryptography import x509

from webhook.kube.access import ADMISSION_GROUP, Permission
from webhook.kube.apply import contains
from webhook.kube.doctor.findings import CannotCheck, Cluster, Report, Settings, Severity
from webhook.kube.registration import (
    API_VERSION,
    WORKLOAD_TARGETS,
    RegistrationOptions,
    RuleTarget,
    build_configurations,
)
from webhook.pki import CertificateError, chains_to, parse_certificates

KINDS = {"validating": "validatingwebhookconfigurations", "mutating": "mutatingwebhookconfigurations"}
REGISTER = "webhook register (with the flags given to doctor)"


def live_configuration(cluster: Cluster, settings: Settings, which: str) -> dict[str, Any] | None:
    """Our configuration as the API server holds it; raises CannotCheck without ``get``."""
    plural, name = KINDS[which], settings.options.name
    return cluster.get(f"/apis/{API_VERSION}/{plural}/{name}", Permission("get", plural, ADMISSION_GROUP, name=name))


def live_webhook(cluster: Cluster, settings: Settings, which: str) -> dict[str, Any] | None:
    """Our webhook (``validate.NAME.sealyun.com``) in our configuration, or None."""
    configuration = live_configuration(cluster, settings, which)
    wanted = settings.options.validating_webhook if which == "validating" else settings.options.mutating_webhook
    hooks = (configuration or {}).get("webhooks") or []
    return next((hook for hook in hooks if isinstance(hook, dict) and hook.get("name") == wanted), None)


def check(cluster: Cluster, settings: Settings, report: Report) -> None:
    """Every check of both configurations, validating first."""
    desired = dict(zip(KINDS, build_configurations(settings.options, None), strict=True))
    for which, plural in KINDS.items():
        try:
            configuration = live_configuration(cluster, settings, which)
        except CannotCheck as exc:
            report.cannot(f"{which}.exists", exc)
            continue
        severity: Severity = "error" if which == "validating" else "warning"
        what = f"{plural}.{ADMISSION_GROUP}/{settings.options.name}"
        if configuration is None:
            effect = "no image is checked" if which == "validating" else "no defaults or registry rewrites are applied"
            report.add(f"{which}.exists", severity, f"{what} does not exist: {effect}", REGISTER)
            continue
        hook = live_webhook(cluster, settings, which)
        wanted = desired[which]["webhooks"][0]
        if hook is None:
            report.add(f"{which}.exists", severity, f"{what} has no webhook named {wanted['name']}", REGISTER)
            continue
        report.ok(f"{which}.exists")
        _ca_bundle(cluster, settings, report, which, hook)
        targets = WORKLOAD_TARGETS if which == "validating" else WORKLOAD_TARGETS + settings.options.custom_resources
        _rules(report, which, hook, targets)
        _settings(report, settings, which, hook)
        _drift(report, which, configuration, wanted)


def _ca_bundle(cluster: Cluster, settings: Settings, report: Report, which: str, hook: dict[str, Any]) -> None:
    name = f"{which}.ca-bundle"
    client_config = hook.get("clientConfig") or {}
    bundle = client_config.get("caBundle")
    if not bundle:
        if "url" in client_config:
            report.ok(name)  # a URL with no caBundle is verified against the API server's system roots
            return
        report.add(name, "error", f"{hook['name']} has no caBundle: the API server cannot verify the serving "
                   "certificate, so every call fails (failurePolicy decides)", REGISTER)
        return
    try:
        serving = settings.cert_pem if settings.cert_pem is not None else _secret_certificate(cluster, settings)
    except CannotCheck as exc:
        report.cannot(name, exc)
        return
    if serving is None:
        report.add(name, "warning", f"could not check: Secret {settings.options.service_namespace}/"
                   f"{settings.tls_secret} (the serving certificate the pods mount) does not exist",
                   "pass --cert-dir DIR with the serving certificate, or --tls-secret NAME")
        return
    try:
        leaf, *intermediates = parse_certificates(serving, "the serving certificate")
        anchors = parse_certificates(base64.b64decode(bundle, validate=True), f"the caBundle of {hook['name']}")
    except (CertificateError, binascii.Error, ValueError) as exc:
        report.add(name, "error", f"{hook['name']}: {exc}", REGISTER)
        return
    now = dt.datetime.now(dt.UTC)
    if not chains_to(leaf, intermediates, anchors, now):
        report.add(name, "error", f"the caBundle of {hook['name']} does not verify the serving certificate: the "
                   "API server refuses the TLS handshake, so every call fails (failurePolicy decides)",
                   f"{REGISTER}, or restore the caBundle from the CA that signed the serving certificate")
    elif not leaf.not_valid_before_utc <= now < leaf.not_valid_after_utc:
        report.add(name, "error", f"the serving certificate is outside its validity period (notAfter "
                   f"{leaf.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ})", "webhook certs (or let cert-manager renew it)")
    elif "service" in client_config and not _names_host(leaf, settings.options):
        host = f"{settings.options.service_name}.{settings.options.service_namespace}.svc"
        report.add(name, "error", f"the serving certificate does not name {host}, which the API server verifies",
                   f"webhook certs --service-name {settings.options.service_name} --service-namespace "
                   f"{settings.options.service_namespace}")
    else:
        report.ok(name)


def _secret_certificate(cluster: Cluster, settings: Settings) -> bytes | None:
    namespace, name = settings.options.service_namespace, settings.tls_secret
    secret = cluster.get(f"/api/v1/namespaces/{namespace}/secrets/{name}",
                         Permission("get", "secrets", "", namespace=namespace, name=name))
    if secret is None:
        return None
    data = (secret.get("data") or {}).get("tls.crt") or ""
    try:
        return base64.b64decode(data)
    except (binascii.Error, ValueError):
        return b""


def _names_host(leaf: x509.Certificate, options: RegistrationOptions) -> bool:
    host = f"{options.service_name}.{options.service_namespace}.svc"
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return host in names.get_values_for_type(x509.DNSName)


def covers(rules: list[dict[str, Any]], group: str, version: str, resource: str, operation: str) -> bool:
    """Does a rule send this request to the webhook? (The API server's rule matching.)"""
    main, _, sub = resource.partition("/")
    for rule in rules:
        fields = [rule.get(k) or [] for k in ("operations", "apiGroups", "apiVersions", "resources")]
        operations, groups, versions, resources = fields
        if not (operation in operations or "*" in operations) or not (group in groups or "*" in groups):
            continue
        if not (version in versions or "*" in versions) or rule.get("scope", "*") not in ("*", "Namespaced"):
            continue
        wanted = {resource, "*/*", f"{main}/*", f"*/{sub}"} if sub else {resource, "*", "*/*"}
        if wanted & set(resources):
            return True
    return False


def _rules(report: Report, which: str, hook: dict[str, Any], targets: tuple[RuleTarget, ...]) -> None:
    rules = [r for r in hook.get("rules") or [] if isinstance(r, dict)]
    gaps = [f"{resource}{'.' + t.group if t.group else ''} {operation}"
            for t in targets for version in t.versions for resource in t.resources for operation in ("CREATE", "UPDATE")
            if not covers(rules, t.group, version, resource, operation)]
    if not gaps:
        report.ok(f"{which}.rules")
        return
    debug = " (kubectl debug goes unchecked)" if any(g.startswith("pods/ephemeralcontainers") for g in gaps) else ""
    report.add(f"{which}.rules", "error" if which == "validating" else "warning",
               f"the rules of {hook['name']} do not cover {', '.join(gaps)}{debug}", REGISTER)


def _settings(report: Report, settings: Settings, which: str, hook: dict[str, Any]) -> None:
    name = hook["name"]
    if hook.get("matchPolicy", "Equivalent") != "Equivalent":
        report.add(f"{which}.match-policy", "warning", f"{name} has matchPolicy {hook['matchPolicy']}: a request "
                   "through another version or group of a covered resource is not sent to it", REGISTER)
    else:
        report.ok(f"{which}.match-policy")
    if which == "validating":
        if hook.get("failurePolicy", "Fail") != "Fail":
            report.add("validating.failure-policy", "error", f"{name} has failurePolicy {hook['failurePolicy']}: "
                       "whenever the webhook cannot be called (down, slow, bad certificate), every image is admitted",
                       f"{REGISTER}, without --validating-failure-policy Ignore")
        else:
            report.ok("validating.failure-policy")
    timeout = hook.get("timeoutSeconds", 10)
    if not isinstance(timeout, int) or timeout <= settings.eval_timeout:
        report.add(f"{which}.timeout", "warning", f"{name} has timeoutSeconds {timeout}, not above the evaluation "
                   f"deadline of {settings.eval_timeout:g} s (serve --eval-timeout): the API server gives up before "
                   "a slow review is answered, and failurePolicy decides", f"{REGISTER} --timeout-seconds "
                   f"{int(settings.eval_timeout) + 3}, or serve with a shorter --eval-timeout")
    else:
        report.ok(f"{which}.timeout")
    versions = [v for v in hook.get("admissionReviewVersions") or [] if v in ("v1", "v1beta1")]
    problems = []
    if hook.get("sideEffects") not in ("None", "NoneOnDryRun"):
        problems.append(f"sideEffects {hook.get('sideEffects')} (we have none: None)")
    if not versions:
        problems.append(f"admissionReviewVersions {hook.get('admissionReviewVersions')} (we serve v1 and v1beta1)")
    if problems:
        report.add(f"{which}.protocol", "error", f"{name} has {' and '.join(problems)}: dry-run requests, or every "
                   "request, fail to call it", REGISTER)
    else:
        report.ok(f"{which}.protocol")


def _drift(report: Report, which: str, configuration: dict[str, Any], wanted: dict[str, Any]) -> None:
    hooks = [h for h in configuration.get("webhooks") or [] if isinstance(h, dict)]
    live = next(h for h in hooks if h.get("name") == wanted["name"])
    ours = {k: v for k, v in live.items()}
    ours["clientConfig"] = {k: v for k, v in (live.get("clientConfig") or {}).items() if k != "caBundle"}
    differences = [f"{path} is {_short(have)}, register writes {_short(want)}"
                   for path, have, want in _differences(ours, wanted, "")]
    others = [str(h.get("name")) for h in hooks if h.get("name") != wanted["name"]]
    if others:
        differences.append(f"other webhooks in it: {', '.join(others)}, which register removes")
    if differences:
        report.add(f"{which}.drift", "warning", f"{configuration['kind']} {configuration['metadata']['name']} "
                   f"differs from what register writes: {'; '.join(differences)}", REGISTER)
    else:
        report.ok(f"{which}.drift")


def _differences(live: Any, wanted: Any, path: str) -> list[tuple[str, Any, Any]]:
    """(path, live value, our value) of each field where ``live`` lacks ours; defaults it has are fine."""
    if contains(live, wanted):
        return []
    if isinstance(wanted, dict) and isinstance(live, dict):
        return [d for key, value in wanted.items()
                for d in _differences(live.get(key), value, f"{path}.{key}" if path else key)]
    if isinstance(wanted, list) and isinstance(live, list) and len(live) == len(wanted):
        return [d for index, (have, want) in enumerate(zip(live, wanted, strict=True))
                for d in _differences(have, want, f"{path}[{index}]")]
    return [(path, live, wanted)]


def _short(value: Any, limit: int = 120) -> str:
    text = "absent" if value is None else orjson.dumps(value).decode() if not isinstance(value, str) else value
    return text if len(text) <= limit else text[:limit - 1] + "…"
