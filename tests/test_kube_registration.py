"""The webhook configurations we publish, and how an update keeps what others added.

The builder is what the manifests are generated from, so its invariants are checked here
one by one: the rules the API server enforces and the guidance it publishes.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest

from tests.apiserver import _defaulted
from webhook.kube.apply import contains, overlay
from webhook.kube.registration import (
    DEFAULT_CUSTOM_RESOURCES,
    RegistrationError,
    RegistrationOptions,
    RuleTarget,
    build_configurations,
    plural,
    policy_targets,
    to_yaml,
)
from webhook.policy.model import load_policy

CA = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def webhook_of(configuration: dict[str, Any]) -> dict[str, Any]:
    hooks = configuration["webhooks"]
    assert len(hooks) == 1
    return hooks[0]  # type: ignore[no-any-return]


def resources(hook: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(group, version, resource) for rule in hook["rules"] for group in rule["apiGroups"]
            for version in rule["apiVersions"] for resource in rule["resources"]}


def test_both_configurations_follow_the_rules_and_the_guidance() -> None:
    validating, mutating = build_configurations(RegistrationOptions(service_namespace="guard"), CA)
    assert validating["kind"] == "ValidatingWebhookConfiguration"
    assert mutating["kind"] == "MutatingWebhookConfiguration"
    for configuration, path in ((validating, "/validate"), (mutating, "/mutate")):
        hook = webhook_of(configuration)
        assert configuration["apiVersion"] == "admissionregistration.k8s.io/v1"
        assert len(hook["name"].split(".")) >= 3
        assert hook["sideEffects"] == "None"
        assert hook["admissionReviewVersions"] == ["v1", "v1beta1"]
        assert hook["matchPolicy"] == "Equivalent"
        assert hook["timeoutSeconds"] == 5
        assert hook["namespaceSelector"] == {"matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "guard"]}]}
        assert hook["clientConfig"] == {
            "service": {"name": "admission-webhook", "namespace": "guard", "path": path, "port": 443},
            "caBundle": base64.b64encode(CA).decode()}
        assert all(rule["operations"] == ["CREATE", "UPDATE"] for rule in hook["rules"])
        assert {("", "v1", "pods"), ("", "v1", "pods/ephemeralcontainers"), ("apps", "v1", "deployments"),
                ("batch", "v1", "cronjobs"), ("", "v1", "replicationcontrollers")} <= resources(hook)
    assert webhook_of(validating)["failurePolicy"] == "Fail"
    assert webhook_of(mutating)["failurePolicy"] == "Ignore"
    assert "reinvocationPolicy" not in webhook_of(validating)
    assert webhook_of(mutating)["reinvocationPolicy"] == "IfNeeded"
    assert ("example.sealyun.com", "*", "projects") in resources(webhook_of(mutating))
    assert not any(group == "example.sealyun.com" for group, _, _ in resources(webhook_of(validating)))


def test_custom_resources_url_and_policies_are_options() -> None:
    options = RegistrationOptions(
        url="https://hook.example.com:9443/", validating_failure_policy="Ignore", mutating_failure_policy="Fail",
        timeout_seconds=10, exclude_namespaces=("monitoring", "kube-system"),
        custom_resources=(RuleTarget("acme.io", ("v1", "v2"), ("widgets",)),),
    )
    validating, mutating = build_configurations(options, None)
    assert webhook_of(validating)["clientConfig"] == {"url": "https://hook.example.com:9443/validate"}
    assert webhook_of(mutating)["clientConfig"] == {"url": "https://hook.example.com:9443/mutate"}
    assert (webhook_of(validating)["failurePolicy"], webhook_of(mutating)["failurePolicy"]) == ("Ignore", "Fail")
    assert webhook_of(mutating)["namespaceSelector"]["matchExpressions"][0]["values"] == [
        "kube-system", "admission-webhook", "monitoring"]
    assert {("acme.io", "v1", "widgets"), ("acme.io", "v2", "widgets")} <= resources(webhook_of(mutating))
    assert ("example.sealyun.com", "v1alpha1", "projects") not in resources(webhook_of(mutating))


@pytest.mark.parametrize(("options", "problem"), [
    (RegistrationOptions(name="Admission"), "--name 'Admission' must be a lowercase DNS subdomain"),
    (RegistrationOptions(timeout_seconds=31), "--timeout-seconds 31 must be between 1 and 30"),
    (RegistrationOptions(url="http://hook.example.com"), "must be https://host[:port][/path]"),
    (RegistrationOptions(url="https://u:p@hook.example.com"), "must not carry user info"),
    (RegistrationOptions(service_name="hook_svc"), "--service-name 'hook_svc' must be a DNS label"),
    (RegistrationOptions(validating_failure_policy="fail"), "failure policy 'fail' must be Fail or Ignore"),
])
def test_what_the_api_server_would_refuse_is_refused_here(options: RegistrationOptions, problem: str) -> None:
    with pytest.raises(RegistrationError) as caught:
        build_configurations(options, CA)
    assert problem in str(caught.value)


def test_dry_run_yaml_is_two_documents_in_order() -> None:
    text = to_yaml(build_configurations(RegistrationOptions(), CA))
    assert text.startswith("---\napiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\n")
    assert text.count("\n---\n") == 1
    assert f"caBundle: {base64.b64encode(CA).decode()}\n" in text  # one line, never folded


def test_what_the_server_stored_contains_what_we_asked_for() -> None:
    for desired in build_configurations(RegistrationOptions(), CA):
        stored = _defaulted(desired["kind"].lower() + "s", desired)
        stored["metadata"].update(resourceVersion="7", uid="u")
        assert contains(stored, desired)
        changed = copy.deepcopy(desired)
        webhook_of(changed)["clientConfig"]["caBundle"] = "bmV3"
        assert not contains(stored, changed)


def test_an_update_keeps_what_others_added_to_our_webhook() -> None:
    desired = build_configurations(RegistrationOptions(), CA)[0]
    existing = _defaulted("validatingwebhookconfigurations", desired)
    existing["metadata"].update(resourceVersion="7", labels={"team": "platform"})
    webhook_of(existing)["matchConditions"] = [{"name": "no-mirror-pods", "expression": "true"}]
    webhook_of(existing)["timeoutSeconds"] = 30
    result = overlay(existing, desired)
    assert result["metadata"]["resourceVersion"] == "7"  # the update is conditional on what we read
    assert result["metadata"]["labels"] == {"team": "platform", **desired["metadata"]["labels"]}
    assert webhook_of(result)["matchConditions"] == [{"name": "no-mirror-pods", "expression": "true"}]
    assert webhook_of(result)["timeoutSeconds"] == 5


def test_switching_to_a_url_replaces_the_service_and_keeps_an_injected_ca() -> None:
    existing = _defaulted("mutatingwebhookconfigurations", build_configurations(RegistrationOptions(), CA)[1])
    desired = build_configurations(RegistrationOptions(url="https://hook.example.com"), None)[1]
    result = overlay(existing, desired)
    assert webhook_of(result)["clientConfig"] == {"url": "https://hook.example.com/mutate",
                                                  "caBundle": base64.b64encode(CA).decode()}


@pytest.mark.parametrize(("kind", "resource"), [("Project", "projects"), ("Policy", "policies"), ("Box", "boxes"),
                                                ("Gateway", "gateways"), ("Ingress", "ingresses"),
                                                ("Patch", "patches")])
def test_plural_resource_names(kind: str, resource: str) -> None:
    assert plural(kind) == resource


def test_the_embedded_policy_targets_the_example_crd() -> None:
    assert policy_targets(load_policy(None)) == DEFAULT_CUSTOM_RESOURCES
