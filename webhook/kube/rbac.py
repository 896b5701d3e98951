"""Who may do what, read from the RBAC objects themselves: ``doctor``'s "who can switch us off".

SelfSubjectAccessReview answers only for ourselves, and SubjectAccessReview needs a subject to
ask about. To find every subject, we read Roles, ClusterRoles and their bindings (read only) and
evaluate their rules as the RBAC authorizer does: verbs, API groups and resources with ``*``,
``resource/subresource`` and ``*/subresource``, ``resourceNames``, a RoleBinding to a ClusterRole
granting only in the binding's namespace, and a request on a Namespace object counting as a
request in that namespace. Aggregated ClusterRoles are read with the rules their controller
stored. Other authorizers (webhook, Node, ABAC) are not seen; ``escalate``, ``bind`` and
``impersonate`` are not followed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

RBAC_GROUP = "rbac.authorization.k8s.io"
RBAC_PATH = f"/apis/{RBAC_GROUP}/v1"
COLLECTIONS = ("clusterroles", "clusterrolebindings", "roles", "rolebindings")
# Groups every user, or every service account, is in: a grant to them is a grant to everyone.
BROAD_GROUPS = frozenset({"system:authenticated", "system:unauthenticated", "system:serviceaccounts"})


@dataclass(frozen=True, slots=True)
class Request:
    """The attributes of one API call, as the authorizer sees them."""

    verb: str
    group: str
    resource: str
    subresource: str = ""
    namespace: str = ""  # "" for a cluster-scoped object
    name: str = ""


@dataclass(frozen=True, slots=True)
class Subject:
    kind: str  # User, Group, ServiceAccount
    name: str
    namespace: str = ""

    def __str__(self) -> str:
        if self.kind == "ServiceAccount":
            return f"ServiceAccount {self.namespace}/{self.name}"
        return f"{self.kind} {self.name}"

    @property
    def broad(self) -> bool:
        """A group that holds every user or every service account (of a namespace)."""
        return self.kind == "Group" and (self.name in BROAD_GROUPS or self.name.startswith("system:serviceaccounts:"))


@dataclass(frozen=True, slots=True)
class Grant:
    """One subject allowed by one binding, and the role that allows it."""

    subject: Subject
    binding: str  # ClusterRoleBinding NAME, or RoleBinding NS/NAME
    role: str  # ClusterRole NAME, or Role NS/NAME


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The RBAC objects as listed: enough to answer "who can" for any request."""

    cluster_roles: dict[str, list[dict[str, Any]]]  # name -> rules
    roles: dict[tuple[str, str], list[dict[str, Any]]]  # (namespace, name) -> rules
    cluster_role_bindings: list[dict[str, Any]]
    role_bindings: list[dict[str, Any]]

    @classmethod
    def of(cls, lists: dict[str, list[dict[str, Any]]]) -> Snapshot:
        """From the items of the four collections, keyed as in ``COLLECTIONS``."""
        return cls(
            cluster_roles={_meta(o)[1]: o.get("rules") or [] for o in lists["clusterroles"]},
            roles={_meta(o): o.get("rules") or [] for o in lists["roles"]},
            cluster_role_bindings=list(lists["clusterrolebindings"]),
            role_bindings=list(lists["rolebindings"]),
        )

    def who_can(self, request: Request) -> list[Grant]:
        """Every (subject, binding, role) that allows ``request``, in binding order."""
        grants: list[Grant] = []
        for binding in self.cluster_role_bindings:
            ref = binding.get("roleRef") or {}
            if ref.get("kind") == "ClusterRole" and allows(self.cluster_roles.get(ref.get("name", ""), []), request):
                grants += _grants(binding, f"ClusterRoleBinding {_meta(binding)[1]}", f"ClusterRole {ref['name']}")
        # A Namespace object is "in" itself: RBAC authorizes get/update namespaces/N in namespace N.
        where = request.name if request.resource == "namespaces" and not request.namespace else request.namespace
        for binding in self.role_bindings:
            namespace, name = _meta(binding)
            if not where or namespace != where:
                continue
            ref = binding.get("roleRef") or {}
            if ref.get("kind") == "ClusterRole":
                rules, role = self.cluster_roles.get(ref.get("name", ""), []), f"ClusterRole {ref.get('name')}"
            else:
                rules = self.roles.get((namespace, ref.get("name", "")), [])
                role = f"Role {namespace}/{ref.get('name')}"
            if allows(rules, request):
                grants += _grants(binding, f"RoleBinding {namespace}/{name}", role)
        return grants


def allows(rules: Iterable[dict[str, Any]], request: Request) -> bool:
    """Does any rule of a role allow ``request``? (RBAC's ``RuleAllows``, resource rules only.)"""
    return any(_rule_allows(rule, request) for rule in rules if isinstance(rule, dict))


def _rule_allows(rule: dict[str, Any], request: Request) -> bool:
    verbs, groups = rule.get("verbs") or [], rule.get("apiGroups") or []
    resources, names = rule.get("resources") or [], rule.get("resourceNames") or []
    if not (request.verb in verbs or "*" in verbs) or not (request.group in groups or "*" in groups):
        return False
    if request.subresource:
        combined = f"{request.resource}/{request.subresource}"
        if not ({combined, f"*/{request.subresource}", "*"} & set(resources)):
            return False
    elif not (request.resource in resources or "*" in resources):
        return False
    return not names or (bool(request.name) and request.name in names)


def _grants(binding: dict[str, Any], how: str, role: str) -> list[Grant]:
    namespace = _meta(binding)[0]
    result = []
    for subject in binding.get("subjects") or []:
        kind = subject.get("kind", "")
        # A ServiceAccount subject without a namespace means the binding's own (RoleBinding) namespace.
        sa_namespace = subject.get("namespace") or namespace if kind == "ServiceAccount" else ""
        result.append(Grant(Subject(kind, subject.get("name", ""), sa_namespace), how, role))
    return result


def _meta(obj: dict[str, Any]) -> tuple[str, str]:
    metadata = obj.get("metadata") or {}
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")
