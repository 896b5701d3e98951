"""What ``doctor`` reports: findings with a severity, and the reads that may be refused.

A check that meets a 403 does not stop the others: it becomes a "could not check" finding
that names the permission missing, so a partly readable cluster still gets a useful report.
Anything else (unreachable, 401) stops the run, because nothing could be trusted after it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from webhook.kube.access import Permission, describe
from webhook.kube.client import ApiError, KubeClient
from webhook.kube.registration import RegistrationOptions
from webhook.policy.model import Policy

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")
SHOWN = 10  # namespaces and subjects named in one finding; the rest are counted


@dataclass(frozen=True, slots=True)
class Finding:
    check: str  # e.g. "webhooks.rules"
    severity: Severity
    message: str  # what is wrong and what it means
    fix: str = ""  # the command or manifest change that fixes it

    def record(self) -> dict[str, str]:
        return {"check": self.check, "severity": self.severity, "message": self.message, "fix": self.fix}


class CannotCheck(Exception):
    """A read was refused (403): the check becomes a "could not check" finding."""

    def __init__(self, permission: Permission) -> None:
        super().__init__(describe(permission))
        self.permission = permission


@dataclass(frozen=True, slots=True)
class Settings:
    """What ``doctor`` checks against: the options ``register`` would use, and where things are."""

    options: RegistrationOptions
    policy: Policy
    eval_timeout: float
    tls_secret: str
    policy_configmap: str
    cert_pem: bytes | None = None  # --cert-dir's tls.crt; None: read the Secret


@dataclass
class Cluster:
    """The API, read only, with each answer kept: several checks read the same objects."""

    client: KubeClient
    cache: dict[str, Any] = field(default_factory=dict)

    def get(self, path: str, permission: Permission) -> dict[str, Any] | None:
        """One object, or None when it does not exist."""
        if path not in self.cache:
            try:
                self.cache[path] = self.client.request("GET", path)
            except ApiError as exc:
                if exc.code == 403:
                    raise CannotCheck(permission) from None
                if exc.code != 404:
                    raise
                self.cache[path] = None
        found: dict[str, Any] | None = self.cache[path]
        return found

    def list(self, path: str, permission: Permission, selector: str = "") -> list[dict[str, Any]]:
        """Every item of a collection, page by page."""
        key = f"{path}?{selector}"
        if key not in self.cache:
            self.cache[key] = list(self._pages(path, permission, selector))
        items: list[dict[str, Any]] = self.cache[key]
        return items

    def _pages(self, path: str, permission: Permission, selector: str) -> Iterator[dict[str, Any]]:
        params = {"limit": "500", **({"labelSelector": selector} if selector else {})}
        while True:
            try:
                page = self.client.request("GET", path, params=params)
            except ApiError as exc:
                if exc.code == 403:
                    raise CannotCheck(permission) from None
                raise
            yield from page.get("items") or []
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return
            params["continue"] = token


@dataclass
class Report:
    """The findings so far, and the checks that found nothing wrong."""

    findings: list[Finding] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)

    def add(self, check: str, severity: Severity, message: str, fix: str = "") -> None:
        self.findings.append(Finding(check, severity, message, fix))

    def ok(self, check: str) -> None:
        self.passed.append(check)

    def cannot(self, check: str, exc: CannotCheck) -> None:
        self.findings.append(could_not_check(check, exc))


def could_not_check(check: str, exc: CannotCheck) -> Finding:
    return Finding(check, "warning", f"could not check: permission missing: {exc}",
                   "grant it (`webhook can-i --list --feature doctor` shows every permission doctor needs)")


def names(items: list[str]) -> str:
    """Up to ``SHOWN`` names, and how many more."""
    shown = ", ".join(items[:SHOWN])
    return shown + (f" and {len(items) - SHOWN} more" if len(items) > SHOWN else "")
