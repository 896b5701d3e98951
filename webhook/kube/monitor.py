"""What ``serve`` does with the cluster, in the background: permission checks and caBundle sync.

Admission answers never wait on the API server, so all of this runs on a daemon thread
and only publishes a report that ``/readyz`` shows. A missing permission or an API that
is down is logged and reported, never a reason to stop answering: a hard gate would break
GitOps installs, where RBAC may land after the Deployment.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from webhook.kube.access import DEFAULT_CONFIGURATION, Access, check_all, describe, missing, needed_for
from webhook.kube.apply import Outcome, apply_configuration
from webhook.kube.client import KubeClient, KubeError, Retry
from webhook.kube.config import ClusterConfig, ConfigError
from webhook.kube.registration import RegistrationOptions, build_configurations, policy_targets, read_ca_bundle
from webhook.policy.model import Policy

log = logging.getLogger("webhook.kube")


def check_permissions(
    client: KubeClient, registration: RegistrationOptions | None, *, namespaces: bool = False, quiet: bool = False
) -> list[Access]:
    """The checks ``serve`` runs: what serve itself uses (``sync`` with --register, ``namespaces``
    for a policy that selects by their labels), by name, so a least-privilege grant reads as
    complete. Logs one line per gap."""
    features = (["sync"] if registration is not None else []) + (["namespaces"] if namespaces else [])
    results = check_all(client, needed_for(features, registration.name if registration else DEFAULT_CONFIGURATION))
    for result in [] if quiet else missing(results):
        log.warning("missing permission: %s cannot %s%s", client.config.identity, describe(result.permission),
                    f" ({result.reason})" if result.reason else "")
    return results


def sync_registration(client: KubeClient, options: RegistrationOptions, ca_file: Path) -> list[Outcome]:
    """Make both configurations match ours, with the caBundle read from ``ca_file`` now."""
    configurations = build_configurations(options, read_ca_bundle(ca_file))
    outcomes = [apply_configuration(client, c) for c in configurations]
    for outcome in outcomes:
        (log.debug if outcome.action == "unchanged" else log.info)("registration: %s", outcome)
    return outcomes


class ClusterMonitor:
    """Re-checks permissions every ``interval`` seconds and keeps the registration in sync."""

    def __init__(
        self, cluster: ClusterConfig, *, interval: float, timeout: float,
        registration: RegistrationOptions | None = None, ca_file: Path | None = None,
        on_permissions: Callable[[list[Access]], None] | None = None,
        policy: Callable[[], Policy] | None = None,
    ) -> None:
        self.cluster = cluster
        # The policy in force: whether it reads namespace labels, and the custom resources its
        # defaults name, which the mutating configuration's rules follow across reloads.
        self.policy = policy
        self.on_permissions = on_permissions  # e.g. metrics; called on the monitor thread
        self.interval = interval
        self.timeout = timeout
        self.registration = registration
        self.ca_file = ca_file
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._report: dict[str, Any] = {"state": "pending", "server": cluster.server}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="cluster-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def request_sync(self) -> None:
        """Run a round now, without waiting for it: the hook for a certificate reload."""
        self._wake.set()

    def readiness(self) -> dict[str, Any]:
        """The ``/readyz`` entry. Always ready: the cluster is reported here, never a gate."""
        with self._lock:
            return {"ready": True, "enabled": True, **self._report}

    def run_once(self, *, quiet: bool = False) -> dict[str, Any]:
        """One round; ``quiet`` leaves out the log lines start-up has just written."""
        report: dict[str, Any] = {"server": self.cluster.server, "checkedAt": _now()}
        try:
            with KubeClient(self.cluster, timeout=self.timeout) as client:
                policy = self.policy() if self.policy is not None else None
                reads_namespaces = policy is not None and policy.needs_namespace_labels
                results = check_permissions(client, self.registration, namespaces=reads_namespaces, quiet=quiet)
                if self.on_permissions is not None:
                    self.on_permissions(results)
                absent = missing(results)
                report["permissions"] = {
                    "checked": len(results),
                    "missing": [{"verb": a.permission.verb, "resource": a.permission.qualified,
                                 "namespace": a.permission.namespace or "*"} for a in absent],
                }
                report["state"] = "missing-permissions" if absent else "ok"
                if self.registration is not None and self.ca_file is not None:
                    options = self.registration if policy is None else replace(
                        self.registration, custom_resources=policy_targets(policy))
                    outcomes = sync_registration(client, options, self.ca_file)
                    report["registration"] = {o.kind: o.action for o in outcomes}
        except (KubeError, ConfigError) as exc:
            if not quiet:
                log.warning("Kubernetes API: %s", exc)
            report.setdefault("state", "error")
            report["error"] = str(exc)
        with self._lock:
            self._report = report
        return report

    def _loop(self) -> None:
        quiet = True  # start-up (connect_at_start) has logged the first round
        while not self._stop.is_set():
            self.run_once(quiet=quiet)
            quiet = False
            self._wake.wait(self.interval)
            self._wake.clear()


def connect_at_start(
    cluster: ClusterConfig, *, timeout: float, require_permissions: bool,
    registration: RegistrationOptions | None, ca_file: Path, reads_namespaces: bool = False,
) -> bool:
    """Check and register once before serving. False: --require-permissions says do not start.

    Nothing listens until this returns, and a liveness probe kills a server that does not
    listen. So unless --require-permissions makes the cluster a gate, every call gets one
    attempt: an API that hangs delays the start by one ``timeout``, not by all the retries,
    and the background monitor, which starts with the server, tries again at once.
    """
    log.info("Kubernetes API %s (%s)", cluster.server, cluster.source)
    retry = None if require_permissions else Retry(attempts=1)
    try:
        with KubeClient(cluster, timeout=timeout, retry=retry) as client:
            absent = missing(check_permissions(client, registration, namespaces=reads_namespaces))
            if absent and require_permissions:
                log.error("not starting: %d permission(s) missing and --require-permissions is set", len(absent))
                return False
            if registration is not None:
                sync_registration(client, registration, ca_file)
    except (KubeError, ConfigError) as exc:
        if require_permissions:
            log.error("not starting: %s (--require-permissions is set)", exc)
            return False
        log.warning("Kubernetes API: %s; serving anyway, and trying again in the background", exc)
    return True


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
