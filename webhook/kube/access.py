"""Permission checks with SelfSubjectAccessReview: ``webhook can-i`` and the checks ``serve`` repeats.

The API server's own authorizer answers, so the result is exactly what a real call would
meet, whatever mix of RBAC, webhook authorizers or node rules the cluster runs. Each
feature declares the permissions it needs here, in one table, so ``can-i --list``, the
preflight of ``register`` and the checks of ``serve`` can never disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from webhook.kube.client import KubeClient

SSAR_PATH = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
ADMISSION_GROUP = "admissionregistration.k8s.io"
WEBHOOK_CONFIGURATIONS = ("validatingwebhookconfigurations", "mutatingwebhookconfigurations")
DEFAULT_CONFIGURATION = "admission-webhook"  # metadata.name of both, unless --name says otherwise

# Resource → API group, for the names people type without a group (kubectl asks discovery;
# we know the few our features touch). Anything else needs RESOURCE.GROUP.
KNOWN_GROUPS: dict[str, str] = {
    "pods": "", "podtemplates": "", "replicationcontrollers": "", "namespaces": "", "nodes": "",
    "services": "", "configmaps": "", "secrets": "", "serviceaccounts": "", "events": "",
    "deployments": "apps", "replicasets": "apps", "statefulsets": "apps", "daemonsets": "apps",
    "jobs": "batch", "cronjobs": "batch",
    "validatingwebhookconfigurations": ADMISSION_GROUP, "mutatingwebhookconfigurations": ADMISSION_GROUP,
    "customresourcedefinitions": "apiextensions.k8s.io",
    "roles": "rbac.authorization.k8s.io", "rolebindings": "rbac.authorization.k8s.io",
    "clusterroles": "rbac.authorization.k8s.io", "clusterrolebindings": "rbac.authorization.k8s.io",
    "policyreports": "wgpolicyk8s.io", "clusterpolicyreports": "wgpolicyk8s.io",
}
# Cluster-scoped resources get no namespace, whatever the context's default namespace is.
CLUSTER_SCOPED = frozenset({
    "namespaces", "nodes", "persistentvolumes", "validatingwebhookconfigurations", "mutatingwebhookconfigurations",
    "customresourcedefinitions", "clusterroles", "clusterrolebindings", "storageclasses", "priorityclasses",
    "clusterpolicyreports",
})
WORKLOADS = (("", "pods"), ("", "podtemplates"), ("", "replicationcontrollers"), ("apps", "deployments"),
             ("apps", "replicasets"), ("apps", "statefulsets"), ("apps", "daemonsets"), ("batch", "jobs"),
             ("batch", "cronjobs"))


@dataclass(frozen=True, slots=True)
class Permission:
    verb: str
    resource: str
    group: str = ""
    namespace: str = ""  # "" means every namespace (or a cluster-scoped resource)
    name: str = ""
    subresource: str = ""
    path: str = ""  # a non-resource URL such as /healthz, instead of a resource

    @property
    def qualified(self) -> str:
        """``resource[/subresource][.group]``, as kubectl and RBAC messages write it."""
        if self.path:
            return self.path
        text = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        return f"{text}.{self.group}" if self.group else text

    def attributes(self) -> dict[str, Any]:
        if self.path:
            return {"nonResourceAttributes": {"path": self.path, "verb": self.verb}}
        attributes = {"verb": self.verb, "group": self.group, "resource": self.resource,
                      "subresource": self.subresource, "namespace": self.namespace, "name": self.name}
        return {"resourceAttributes": {k: v for k, v in attributes.items() if v or k in ("verb", "group")}}


@dataclass(frozen=True, slots=True)
class Access:
    permission: Permission
    allowed: bool
    denied: bool
    reason: str

    @property
    def answer(self) -> str:
        """``yes`` or ``no``, and the authorizer's reason when it gave one."""
        word = "yes" if self.allowed else "no"
        return f"{word} - {self.reason}" if self.reason else word


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    purpose: str
    permissions: tuple[Permission, ...]


FEATURES: dict[str, Feature] = {
    feature.name: feature
    for feature in (
        Feature(
            "register", "create and update the webhook configurations",
            tuple(Permission(verb, kind, ADMISSION_GROUP)
                  for kind in WEBHOOK_CONFIGURATIONS for verb in ("get", "create", "update")),
        ),
        Feature(
            # What `serve --register` needs once the configurations exist: read and update them
            # by name. RBAC can scope these to our names; `create` it could not.
            "sync", "keep our webhook configurations' caBundle in sync",
            tuple(Permission(verb, kind, ADMISSION_GROUP, name=DEFAULT_CONFIGURATION)
                  for kind in WEBHOOK_CONFIGURATIONS for verb in ("get", "update")),
        ),
        Feature(
            "audit", "list and watch what already runs",
            tuple(Permission(verb, resource, group) for group, resource in WORKLOADS for verb in ("list", "watch")),
        ),
        Feature(
            # `audit --report`: list ours, create, update with resourceVersion (get after a 409),
            # delete the emptied. Every kind audit judges is namespaced, so no ClusterPolicyReport.
            "report", "write the audit's results as PolicyReports",
            tuple(Permission(verb, "policyreports", "wgpolicyk8s.io")
                  for verb in ("get", "list", "create", "update", "delete")),
        ),
        Feature(
            # Read only. The namespaced rows are the manifests' namespace, admission-webhook.
            "doctor", "report coverage gaps: our configurations, namespaces, RBAC, endpoints, drift",
            (*(Permission("get", kind, ADMISSION_GROUP, name=DEFAULT_CONFIGURATION) for kind in WEBHOOK_CONFIGURATIONS),
             Permission("list", "namespaces"),
             *(Permission("list", kind, "rbac.authorization.k8s.io")
               for kind in ("clusterroles", "clusterrolebindings", "roles", "rolebindings")),
             Permission("get", "secrets", namespace=DEFAULT_CONFIGURATION),
             Permission("get", "configmaps", namespace=DEFAULT_CONFIGURATION),
             Permission("list", "endpointslices", "discovery.k8s.io", namespace=DEFAULT_CONFIGURATION),
             Permission("list", "poddisruptionbudgets", "policy", namespace=DEFAULT_CONFIGURATION),
             Permission("list", "pods", namespace=DEFAULT_CONFIGURATION),
             Permission("list", "nodes"),
             *(Permission("list", resource, group) for group, resource in WORKLOADS)),
        ),
        Feature(
            # Only for a policy that selects by namespace labels; can-i --list shows it for such a policy.
            "namespaces", "read namespace labels for a policy's namespaceSelector",
            tuple(Permission(verb, "namespaces") for verb in ("list", "watch")),
        ),
    )
}
# What `can-i --list` checks unless the policy selects by namespace labels, or --feature names it.
POLICY_FEATURES = frozenset({"namespaces"})
UNREGISTER = tuple(Permission(verb, kind, ADMISSION_GROUP) for kind in WEBHOOK_CONFIGURATIONS
                   for verb in ("get", "delete"))


def parse_permission(
    verb: str, resource: str, name: str = "", *, namespace: str | None, default_namespace: str,
    subresource: str = "",
) -> Permission:
    """Read ``can-i`` arguments the way kubectl does: ``RESOURCE[.GROUP]`` or a ``/non-resource/url``."""
    if resource.startswith("/"):
        return Permission(verb=verb, resource="", path=resource)
    if "/" in resource and not subresource:
        resource, subresource = resource.split("/", 1)
    plural, _, group = resource.partition(".")
    plural = plural.lower()
    if not _:
        group = KNOWN_GROUPS.get(plural, "")
    if namespace is None:
        namespace = "" if plural in CLUSTER_SCOPED else default_namespace
    return Permission(verb=verb, resource=plural, group=group, namespace=namespace, name=name,
                      subresource=subresource)


def check(client: KubeClient, permission: Permission) -> Access:
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": permission.attributes(),
    }
    answer = client.request("POST", SSAR_PATH, body=review)
    status = answer.get("status") or {}
    reason = str(status.get("reason") or "")
    if status.get("evaluationError"):
        reason = f"{reason}; {status['evaluationError']}" if reason else str(status["evaluationError"])
    return Access(permission, bool(status.get("allowed")), bool(status.get("denied")), reason)


def check_all(client: KubeClient, permissions: Iterable[Permission]) -> list[Access]:
    return [check(client, permission) for permission in permissions]


def listed_features(policy_reads_namespaces: bool) -> list[str]:
    """The features ``can-i --list`` checks by default: all, less the namespaces a policy does not read."""
    return [name for name in FEATURES if policy_reads_namespaces or name not in POLICY_FEATURES]


def needed_for(features: Sequence[str], configuration: str = DEFAULT_CONFIGURATION) -> list[Permission]:
    """Every permission the named features need, in table order, without repeats; permissions
    on one named webhook configuration are asked about ``configuration``."""
    seen: dict[Permission, None] = {}
    for name in features:
        for permission in FEATURES[name].permissions:
            if permission.name:
                permission = replace(permission, name=configuration)  # noqa: PLW2901
            seen.setdefault(permission, None)
    return list(seen)


def missing(results: Iterable[Access]) -> list[Access]:
    return [result for result in results if not result.allowed]


def describe(permission: Permission) -> str:
    """One phrase naming the exact verb, resource and namespace, for logs and errors."""
    where = f"in namespace {permission.namespace}" if permission.namespace else "cluster-wide"
    target = f"{permission.qualified} {permission.name}" if permission.name else permission.qualified
    return f"{permission.verb} {target} {where}"


def table(results: Sequence[Access]) -> str:
    """The ``can-i --list`` table: verb, resource (``/NAME`` for one object), namespace, allowed, reason."""
    rows = [("VERB", "RESOURCE", "NAMESPACE", "ALLOWED", "REASON")]
    for result in results:
        p = result.permission
        resource = f"{p.qualified}/{p.name}" if p.name else p.qualified
        rows.append((p.verb, resource, p.namespace or "*", "yes" if result.allowed else "no", result.reason))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)) + "  " + row[4]
             for row in rows]
    return "\n".join(line.rstrip() for line in lines)
