"""Who can switch the guard off: the subjects whose roles let them delete or change what it runs on.

Read from the RBAC objects (``rbac.py``), for: our two webhook configurations; the policy
ConfigMap and the serving Secret the pods mount; and the namespaces, when a namespace label
decides what is guarded. Some holders are expected and are only noted: bindings of
``cluster-admin``, the ``system:masters`` group, the cluster's own components (``system:``
users and groups, service accounts of kube-system) and our own service account, which keeps
the caBundle in sync. A grant to everyone (``system:authenticated``, ``system:serviceaccounts``...)
is an error; any other holder is a warning, to be looked at.
"""

from __future__ import annotations

from webhook.kube.access import ADMISSION_GROUP, Permission
from webhook.kube.doctor.configurations import KINDS, live_webhook
from webhook.kube.doctor.findings import CannotCheck, Cluster, Report, Settings, names
from webhook.kube.doctor.namespaces import label_keys, live_namespaces
from webhook.kube.rbac import COLLECTIONS, RBAC_GROUP, RBAC_PATH, Grant, Request, Snapshot

WRITES = ("update", "patch", "delete")


def read_rbac(cluster: Cluster) -> Snapshot:
    """The four RBAC collections, read once; raises CannotCheck without ``list`` on one."""
    return Snapshot.of({c: cluster.list(f"{RBAC_PATH}/{c}", Permission("list", c, RBAC_GROUP)) for c in COLLECTIONS})


def switches(cluster: Cluster, settings: Settings) -> list[tuple[str, str, list[Request]]]:
    """(check, what the holders can do, the requests that do it) for each switch."""
    options = settings.options
    ns = options.service_namespace
    result = [
        ("access.webhook-configurations", "delete or change our webhook configurations",
         [Request(v, ADMISSION_GROUP, plural, name=options.name) for plural in KINDS.values() for v in WRITES]
         + [Request("deletecollection", ADMISSION_GROUP, plural) for plural in KINDS.values()]),
        ("access.policy", f"edit or delete the policy ConfigMap {ns}/{settings.policy_configmap}",
         [Request(v, "", "configmaps", namespace=ns, name=settings.policy_configmap) for v in WRITES]),
        ("access.serving-secret", f"replace or delete the serving Secret {ns}/{settings.tls_secret}",
         [Request(v, "", "secrets", namespace=ns, name=settings.tls_secret) for v in WRITES]),
    ]
    try:
        keys = label_keys(live_webhook(cluster, settings, "validating"), settings.policy)
    except CannotCheck:
        keys = label_keys(None, settings.policy)
    if keys:
        try:
            namespaces = sorted(live_namespaces(cluster))
        except CannotCheck:
            namespaces = [""]  # cluster-wide grants only
        requests = [Request(v, "", "namespaces", name=n) for n in namespaces for v in ("update", "patch")]
        result.append(("access.namespace-labels", f"set the namespace label(s) {', '.join(keys)} that decide what "
                       "is guarded", requests))
    return result


def check(cluster: Cluster, settings: Settings, report: Report) -> None:
    try:
        snapshot = read_rbac(cluster)
    except CannotCheck as exc:
        report.cannot("access", exc)
        return
    ours = (settings.options.service_namespace, settings.options.service_name)
    found = switches(cluster, settings)
    for name, what, requests in found:
        grants: dict[str, list[Grant]] = {}
        for request in requests:
            for grant in snapshot.who_can(request):
                if grant not in grants.setdefault(str(grant.subject), []):
                    grants[str(grant.subject)].append(grant)
        broad = [s for s, g in grants.items() if g[0].subject.broad]
        expected = [s for s, g in grants.items() if s not in broad and _expected(g, ours)]
        others = [s for s in grants if s not in broad and s not in expected]
        if broad:
            report.add(name, "error", f"everyone in {names(_via(broad, grants))} can {what}",
                       "remove these groups from the bindings named, or narrow the roles")
        if others:
            report.add(name, "warning", f"{len(others)} subject(s) besides cluster admins and built-ins can {what}: "
                       f"{names(_via(others, grants))}", "make sure each should; remove it from the binding named, "
                       "or narrow the role")
        if expected:
            report.add(name, "info", f"{len(expected)} expected subject(s) can {what}: {names(expected)}")
        if not broad and not others:
            report.ok(name)
    if not any(name == "access.namespace-labels" for name, _, _ in found):
        report.ok("access.namespace-labels")  # only the name label, which nobody can change, decides


def _expected(grants: list[Grant], ours: tuple[str, str]) -> bool:
    """Every way this subject holds the switch is an expected one (see the module's docstring)."""
    subject = grants[0].subject
    if subject.kind == "ServiceAccount":
        return subject.namespace == "kube-system" or (subject.namespace, subject.name) == ours
    if subject.name == "system:masters" or subject.name.startswith("system:"):
        return True
    return all(g.role == "ClusterRole cluster-admin" for g in grants)


def _via(subjects: list[str], grants: dict[str, list[Grant]]) -> list[str]:
    return [f"{s} ({'; '.join(f'{g.binding} of {g.role}' for g in grants[s])})" for s in subjects]
