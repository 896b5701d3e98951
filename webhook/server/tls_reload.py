"""Hot reload of the serving certificate and the client CA, and what readiness reports about them.

A reload never touches a context that is serving. OpenSSL installs a certificate before its key
and drops a key that does not fit the new certificate, so ``load_cert_chain`` on the live context
either opens a window where new handshakes find no key or, for a bad pair, leaves none at all;
and a verify store can only grow, so a client CA could never be dropped. Instead every reload
builds a complete new ``SSLContext`` from bytes that have already been checked, and the listening
context's SNI callback, which OpenSSL calls on every handshake (with or without SNI), hands the
handshake to the newest one. The listener is never restarted, and open connections keep the
context they started with.
"""

from __future__ import annotations

import datetime as dt
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from webhook.certdir import read_optional
from webhook.pki import CertificateError, chains_to, parse_certificates
from webhook.server.tls import Material, TLSFiles, build_context, read_material, rfc3339
from webhook.server.watch import Contents, ContentWatcher, Poller, read_contents
from webhook.settings import ServeSettings

log = logging.getLogger("webhook.tls")

EXPIRY_WARNING = dt.timedelta(days=30)
WARN_EVERY_SECONDS = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class CertificateStatus:
    serial: str
    not_after: dt.datetime
    chains_to_ca: bool | None  # None: there is no readable ca.crt to check against
    problem: str | None  # why the server is not ready, if it is not
    reload_error: str | None  # the last refused reload; the served pair is unaffected

    @property
    def ready(self) -> bool:
        return self.problem is None


class ServingTLS:
    """The TLS state of one server process: the context in use, the reload, and what readiness reports.

    Built in the parent and pickled into each worker with the uvicorn Config, together with the app
    factory that reads it, so the app and the SSL factory of a worker share one instance.
    Only the configuration crosses the pickle; each worker loads and watches on its own.
    """

    def __init__(self, files: TLSFiles, reload_interval: float, log_level: str = "info") -> None:
        self.files = files
        self.reload_interval = reload_interval
        self.log_level = log_level
        self._reset()

    @classmethod
    def from_settings(cls, settings: ServeSettings) -> ServingTLS:
        return cls(TLSFiles.from_settings(settings), settings.reload_interval, settings.log_level)

    def __reduce__(self) -> tuple[type[ServingTLS], tuple[TLSFiles, float, str]]:
        return ServingTLS, (self.files, self.reload_interval, self.log_level)

    def _reset(self) -> None:
        self._material: Material | None = None
        self._context: ssl.SSLContext | None = None
        self._ca: tuple[x509.Certificate, ...] | None = None
        self._ca_bytes: bytes | None = None
        self._ca_problem: str | None = None
        self._reload_error: str | None = None
        self._warned_at: float | None = None
        self._poller: Poller | None = None
        self._ca_listeners: list[Callable[[], object]] = []

    def on_ca_change(self, listener: Callable[[], object]) -> None:
        """Call ``listener`` (on the watcher thread) whenever ca.crt changes, for example to publish
        the new caBundle at once. It must be quick; an exception is logged and the watching goes on."""
        self._ca_listeners.append(listener)

    def check(self) -> Material:
        """Load once to fail fast with a clear message, before anything binds."""
        for path in self.files.paths:
            read_optional(path)  # a file that is there but unreadable is named as such, not as missing
        material = read_material(self.files, read_contents(self.files.paths))
        build_context(material)
        return material

    def uvicorn_factory(self, config: Any, default: Any) -> ssl.SSLContext:
        """uvicorn's ``ssl_context_factory``: called once in every worker process."""
        return self.start()

    def start(self) -> ssl.SSLContext:
        """Load the files, start watching them, and return the listening context."""
        contents = read_contents(self.files.paths)
        material = read_material(self.files, contents)
        front = build_context(material)
        front.sni_callback = self._select
        self._material, self._context = material, front
        self._set_ca(contents.get(self.files.ca))
        log.info("serving certificate serial %s, notAfter %s%s", material.serial, _rfc3339(material.leaf),
                 f", client certificates required (CA {self.files.client_ca})" if self.files.client_ca else "")
        self._check_chain()
        self._warn_if_expiring()
        watcher = ContentWatcher(self.files.paths, self._on_change, baseline=contents)
        self._poller = Poller(self.reload_interval, watcher.check, self._warn_if_expiring, name="tls-reload")
        self._poller.start()
        return front

    def stop(self) -> None:
        if self._poller is not None:
            self._poller.stop()

    def status(self, now: dt.datetime | None = None) -> CertificateStatus:
        now = now or dt.datetime.now(dt.UTC)
        material = self._material
        if material is None:  # not serving in this process (an app built without a server): read the files
            material = read_material(self.files, read_contents(self.files.paths))
        ca = self._ca
        chains = None if ca is None else chains_to(material.leaf, material.intermediates, ca, now)
        problem = None
        if material.leaf.not_valid_after_utc <= now:
            problem = f"the served certificate expired at {_rfc3339(material.leaf)}"
        elif chains is False:
            problem = f"the served certificate does not chain to {self.files.ca}"
        return CertificateStatus(material.serial, material.leaf.not_valid_after_utc, chains, problem,
                                 self._reload_error)

    def _select(self, ssl_object: ssl.SSLObject | ssl.SSLSocket, server_name: str | None,
                listening: ssl.SSLContext) -> None:
        context = self._context
        if context is not None and context is not listening:
            ssl_object.context = context

    def _on_change(self, contents: Contents) -> None:
        if contents.get(self.files.ca) != self._ca_bytes:
            self._set_ca(contents.get(self.files.ca))
            log.info("%s changed: %s", self.files.ca, self._ca_problem or f"{len(self._ca or ())} CA certificate(s)")
            for listener in self._ca_listeners:
                try:
                    listener()
                except Exception:
                    log.exception("a listener for %s changes failed", self.files.ca)
        served = self._material
        if served is None:  # the watcher starts after the first load; never here
            return
        pair = (contents.get(self.files.cert), contents.get(self.files.key),
                contents.get(self.files.client_ca) if self.files.client_ca else None)
        if pair == (served.cert_pem, served.key_pem, served.client_ca_pem):
            self._reload_error = None
            self._check_chain()
            return
        try:
            material = read_material(self.files, contents)
            context = build_context(material)
        except CertificateError as exc:
            self._reload_error = str(exc)
            log.error("refused to reload TLS: %s; still serving serial %s (notAfter %s)",
                      exc, served.serial, _rfc3339(served.leaf))
            return
        self._material, self._context, self._reload_error = material, context, None
        self._warned_at = None
        log.info("reloaded TLS: %s", _what_changed(served, material))
        self._check_chain()
        self._warn_if_expiring()

    def _set_ca(self, data: bytes | None) -> None:
        self._ca_bytes = data
        if data is None:
            self._ca, self._ca_problem = None, f"{self.files.ca} is missing: cannot tell whether the certificate chains"
            return
        try:
            self._ca, self._ca_problem = tuple(parse_certificates(data, str(self.files.ca))), None
        except CertificateError as exc:
            self._ca, self._ca_problem = None, str(exc)

    def _check_chain(self) -> None:
        status = self.status()
        if status.chains_to_ca is False:
            log.warning("the served certificate (serial %s) does not chain to %s: an API server with that "
                        "caBundle will refuse it", status.serial, self.files.ca)

    def _warn_if_expiring(self) -> None:
        material = self._material
        if material is None:
            return
        left = material.leaf.not_valid_after_utc - dt.datetime.now(dt.UTC)
        if left > EXPIRY_WARNING:
            return
        clock = time.monotonic()
        if self._warned_at is not None and clock - self._warned_at < WARN_EVERY_SECONDS:
            return
        self._warned_at = clock
        if left <= dt.timedelta(0):
            log.error("the served certificate (serial %s) expired at %s", material.serial, _rfc3339(material.leaf))
        else:
            log.warning("the served certificate (serial %s) expires in %d days, at %s; renew it",
                        material.serial, left.days, _rfc3339(material.leaf))


def _rfc3339(cert: x509.Certificate) -> str:
    return rfc3339(cert.not_valid_after_utc)


def _what_changed(old: Material, new: Material) -> str:
    changes = []
    if new.serial != old.serial:
        changes.append(f"serving certificate serial {new.serial} (was {old.serial}), notAfter {_rfc3339(new.leaf)}")
    elif (new.cert_pem, new.key_pem) != (old.cert_pem, old.key_pem):
        changes.append(f"serving certificate serial {new.serial} again, now with {len(new.intermediates)} "
                       "intermediate certificate(s)")
    if new.client_ca_pem != old.client_ca_pem:
        changes.append("client CA reloaded")
    return "; ".join(changes)
