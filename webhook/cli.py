"""The ``webhook`` command: parse arguments, call one module, print, set the exit code."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from webhook import __version__
from webhook.certs import ca_bundle_base64, ensure_certificates
from webhook.kube import commands as kube_commands
from webhook.kube.config import ConfigError
from webhook.logs import configure_logging
from webhook.policy.model import PolicyError
from webhook.settings import DEFAULT_SERVICE, MIB, ServeSettings

EXIT_USAGE = 2


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= 300:
        raise argparse.ArgumentTypeError(f"{value} must be between 0 and 300 seconds")
    return value


def _probe_port(text: str) -> int:
    return 0 if text.strip() == "0" else _port(text)


def _port(text: str) -> int:
    value = _positive(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port (1-65535)")
    return value


def _service_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cert-dir", type=Path, default=Path("certs"), metavar="DIR",
                        help="directory of tls.crt, tls.key and ca.crt (default: %(default)s)")
    parser.add_argument("--service-name", default=DEFAULT_SERVICE, metavar="NAME",
                        help="the webhook's Service name, for certificate names (default: %(default)s)")
    parser.add_argument("--service-namespace", default=DEFAULT_SERVICE, metavar="NS",
                        help="the Service's namespace (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="webhook",
        description="A Kubernetes admission webhook: an image-registry allowlist and custom-resource defaulting.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser(
        "serve", help="serve the webhooks over HTTPS",
        description="Serve POST /validate and POST /mutate over HTTPS, with GET /healthz and /readyz. "
        "Without a certificate in --cert-dir, a CA and a serving certificate are generated there.",
    )
    serve.add_argument("--host", default="0.0.0.0", help="address to listen on (default: %(default)s)")  # noqa: S104
    serve.add_argument("--port", type=_port, default=8443, help="HTTPS port (default: %(default)s)")
    serve.add_argument("--probe-port", type=_probe_port, default=8081, metavar="PORT",
                       help="plain-HTTP port for /healthz, /readyz and /metrics; 0 turns it off (default: %(default)s)")
    _service_flags(serve)
    serve.add_argument("--policy", type=Path, metavar="FILE",
                       help="policy YAML file (default: the embedded default policy)")
    serve.add_argument("--max-body-bytes", type=_positive, default=8 * MIB, metavar="N",
                       help="largest request body accepted; larger ones get 413 (default: %(default)s)")
    serve.add_argument("--workers", type=_positive, default=1, metavar="N",
                       help="worker processes (default: %(default)s)")
    serve.add_argument("--drain-seconds", type=_seconds, default=5.0, metavar="S",
                       help="after SIGTERM, report not-ready but keep serving this long (default: %(default)s)")
    serve.add_argument("--eval-timeout", type=_seconds, default=2.0, metavar="S",
                       help="answer within this many seconds, or sooner when the API server's ?timeout= is "
                       "shorter; an overrun is answered as the policy's failureMode says (default: %(default)s)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                       help="(default: %(default)s)")
    serve.add_argument("--log-format", default="json", choices=["json", "text"],
                       help="JSON lines for log pipelines, or text for people (default: %(default)s)")
    serve.add_argument("--access-log", action="store_true",
                       help="log every request (costs about a fifth of throughput)")
    kube_commands.serve_flags(serve)

    certs = commands.add_parser(
        "certs", help="create or renew the CA and serving certificate",
        description="Create a CA and a serving certificate for <svc>.<ns>.svc in --cert-dir. "
        "A CA that is still valid is kept; the serving certificate is re-issued when it is missing, "
        "names other hosts, or has less than a third of its lifetime left.",
    )
    _service_flags(certs)
    certs.add_argument("--print-ca-bundle", action="store_true",
                       help="print the base64 caBundle for a webhook configuration, and nothing else")
    kube_commands.add_commands(commands, _service_flags)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "certs":
            return _certs(args)
        if args.command in ("can-i", "register", "unregister"):
            return kube_commands.run(args, os.environ)
    except (PolicyError, ConfigError) as exc:
        print(f"webhook: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    raise AssertionError(f"unhandled command {args.command}")


def _serve(args: argparse.Namespace) -> int:
    from webhook.server.run import serve  # noqa: PLC0415 - import the server stack only to serve

    configure_logging(args.log_level, args.log_format)
    settings = ServeSettings(
        host=args.host,
        port=args.port,
        probe_port=args.probe_port,
        cert_dir=args.cert_dir,
        service_name=args.service_name,
        service_namespace=args.service_namespace,
        policy=args.policy,
        max_body_bytes=args.max_body_bytes,
        workers=args.workers,
        drain_seconds=args.drain_seconds,
        eval_timeout=args.eval_timeout,
        log_level=args.log_level,
        log_format=args.log_format,
        access_log=args.access_log,
        **kube_commands.serve_cluster(args, os.environ),
    )
    return serve(settings)


def _certs(args: argparse.Namespace) -> int:
    result = ensure_certificates(args.cert_dir, args.service_name, args.service_namespace)
    if args.print_ca_bundle:
        print(ca_bundle_base64(result.files.ca_crt))
        return 0
    ca = "created" if result.generated_ca else "kept (still valid)"
    leaf = "issued" if result.issued_leaf else "kept (still valid)"
    print(f"CA {ca}: {result.files.ca_crt}")
    print(f"serving certificate {leaf}: {result.files.tls_crt} for {args.service_name}.{args.service_namespace}.svc")
    return 0
