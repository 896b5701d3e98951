"""Start-up: check the policy, make certificates if there are none, then run the workers."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import socket
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import uvicorn
from prometheus_client.multiprocess import mark_process_dead

from webhook import __version__
from webhook.certdir import make_directory
from webhook.certs import CertFiles, ensure_certificates, read_certificate
from webhook.logs import configure_logging
from webhook.policy.model import load_policy
from webhook.server.app import ServerState, create_app, create_probe_app
from webhook.server.budget import ClientLimits
from webhook.server.heap import fix_mmap_threshold
from webhook.server.lifecycle import DrainingServer, Lifecycle
from webhook.server.limits import raise_open_file_limit
from webhook.server.listen import ListenError, bind
from webhook.server.policy_reload import refuse_unservable, warn_of_expired
from webhook.server.protocol import Direct, WebhookHttpProtocol
from webhook.server.supervisor import supervise
from webhook.server.telemetry import MULTIPROCESS_ENV, Telemetry
from webhook.server.tls_reload import ServingTLS
from webhook.settings import ServeSettings

if TYPE_CHECKING:
    from webhook.kube.config import ClusterConfig

log = logging.getLogger("webhook.server")
# In-flight requests get this long after the drain; the API server's own timeout is at most 30 s.
IN_FLIGHT_GRACE_SECONDS = 10


def prepare_certificates(settings: ServeSettings) -> CertFiles:
    """Serve a mounted pair as it is. Without one, complete the directory as ``webhook certs`` would:
    a new CA only where there is none, a new pair under ``ca.key`` where one was lost, and otherwise a
    ``CertificateError`` saying what is missing, since a new CA would break every client of the old."""
    files = CertFiles(settings.cert_dir)
    make_directory(settings.cert_dir)  # a file in its place, or an uncreatable path, is named as such first
    if files.serving_pair_present():
        return files
    result = ensure_certificates(settings.cert_dir, settings.service_name, settings.service_namespace)
    if result.generated_ca:
        log.info("no serving certificate in %s: generated one for %s; trust the CA at %s",
                 settings.cert_dir, settings.service_host, result.files.ca_crt)
    elif not result.notes:
        log.info("no serving certificate in %s: issued one for %s under the CA in %s",
                 settings.cert_dir, settings.service_host, result.files.ca_crt)
    for note in result.notes:
        log.warning("%s", note)
    return files


@dataclass(frozen=True)
class Listeners:
    """What the parent sets up once and shares with every worker."""

    https: socket.socket
    probe: socket.socket | None
    metrics_dir: str | None = None  # prometheus-client multiprocess files, with several workers

    @classmethod
    def bind(cls, settings: ServeSettings) -> Listeners:
        """Both ports, or a ListenError naming the flag and the address; nothing half-bound is left."""
        https = bind(settings.host, settings.port, "--port")
        try:
            probe = bind(settings.host, settings.probe_port, "--probe-port") if settings.probe_port else None
        except ListenError:
            https.close()
            raise
        return cls(https, probe)

    def close(self) -> None:
        self.https.close()
        if self.probe is not None:
            self.probe.close()


def https_config(settings: ServeSettings, app: Any, tls: ServingTLS, direct: Direct | None = None) -> uvicorn.Config:
    return uvicorn.Config(
        app=app,
        host=settings.host,
        port=settings.port,
        ssl_context_factory=tls.uvicorn_factory,  # the worker's reloading TLS
        http=WebhookHttpProtocol.configured(settings.request_read_timeout, direct=direct,
                                            limits=ClientLimits.from_settings(settings)),
        loop="uvloop",
        lifespan="off",
        access_log=settings.access_log,
        log_config=None,
        server_header=False,
        proxy_headers=False,  # the API server calls us directly: X-Forwarded-* is never to be trusted
        timeout_keep_alive=settings.keep_alive_seconds,
        timeout_graceful_shutdown=IN_FLIGHT_GRACE_SECONDS,
    )


def probe_config(settings: ServeSettings, app: Any) -> uvicorn.Config:
    # The same access_log as the HTTPS port: uvicorn's access logger is process-wide, and a config
    # with access_log=False strips its handlers, which would silence --access-log everywhere.
    return uvicorn.Config(
        app=app, host=settings.host, port=settings.probe_port,
        http=WebhookHttpProtocol.configured(settings.request_read_timeout,
                                            limits=ClientLimits.from_settings(settings)), loop="uvloop",
        lifespan="off", access_log=settings.access_log, log_config=None, server_header=False, proxy_headers=False,
    )


def run_worker(settings: ServeSettings, listeners: Listeners) -> None:
    """One serving process, on the sockets the parent bound: its own TLS context, policy, apps and drain state."""
    configure_logging(settings.log_level, settings.log_format)
    fix_mmap_threshold()
    lifecycle = Lifecycle()
    tls = ServingTLS.from_settings(settings)
    state = ServerState.load(settings, lifecycle, Telemetry(listeners.metrics_dir), tls)
    probe = probe_config(settings, create_probe_app(state)) if settings.probe_port else None
    app, direct = create_app(settings, state)
    server = DrainingServer(
        https_config(settings, app, tls, direct), lifecycle, settings.drain_seconds,
        probe=probe, probe_sockets=[listeners.probe] if listeners.probe else None,
    )
    server.run(sockets=[listeners.https])


def _connect_at_start(cluster: ClusterConfig, **options: Any) -> bool:
    """The cluster stack (httpx and all) is imported only when a cluster is configured."""
    from webhook.kube.monitor import connect_at_start  # noqa: PLC0415

    return connect_at_start(cluster, **options)


def serve(settings: ServeSettings) -> int:
    """Run until SIGTERM (drain, then exit 0) or SIGINT. A bad policy raises PolicyError, and an
    unusable certificate directory CertificateError, before anything binds; a port that cannot be
    bound raises ListenError before anything is announced or registered.

    Returns 1 without serving when --require-permissions finds a permission missing. The
    configurations are never deleted on the way out: with several replicas, that would
    switch admission off for all of them.
    """
    policy = load_policy(settings.policy)
    refuse_unservable(policy, cluster=settings.cluster is not None)
    warn_of_expired(policy)
    files = prepare_certificates(settings)
    ServingTLS.from_settings(settings).check()  # an unusable pair or client CA: CertificateError, nothing bound
    raise_open_file_limit()
    listeners = Listeners.bind(settings)
    try:
        return _serve_on(settings, listeners, files, policy_source=policy.source, policy_sha256=policy.sha256,
                         reads_namespaces=policy.needs_namespace_labels)
    finally:
        listeners.close()


def _serve_on(settings: ServeSettings, listeners: Listeners, files: CertFiles, *, policy_source: str,
              policy_sha256: str, reads_namespaces: bool) -> int:
    if settings.cluster is not None and not _connect_at_start(
        settings.cluster, timeout=settings.request_timeout, require_permissions=settings.require_permissions,
        registration=settings.registration, ca_file=files.ca_crt, reads_namespaces=reads_namespaces,
    ):
        return 1
    not_after = read_certificate(files.tls_crt).not_valid_after_utc
    probes = f"http://{settings.host}:{settings.probe_port}" if settings.probe_port else "off"
    log.info(
        "admission-webhook %s serving https://%s:%d (workers=%d), probes %s, policy %s sha256:%s, "
        "certificate notAfter %s",
        __version__, settings.host, settings.port, settings.workers, probes, policy_source, policy_sha256[:12],
        not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
        extra={"fields": {"version": __version__, "listen": f"{settings.host}:{settings.port}",
                          "probeListen": f"{settings.host}:{settings.probe_port}" if settings.probe_port else None,
                          "policySha256": policy_sha256, "certificateNotAfter": not_after.isoformat()}},
    )
    if settings.workers == 1:
        run_worker(settings, listeners)
        return 0
    with tempfile.TemporaryDirectory(prefix="webhook-metrics-") as metrics_dir:
        # Spawned workers inherit this before they import prometheus_client.
        os.environ[MULTIPROCESS_ENV] = metrics_dir
        supervise(settings, dataclasses.replace(listeners, metrics_dir=metrics_dir), run_worker,
                  on_exit=functools.partial(mark_process_dead, path=metrics_dir))
    return 0
