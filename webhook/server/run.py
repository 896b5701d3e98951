"""Start-up: check the policy, make certificates if there are none, then hand over to uvicorn."""

from __future__ import annotations

import functools
import logging

import uvicorn
from uvicorn.supervisors import Multiprocess

from webhook import __version__
from webhook.certs import CertFiles, ensure_certificates
from webhook.kube.monitor import connect_at_start
from webhook.policy.model import load_policy
from webhook.server.app import create_app
from webhook.server.protocol import WebhookHttpProtocol
from webhook.server.tls import uvicorn_factory
from webhook.settings import ServeSettings

log = logging.getLogger("webhook.server")


def prepare_certificates(settings: ServeSettings) -> CertFiles:
    """Serve a mounted pair as it is; generate a CA and a serving certificate only when none is there."""
    files = CertFiles(settings.cert_dir)
    if files.serving_pair_present():
        return files
    result = ensure_certificates(settings.cert_dir, settings.service_name, settings.service_namespace)
    log.info(
        "no serving certificate in %s: generated one for %s; trust the CA at %s",
        settings.cert_dir, settings.service_host, result.files.ca_crt,
    )
    return files


def serve(settings: ServeSettings) -> int:
    """Run until SIGTERM or SIGINT. A bad policy raises PolicyError before anything binds.

    Returns 1 without serving when --require-permissions finds a permission missing. The
    configurations are never deleted on the way out: with several replicas, that would
    switch admission off for all of them.
    """
    policy = load_policy(settings.policy)
    files = prepare_certificates(settings)
    if settings.cluster is not None and not connect_at_start(
        settings.cluster, timeout=settings.request_timeout, require_permissions=settings.require_permissions,
        registration=settings.registration, ca_file=files.ca_crt,
    ):
        return 1
    config = uvicorn.Config(
        app=functools.partial(create_app, settings),
        factory=True,
        host=settings.host,
        port=settings.port,
        ssl_context_factory=functools.partial(uvicorn_factory, files.tls_crt, files.tls_key),
        http=WebhookHttpProtocol,
        loop="uvloop",
        lifespan="off",
        workers=settings.workers,
        access_log=settings.access_log,
        log_config=None,
        server_header=False,
        timeout_keep_alive=settings.keep_alive_seconds,
    )
    log.info(
        "admission-webhook %s serving https://%s:%d (workers=%d), policy %s sha256:%s",
        __version__, settings.host, settings.port, settings.workers, policy.source, policy.sha256[:12],
    )
    if settings.workers > 1:
        Multiprocess(config, sockets=[config.bind_socket()]).run()
    else:
        uvicorn.Server(config).run()
    return 0
