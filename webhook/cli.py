"""The ``webhook`` command: parse arguments, call one module, print, set the exit code."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from webhook import __version__
from webhook.certs import CA_VALIDITY, LEAF_VALIDITY, CertOptions, ca_bundle_base64, ensure_certificates
from webhook.kube import commands as kube_commands
from webhook.kube.config import ConfigError
from webhook.logs import configure_logging
from webhook.pki import CertificateError, KeySpec
from webhook.policy.model import PolicyError, load_policy
from webhook.settings import DEFAULT_NAMESPACE, DEFAULT_SERVICE, MIB, ServeSettings, rfc3339_moment

EXIT_USAGE = 2
_SERVE_DEFAULTS = ServeSettings()
SERVE_EXIT_CODES = (
    "exit status: 0 stopped by SIGTERM (after the drain) or SIGINT; 1 --require-permissions found a permission "
    "missing; 2 a bad flag, policy, certificate, certificate directory, or a port that cannot be listened on "
    "(one 'webhook: error:' line says which, before anything listens)"
)
CERTS_EXIT_CODES = (
    "exit status: 0 done; 2 a bad flag, a certificate or key that does not parse, or a certificate directory that "
    "cannot be read, written or safely completed (one 'webhook: error:' line says what is missing and what to run)"
)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _seconds_between(low: float, high: float) -> Callable[[str], float]:
    """An argparse type for a number of seconds in [low, high], with a message that says so."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value:g} must be between {low:g} and {high:g} seconds")
        return value

    return parse


_seconds = _seconds_between(0, 300)
_interval = _seconds_between(0.01, 3600)


def _probe_port(text: str) -> int:
    return 0 if text.strip() == "0" else _port(text)


def _port(text: str) -> int:
    value = _positive(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port (1-65535)")
    return value


_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def _duration(text: str) -> dt.timedelta:
    """``365d``, ``8760h`` or ``90m``: a unit is required, so nobody guesses whether 30 means days."""
    match = re.fullmatch(r"(\d+)([dhm])", text.strip())
    if not match or int(match[1]) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 365d, 720h or 90m")
    return dt.timedelta(**{_UNITS[match[2]]: int(match[1])})


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
        "Without a certificate in --cert-dir, a CA and a serving certificate are generated there; "
        "a directory with only some of the files is completed or refused as `webhook certs` would.",
        epilog=SERVE_EXIT_CODES,
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
    serve.add_argument("--max-json-values", type=_positive, default=_SERVE_DEFAULTS.max_json_values, metavar="N",
                       help="refuse with 413, before decoding, a body that may hold more JSON values than this: "
                       "decoding costs up to 30 bytes of memory per byte of such a body (default: %(default)s)")
    serve.add_argument("--max-buffered-bytes", type=_positive, default=_SERVE_DEFAULTS.max_buffered_bytes, metavar="N",
                       help="bytes a worker holds for all its clients together (bodies still arriving, answers not "
                       "yet read); past it, the connection holding the most is closed (default: %(default)s)")
    serve.add_argument("--max-connections", type=_positive, default=_SERVE_DEFAULTS.max_connections, metavar="N",
                       help="connections per worker; a new one at the limit displaces the longest-idle one "
                       "(default: %(default)s)")
    serve.add_argument("--write-timeout", type=_interval, default=_SERVE_DEFAULTS.write_timeout, metavar="SECONDS",
                       help="close a connection whose client has not read its answer this long after it stopped "
                       "taking it (default: %(default)s)")
    serve.add_argument("--request-read-timeout", type=_interval, default=10.0, metavar="SECONDS",
                       help="disconnect a client that has not sent a whole request (headers and body) this long "
                       "after its first byte, or after connecting (default: %(default)s)")
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
    serve.add_argument("--client-ca", type=Path, metavar="FILE",
                       help="require a client certificate signed by a CA in FILE on every path of the HTTPS port, "
                       "probes included; the plain-HTTP probe port needs none (reloaded on change)")
    serve.add_argument("--client-allow-name", action="append", default=[], metavar="NAME",
                       help="with --client-ca: accept only client certificates with this subject CN or DNS SAN; "
                       "repeatable; others get 401")
    serve.add_argument("--reload-interval", type=_interval, default=1.0, metavar="SECONDS",
                       help="how often tls.crt, tls.key, ca.crt and the client CA are checked for changes "
                       "(default: %(default)s)")
    kube_commands.serve_flags(serve)

    certs = commands.add_parser(
        "certs", help="create or renew the CA and serving certificate",
        description="Create a CA and a serving certificate for <svc>.<ns>.svc in --cert-dir. "
        "A CA that is still valid is kept; the serving certificate is re-issued when it is missing, "
        "names other hosts, has another key type, or has less than --renew-before left. "
        "--rotate-ca replaces the CA in three runs (see docs/operations.md). A CA that clients may trust is never "
        "replaced on its own: a directory that holds only some of the files is completed only where every "
        "client keeps working, and is otherwise refused with what is missing and what to run.",
        epilog=CERTS_EXIT_CODES,
    )
    _service_flags(certs)
    certs.add_argument("--key-type", choices=["ecdsa", "rsa"],
                       help="key type of new keys: ECDSA P-256 or RSA (default: ecdsa)")
    certs.add_argument("--rsa-bits", type=int, choices=[2048, 3072], metavar="{2048,3072}",
                       help="RSA key size with --key-type rsa (default: 2048)")
    certs.add_argument("--ca-validity", type=_duration, metavar="DURATION",
                       help="lifetime of a new CA, such as 3650d or 87600h (default: 3650d)")
    certs.add_argument("--leaf-validity", type=_duration, metavar="DURATION",
                       help="lifetime of a new serving certificate (default: 365d)")
    certs.add_argument("--renew-before", type=_duration, metavar="DURATION",
                       help="re-issue the serving certificate when less than this is left "
                       "(default: a third of its lifetime)")
    certs.add_argument("--rotate-ca", action="store_true",
                       help="take the CA rotation one stage further: 1) publish a new CA beside the old one, "
                       "2) sign the serving certificate with it, 3) drop the old CA")
    certs.add_argument("--print-ca-bundle", action="store_true",
                       help="only print the base64 of --cert-dir's ca.crt, for a caBundle; writes nothing, so it "
                       "cannot be combined with --rotate-ca, key or validity flags")
    kube_commands.add_commands(commands, _service_flags)
    _check_parser(commands)
    return parser


def _check_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = commands.add_parser(
        "check", help="judge manifest files offline, as the webhooks would",
        description="Run each object in the YAML or JSON files (directories recursively, - for stdin) through the "
        "mutating and then the validating webhook, as a CREATE, exactly as the server would answer it.",
        epilog="exit status: 0 everything allowed; 1 something denied; 2 unreadable input or a bad policy; "
        "3 --kubeconfig's cluster could not be read",
    )
    check.add_argument("paths", nargs="+", metavar="PATH", help="a file, a directory, or - for stdin")
    check.add_argument("--policy", type=Path, metavar="FILE",
                       help="policy YAML file (default: the embedded default policy)")
    check.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table",
                       help="table; json with each JSONPatch; or yaml, the objects as they would be stored "
                       "(default: %(default)s)")
    check.add_argument("-n", "--namespace", default=DEFAULT_NAMESPACE, metavar="NS",
                       help="namespace of objects that name none (default: %(default)s)")
    check.add_argument("--at", type=rfc3339_moment, metavar="TIME",
                       help="judge as of this RFC 3339 time, e.g. to see what breaks when an exception expires "
                       "(default: now)")
    check.add_argument("--kubeconfig", type=Path, metavar="FILE",
                       help="read namespace labels for the policy's namespaceSelector from this cluster; Namespace "
                       "objects among the inputs win (default: only the inputs; check never calls a cluster unasked)")
    check.add_argument("--context", metavar="NAME", help="with --kubeconfig, its context (default: current-context)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_combinations(parser, args)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "certs":
            return _certs(args)
        if args.command in ("can-i", "register", "unregister", "audit", "doctor"):
            return kube_commands.run(args, os.environ)
        if args.command == "check":
            return _check(args)
    except (PolicyError, ConfigError, CertificateError) as exc:
        return _error(exc)
    except KeyboardInterrupt:
        return 130
    raise AssertionError(f"unhandled command {args.command}")


def _error(problem: Exception) -> int:
    print(f"webhook: error: {problem}", file=sys.stderr)
    return EXIT_USAGE


def _check_combinations(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.command == "serve" and args.client_allow_name and args.client_ca is None:
        parser.error("--client-allow-name needs --client-ca")
    if args.command == "certs":
        if args.print_ca_bundle:
            writing = [flag for flag, value in (
                ("--rotate-ca", args.rotate_ca), ("--key-type", args.key_type), ("--rsa-bits", args.rsa_bits),
                ("--ca-validity", args.ca_validity), ("--leaf-validity", args.leaf_validity),
                ("--renew-before", args.renew_before)) if value]
            if writing:
                parser.error(f"--print-ca-bundle only reads ca.crt and cannot be combined with {', '.join(writing)}; "
                             "run `webhook certs` with those first, then --print-ca-bundle on its own")
        args.key_type = args.key_type or "ecdsa"
        args.ca_validity = args.ca_validity or CA_VALIDITY
        args.leaf_validity = args.leaf_validity or LEAF_VALIDITY
        if args.rsa_bits is not None and args.key_type != "rsa":
            parser.error("--rsa-bits needs --key-type rsa")
        if args.renew_before is not None and args.renew_before >= args.leaf_validity:
            parser.error("--renew-before must be shorter than --leaf-validity, or every run re-issues")
        if args.leaf_validity > args.ca_validity:
            parser.error("--leaf-validity must not be longer than --ca-validity")


def _check(args: argparse.Namespace) -> int:
    from webhook import check  # noqa: PLC0415 - like the server stack, only for its command
    from webhook.manifests import read  # noqa: PLC0415

    policy = load_policy(args.policy)
    cluster_labels = None
    if args.kubeconfig is not None and policy.needs_namespace_labels:
        from webhook.kube.client import KubeError  # noqa: PLC0415

        try:
            cluster_labels = kube_commands.namespace_labels(args, os.environ)
        except KubeError as exc:
            print(f"webhook: error: namespace labels from {args.kubeconfig}: {exc}", file=sys.stderr)
            return kube_commands.EXIT_API
    return check.run(read(args.paths, sys.stdin.buffer), policy, output=args.output, namespace=args.namespace,
                     out=sys.stdout, err=sys.stderr, at=args.at, cluster_labels=cluster_labels)


def _serve(args: argparse.Namespace) -> int:
    from webhook.server.listen import ListenError  # noqa: PLC0415 - import the server stack only to serve
    from webhook.server.run import serve  # noqa: PLC0415

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
        max_json_values=args.max_json_values,
        max_buffered_bytes=args.max_buffered_bytes,
        max_connections=args.max_connections,
        write_timeout=args.write_timeout,
        request_read_timeout=args.request_read_timeout,
        workers=args.workers,
        drain_seconds=args.drain_seconds,
        eval_timeout=args.eval_timeout,
        log_level=args.log_level,
        log_format=args.log_format,
        access_log=args.access_log,
        client_ca=args.client_ca,
        client_allow_names=tuple(args.client_allow_name),
        reload_interval=args.reload_interval,
        **kube_commands.serve_cluster(args, os.environ),
    )
    try:
        return serve(settings)
    except ListenError as exc:
        return _error(exc)


def _certs(args: argparse.Namespace) -> int:
    if args.print_ca_bundle:
        print(ca_bundle_base64(args.cert_dir / "ca.crt"))
        return 0
    options = CertOptions(
        key=KeySpec(args.key_type, args.rsa_bits or 2048),
        ca_validity=args.ca_validity,
        leaf_validity=args.leaf_validity,
        renew_before=args.renew_before,
    )
    result = ensure_certificates(args.cert_dir, args.service_name, args.service_namespace, options=options,
                                 rotate_ca=args.rotate_ca)
    ca = "created" if result.generated_ca else "kept (still valid)"
    leaf = "issued" if result.issued_leaf else "kept (still valid)"
    print(f"CA {ca}: {result.files.ca_crt}")
    print(f"serving certificate {leaf}: {result.files.tls_crt} for {args.service_name}.{args.service_namespace}.svc")
    for note in result.notes:
        print(note)
    return 0
