"""One typed settings object for ``serve``, built by the CLI and passed down; nothing reads the environment."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from webhook.kube.config import ClusterConfig
    from webhook.kube.registration import RegistrationOptions

DEFAULT_SERVICE = "admission-webhook"
# Where `webhook check` puts a namespaced object that names no namespace, as kubectl would.
DEFAULT_NAMESPACE = "default"
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ServeSettings:
    host: str = "0.0.0.0"  # noqa: S104 - a webhook listens on the pod IP
    port: int = 8443
    probe_port: int = 8081  # plain HTTP: /healthz, /readyz, /metrics; 0 turns it off
    cert_dir: Path = Path("certs")
    service_name: str = DEFAULT_SERVICE
    service_namespace: str = DEFAULT_SERVICE
    policy: Path | None = None
    max_body_bytes: int = 8 * MIB
    # A body that may hold more JSON values than this gets 413 before it is decoded: decoded
    # JSON costs up to 30 times its size, and a worker has 256 MiB.
    max_json_values: int = 500_000
    # Bytes a worker holds for all its clients (bodies arriving, answers not yet read); over it,
    # the connection holding the most is closed.
    max_buffered_bytes: int = 64 * MIB
    # Connections per worker; a newcomer at the limit displaces the longest-idle one.
    max_connections: int = 2048
    # An answer the client has not read this long after it stopped taking it closes the connection.
    write_timeout: float = 10.0
    workers: int = 1
    # Longer than the API server's 90 s idle timeout, so the server never closes a
    # connection that the API server is just about to reuse.
    keep_alive_seconds: int = 100
    # Each request, headers and body, must arrive within this many seconds of its first byte
    # (the first one, of the connection being made); a slower client is disconnected.
    request_read_timeout: float = 10.0
    # After SIGTERM: not ready at once, but keep serving this long before closing.
    drain_seconds: float = 5.0
    # Decide within this many seconds, or less when the API server's ?timeout= is shorter.
    eval_timeout: float = 2.0
    log_level: str = "info"
    log_format: str = "json"
    access_log: bool = False
    # With a client CA, every connection must present a certificate it signed; with allowed
    # names, the certificate's CN or a DNS SAN must be one of them.
    client_ca: Path | None = None
    client_allow_names: tuple[str, ...] = ()
    # How often mounted files (certificates, client CA) are read to notice changes.
    reload_interval: float = 1.0
    # The cluster, when serve talks to it (--kubeconfig, --register, or in a pod); None: never.
    cluster: ClusterConfig | None = None
    # What --register keeps in sync; None without --register.
    registration: RegistrationOptions | None = None
    require_permissions: bool = False
    permission_check_interval: float = 300.0
    request_timeout: float = 10.0

    @property
    def service_host(self) -> str:
        """The name the API server verifies: ``<svc>.<ns>.svc``."""
        return f"{self.service_name}.{self.service_namespace}.svc"


def rfc3339_moment(text: str) -> float:
    """``--at TIME`` of check and audit: an RFC 3339 time with a zone, as seconds since the epoch."""
    import argparse  # noqa: PLC0415 - only the commands that take --at need it

    from webhook.policy.scopes import parse_rfc3339  # noqa: PLC0415

    try:
        return parse_rfc3339(text).timestamp()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
