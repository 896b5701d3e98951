"""``webhook check``: judge manifests before they reach a cluster, as the webhooks would.

Each object becomes the AdmissionReview a CREATE of it would send, and goes through the
mutating and then the validating webhook (``admission/chain.py``), with the returned patch
applied in between. Nothing is decided here, so check and the server cannot disagree.
What is here: where an object would be stored (its resource and namespace, which a cluster
would know and a file does not), and the three ways of showing the answers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

from webhook import check_format
from webhook.admission.chain import Admission, Target, admit
from webhook.manifests import Manifest, Unreadable
from webhook.policy.match import labels_of
from webhook.policy.model import Policy
from webhook.settings import DEFAULT_NAMESPACE

Output = Literal["table", "json", "yaml"]
USERNAME = "webhook-check"
EXIT_DENIED = 1
EXIT_UNREADABLE = 2

# Kinds stored without a namespace. Custom resources are namespaced unless a CRD among the
# inputs says otherwise.
CLUSTER_SCOPED_KINDS = frozenset({
    "Namespace", "Node", "PersistentVolume", "CustomResourceDefinition", "APIService", "ClusterRole",
    "ClusterRoleBinding", "StorageClass", "CSIDriver", "CSINode", "VolumeAttachment", "PriorityClass",
    "RuntimeClass", "IngressClass", "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration",
    "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "MutatingAdmissionPolicy",
    "MutatingAdmissionPolicyBinding", "CertificateSigningRequest", "FlowSchema", "PriorityLevelConfiguration",
    "ComponentStatus", "PodSecurityPolicy",
})
IRREGULAR_RESOURCES = {"Endpoints": "endpoints"}
CRD_API_VERSIONS = ("apiextensions.k8s.io/v1", "apiextensions.k8s.io/v1beta1")


@dataclass(frozen=True, slots=True)
class Result:
    manifest: Manifest
    target: Target
    namespace: str | None
    admission: Admission

    @property
    def display_name(self) -> str:
        """``namespace/name``; a generateName shows as ``prefix*``."""
        metadata = self.manifest.object.get("metadata")
        metadata = metadata if isinstance(metadata, dict) else {}
        name = metadata.get("name")
        if not isinstance(name, str) or not name:
            prefix = metadata.get("generateName")
            name = f"{prefix}*" if isinstance(prefix, str) and prefix else "(unnamed)"
        return f"{self.namespace}/{name}" if self.namespace else name


@dataclass
class Catalog:
    """Resources and scopes of custom kinds, learnt from the CRDs read so far."""

    custom: dict[tuple[str, str], tuple[str, bool]] = field(default_factory=dict)  # (group, kind) -> (plural, ns?)

    def learn(self, obj: dict[str, Any]) -> None:
        if obj.get("kind") != "CustomResourceDefinition" or obj.get("apiVersion") not in CRD_API_VERSIONS:
            return
        spec = obj.get("spec")
        names = spec.get("names") if isinstance(spec, dict) else None
        if isinstance(spec, dict) and isinstance(names, dict):
            group, kind, plural = spec.get("group"), names.get("kind"), names.get("plural")
            if isinstance(group, str) and isinstance(kind, str) and isinstance(plural, str):
                self.custom[(group, kind)] = (plural, spec.get("scope") != "Cluster")

    def target(self, obj: dict[str, Any]) -> Target:
        group, _, version = str(obj["apiVersion"]).rpartition("/")
        kind = str(obj["kind"])
        plural = self.custom.get((group, kind), (None, True))[0] or IRREGULAR_RESOURCES.get(kind) or guess_plural(kind)
        return Target(group, version, kind, plural)

    def namespace(self, obj: dict[str, Any], target: Target, default: str) -> str | None:
        """Where the API server would put it: cluster-scoped kinds have none; a Namespace is its own."""
        metadata = obj.get("metadata")
        metadata = metadata if isinstance(metadata, dict) else {}
        if target.kind == "Namespace" and target.group == "":
            name = metadata.get("name")
            return name if isinstance(name, str) and name else None
        custom = self.custom.get((target.group, target.kind))
        if target.kind in CLUSTER_SCOPED_KINDS if custom is None else not custom[1]:
            return None
        namespace = metadata.get("namespace")
        return namespace if isinstance(namespace, str) and namespace else default


def guess_plural(kind: str) -> str:
    """The resource name for a kind, as kubectl guesses it when discovery is out of reach."""
    lower = kind.lower()
    if lower.endswith("s"):
        return lower + "es"
    if lower.endswith("y"):
        return lower[:-1] + "ies"
    return lower + "s"


class NamespaceLabels:
    """Labels of the Namespace objects among the inputs, for a policy's namespaceSelector.

    A namespace that none of them describes is read as having no labels, and ``unknown``
    collects it, so the output can say so once.
    """

    def __init__(self, items: Iterable[Manifest | Unreadable],
                 cluster: Mapping[str, Mapping[str, str]] | None = None) -> None:
        # The cluster's namespaces as they are now, and the inputs' as they will be: those win.
        self.known: dict[str, Mapping[str, str]] = dict(cluster or {})
        self.unknown: dict[str, None] = {}  # looked up, not known, and not yet reported
        self._reported: set[str] = set()
        for item in items:
            obj = item.object if isinstance(item, Manifest) else None
            if obj is not None and obj.get("kind") == "Namespace" and obj.get("apiVersion") == "v1":
                metadata = obj.get("metadata")
                name = metadata.get("name") if isinstance(metadata, dict) else None
                if isinstance(name, str) and name:
                    self.known[name] = dict(labels_of(obj))

    def __call__(self, namespace: str) -> Mapping[str, str] | None:
        labels = self.known.get(namespace)
        if labels is None and namespace not in self._reported:
            self.unknown.setdefault(namespace)
        return labels

    def report(self) -> list[str]:
        """The unknown namespaces not reported before, now counted as reported."""
        fresh = list(self.unknown)
        self._reported.update(fresh)
        self.unknown.clear()
        return fresh


def evaluate(
    items: Iterable[Manifest | Unreadable], policy: Policy, namespace: str = DEFAULT_NAMESPACE,
    on_unknown_namespace: Callable[[str], None] | None = None,
    cluster_labels: Mapping[str, Mapping[str, str]] | None = None,
) -> Iterator[Result | Unreadable]:
    """Each readable object through mutation and validation, in input order; the unreadable passed on.

    When the policy selects by namespace labels, every input is read first, because a
    Namespace may come after the objects in it.
    """
    catalog = Catalog()
    if policy.needs_namespace_labels:
        items = list(items)
        labels = NamespaceLabels(items, cluster_labels)
        policy = policy.seen_from(namespace_labels=labels)
    for item in items:
        if isinstance(item, Unreadable):
            yield item
            continue
        catalog.learn(item.object)
        target = catalog.target(item.object)
        where = catalog.namespace(item.object, target, namespace)
        result = Result(item, target, where, admit(item.object, target, where, policy, username=USERNAME))
        if policy.needs_namespace_labels and on_unknown_namespace is not None:
            for name in labels.report():
                on_unknown_namespace(name)
        yield result


@dataclass
class Tally:
    objects: int = 0
    allowed: int = 0
    warned: int = 0
    denied: int = 0
    unreadable: int = 0

    def count(self, item: Result | Unreadable) -> None:
        if isinstance(item, Unreadable):
            self.unreadable += 1
            return
        self.objects += 1
        setattr(self, item.admission.decision, getattr(self, item.admission.decision) + 1)

    @property
    def exit_code(self) -> int:
        """2 when anything could not be read (or nothing was found), else 1 when anything is denied."""
        if self.unreadable or not self.objects:
            return EXIT_UNREADABLE
        return EXIT_DENIED if self.denied else 0

    def __str__(self) -> str:
        objects = f"{self.objects} object{'' if self.objects == 1 else 's'}"
        text = f"{objects}: {self.allowed} allowed, {self.warned} warned, {self.denied} denied"
        return text + (f"; {self.unreadable} unreadable" if self.unreadable else "")


def run(items: Iterable[Manifest | Unreadable], policy: Policy, *, output: Output, namespace: str,
        out: TextIO, err: TextIO, at: float | None = None,
        cluster_labels: Mapping[str, Mapping[str, str]] | None = None) -> int:
    """Judge, print in the chosen form, and return the exit code (0 allowed, 1 denied, 2 unreadable).

    Only what is shown is kept between objects (a table row, a JSON record), never the
    objects themselves; YAML is written as it goes. ``at`` judges as of that moment (``--at``).
    """
    if at is not None:
        policy = policy.seen_from(clock=lambda: at)
    for warning in policy.exceptions.expired_warnings(policy.clock()):
        print(f"webhook: warning: policy file {policy.source}: {warning}", file=err)

    where = "among the inputs or in the cluster" if cluster_labels is not None else "among the inputs"

    def unknown(name: str) -> None:
        print(f"webhook: note: namespace {name!r} has no known labels (no Namespace object {where}); "
              "namespaceSelector judges it as having none", file=err)

    tally = Tally()
    rows: list[check_format.Row] = []
    records: list[dict[str, Any]] = []
    errors: list[Unreadable] = []
    scoped = policy.scoped or policy.excepting
    for item in evaluate(items, policy, namespace, unknown, cluster_labels):
        tally.count(item)
        if isinstance(item, Unreadable):
            print(f"webhook: error: {item}", file=err)
            errors.append(item)
        elif output == "yaml":
            out.write(check_format.yaml_document(item))
        elif output == "json":
            records.append(check_format.record(item))
        else:
            rows.append(check_format.row(item, scoped=scoped))
    if not tally.objects and not tally.unreadable:
        print("webhook: error: no Kubernetes objects found in the inputs", file=err)
    if output == "table":
        out.write(check_format.table(rows) + "\n" if rows else "")
        print(tally, file=out)
    elif output == "json":
        out.write(check_format.json_report(records, errors, tally))
    return tally.exit_code
