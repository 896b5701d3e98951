"""Start-up: check the policy, make certificates if there are none, then hand over to uvicorn."""

from __future__ import annotations

import functools
import logging

import uvicorn
from uvicorn.supervisors import Multiprocess

from webhook import __version__
from webhook.certs import CertFiles, ensure_certificates
from webhook.policy.model import load_policy
from webhook.server.app import create_app
from webhook.server.protocol import WebhookHttpProtocol
from webhook.server.tls_reload import ServingTLS
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


def serve(settings: ServeSettings) -> None:
    """Run until SIGTERM or SIGINT. A bad policy raises PolicyError, and an unusable certificate, key or
    client CA raises CertificateError, before anything binds."""
    policy = load_policy(settings.policy)
    prepare_certificates(settings)
    tls = ServingTLS.from_settings(settings)
    tls.check()
    config = uvicorn.Config(
        # One pickle carries both partials into each worker, so its app and SSL factory share `tls`.
        app=functools.partial(create_app, settings, tls),
        factory=True,
        host=settings.host,
        port=settings.port,
        ssl_context_factory=tls.uvicorn_factory,
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
