"""The cluster sub-commands, ``can-i``, ``register``, ``unregister`` and ``audit``, and serve's cluster flags.

Kept beside the rest of ``webhook/kube`` so ``cli.py`` stays a list of commands. Each
handler parses nothing and decides nothing itself: it builds the client, calls one module,
prints and returns the exit code.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from webhook.kube.access import (
    FEATURES,
    check,
    check_all,
    listed_features,
    missing,
    needed_for,
    parse_permission,
    table,
)
from webhook.kube.config import DEFAULT_TIMEOUT, ClusterConfig, ConfigError, in_cluster, load_config
from webhook.kube.registration import (
    RegistrationError,
    RegistrationOptions,
    build_configurations,
    check_options,
    policy_targets,
    read_ca_bundle,
    to_yaml,
)
from webhook.policy.model import PolicyError, load_policy
from webhook.settings import DEFAULT_SERVICE, rfc3339_moment

if TYPE_CHECKING:
    from webhook.kube.client import KubeClient

# The client (httpx) and what uses it are imported when a command runs, not when the
# parser is built: `serve` builds the same parser, and a worker should not carry them.

EXIT_NO = 1  # can-i said no; register lacks a permission
EXIT_USAGE = 2  # a flag or the kubeconfig is wrong
EXIT_API = 3  # the API server could not be reached, or refused us

EXIT_CODES = (
    "exit status: 0 success (can-i: yes); 1 can-i: no, or permissions missing; "
    "2 bad flags or kubeconfig; 3 the API server was unreachable or refused the call"
)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value:g} must be more than 0 seconds")
    return value


def cluster_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", type=Path, metavar="FILE",
                        help="kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster)")
    parser.add_argument("--context", metavar="NAME", help="kubeconfig context (default: current-context)")
    parser.add_argument("--request-timeout", type=_seconds, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help="timeout of each API call; failed calls are tried up to 4 times (default: %(default)s)")


def registration_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("webhook configuration")
    group.add_argument("--name", default=DEFAULT_SERVICE,
                       help="metadata.name of both configurations; the webhooks are "
                       "validate.NAME.sealyun.com and mutate.NAME.sealyun.com (default: %(default)s)")
    group.add_argument("--service-port", type=int, default=443, metavar="PORT",
                       help="the Service port the API server calls (default: %(default)s)")
    group.add_argument("--url", metavar="https://HOST[:PORT]",
                       help="call a webhook outside the cluster at URL/validate and URL/mutate, instead of the Service")
    group.add_argument("--validating-failure-policy", choices=["Fail", "Ignore"], default="Fail",
                       help="what the API server does when /validate cannot be called (default: %(default)s)")
    group.add_argument("--mutating-failure-policy", choices=["Fail", "Ignore"], default="Ignore",
                       help="what the API server does when /mutate cannot be called (default: %(default)s)")
    group.add_argument("--timeout-seconds", type=int, default=5, metavar="N",
                       help="how long the API server waits for an answer, 1-30 (default: %(default)s)")
    group.add_argument("--exclude-namespace", action="append", default=[], metavar="NS",
                       help="a namespace never sent to the webhooks, besides kube-system and the "
                       "service namespace (repeatable)")


def add_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    service_flags: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Add ``can-i``, ``register`` and ``unregister`` to the ``webhook`` sub-command parser."""
    can_i = commands.add_parser(
        "can-i", help="check a permission with SelfSubjectAccessReview, like kubectl auth can-i",
        description="Ask the API server whether we may do VERB on RESOURCE[.GROUP] [NAME]; prints yes or no "
        "and the reason. With --list, check every permission the webhook's features need.",
        epilog=EXIT_CODES,
    )
    can_i.add_argument("verb", nargs="?", metavar="VERB", help="get, list, watch, create, update, patch, delete, ...")
    can_i.add_argument("resource", nargs="?", metavar="RESOURCE[.GROUP]",
                       help="for example pods, deployments.apps, pods/ephemeralcontainers, or a URL path /healthz")
    can_i.add_argument("name", nargs="?", default="", metavar="NAME", help="one object's name")
    can_i.add_argument("-n", "--namespace", metavar="NS", help="namespace (default: the context's namespace)")
    can_i.add_argument("-A", "--all-namespaces", action="store_true", help="ask for every namespace")
    can_i.add_argument("--subresource", default="", metavar="SUB", help="a subresource, such as status or log")
    can_i.add_argument("--list", action="store_true",
                       help="check every permission the features need, as a table; exit 1 if any is missing")
    can_i.add_argument("--feature", action="append", choices=sorted(FEATURES), metavar="FEATURE",
                       help=f"with --list, only this feature's permissions ({', '.join(FEATURES)}; repeatable)")
    can_i.add_argument("--policy", type=Path, metavar="FILE",
                       help="with --list, the policy to serve: its namespaceSelector adds the namespaces feature "
                       "(default: the embedded one)")
    cluster_flags(can_i)

    reg = commands.add_parser(
        "register", help="create or update the webhook configurations",
        description="Create or update the ValidatingWebhookConfiguration and MutatingWebhookConfiguration. "
        "Checks permissions first and changes nothing when one is missing; a second run says 'unchanged'.",
        epilog=EXIT_CODES,
    )
    service_flags(reg)
    reg.add_argument("--ca-file", type=Path, metavar="FILE",
                     help="the CA the API server trusts for our certificate (default: CERT_DIR/ca.crt)")
    reg.add_argument("--no-ca-bundle", action="store_true",
                     help="leave caBundle out, for a CA injector or a --url with a public certificate")
    reg.add_argument("--dry-run", action="store_true", help="print the YAML that would be applied; touch nothing")
    reg.add_argument("--policy", type=Path, metavar="FILE",
                     help="the policy whose defaults name the custom resources to mutate (default: the embedded one)")
    registration_flags(reg)
    cluster_flags(reg)

    unreg = commands.add_parser(
        "unregister", help="delete both webhook configurations (break-glass)",
        description="Delete the ValidatingWebhookConfiguration and MutatingWebhookConfiguration, so the API "
        "server stops calling the webhook. The break-glass step when the webhook is down and blocks the cluster.",
        epilog=EXIT_CODES,
    )
    unreg.add_argument("--name", default=DEFAULT_SERVICE, help="metadata.name of both configurations "
                       "(default: %(default)s)")
    cluster_flags(unreg)
    _audit_parser(commands)
    from webhook.kube.doctor.command import add_parser as doctor_parser  # noqa: PLC0415 - it imports this module

    doctor_parser(commands)


def _audit_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = commands.add_parser(
        "audit", help="find what already runs in the cluster that the policy would deny",
        description="List Pods and the workload kinds (all namespaces, or -n NS) page by page, and report every "
        "object the validating webhook would deny, with the server's messages. With --watch, keep watching "
        "from the list's resourceVersion and report violations as they appear, are resolved or deleted.",
        epilog="exit status: 0 no violations (or a watch that was stopped, or --report's reports written); "
        "1 violations found; 2 bad flags, kubeconfig or policy; 3 the API server was unreachable or refused the "
        "call, or a permission is missing",
    )
    audit.add_argument("--policy", type=Path, metavar="FILE",
                       help="policy YAML file (default: the embedded default policy)")
    audit.add_argument("-n", "--namespace", metavar="NS", help="only this namespace (default: every namespace)")
    audit.add_argument("--watch", action="store_true",
                       help="after the list, watch and report changes until interrupted (SIGINT or SIGTERM)")
    audit.add_argument("-o", "--output", choices=["table", "json"], default="table",
                       help="a table, or one JSON object per line (default: %(default)s)")
    audit.add_argument("--chunk-size", type=_page_size, default=500, metavar="N",
                       help="objects per list page, sent as limit= (default: %(default)s)")
    audit.add_argument("--at", type=rfc3339_moment, metavar="TIME",
                       help="judge as of this RFC 3339 time, e.g. to see what breaks when an exception expires "
                       "(default: now)")
    audit.add_argument("--report", action="store_true",
                       help="also write every result as PolicyReports (wgpolicyk8s.io/v1alpha2), one per namespace, "
                       "and prune the rest; exit status 0 once written, violations or not; not with --watch or --at")
    cluster_flags(audit)


def _page_size(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def serve_flags(serve: argparse.ArgumentParser) -> None:
    group = serve.add_argument_group("cluster access")
    group.add_argument("--kubeconfig", type=Path, metavar="FILE",
                       help="talk to this cluster (in a pod, the service account is used without this flag)")
    group.add_argument("--context", metavar="NAME", help="kubeconfig context (default: current-context)")
    group.add_argument("--register", action="store_true",
                       help="create or update the webhook configurations at start and keep their caBundle in sync")
    group.add_argument("--require-permissions", action="store_true",
                       help="exit at start when a needed permission is missing or the API cannot be reached")
    group.add_argument("--permission-check-interval", type=_seconds, default=300.0, metavar="SECONDS",
                       help="how often permissions are checked again (default: %(default)s)")
    group.add_argument("--request-timeout", type=_seconds, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                       help="timeout of each API call (default: %(default)s)")
    registration_flags(serve)


def serve_cluster(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, Any]:
    """The ServeSettings fields for the cluster: only with --kubeconfig, --register, or in a pod."""
    wanted = args.kubeconfig is not None or args.register or in_cluster(environ)
    cluster = load_config(args.kubeconfig, args.context, environ) if wanted else None
    return {
        "cluster": cluster,
        "registration": check_options(_options(args)) if args.register else None,
        "require_permissions": args.require_permissions,
        "permission_check_interval": args.permission_check_interval,
        "request_timeout": args.request_timeout,
    }


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run one cluster command; every failure becomes one ``webhook: error:`` line and an exit code."""
    from webhook.kube.apply import PermissionsMissing  # noqa: PLC0415 - see the note at the top
    from webhook.kube.client import KubeError  # noqa: PLC0415

    try:
        if args.command == "can-i":
            return _can_i(args, environ)
        if args.command == "register":
            return _register(args, environ)
        if args.command == "audit":
            return _audit(args, environ)
        if args.command == "doctor":
            from webhook.kube.doctor.command import run as doctor  # noqa: PLC0415

            return doctor(args, environ)
        return _unregister(args, environ)
    except (ConfigError, RegistrationError, PolicyError) as exc:
        return _fail(exc, EXIT_USAGE)
    except PermissionsMissing as exc:
        return _fail(exc, EXIT_NO)
    except KubeError as exc:
        return _fail(exc, EXIT_API)


def _can_i(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    if args.list == bool(args.verb):
        raise ConfigError("give VERB and RESOURCE, or --list" if not args.list else "--list takes no VERB or RESOURCE")
    if args.verb and not args.resource:
        raise ConfigError("give a RESOURCE after the VERB, for example: webhook can-i list pods")
    if (args.feature or args.policy) and not args.list:
        raise ConfigError(f"{'--feature' if args.feature else '--policy'} goes with --list")
    features = args.feature or listed_features(load_policy(args.policy).needs_namespace_labels)
    with _client(args, environ) as client:
        if args.list:
            results = check_all(client, needed_for(features))
            print(table(results))
            absent = missing(results)
            print(f"\n{len(absent)} of {len(results)} permissions missing" if absent
                  else f"\nall {len(results)} permissions granted")
            return EXIT_NO if absent else 0
        namespace = "" if args.all_namespaces else args.namespace
        permission = parse_permission(args.verb, args.resource, args.name, namespace=namespace,
                                      default_namespace=client.config.namespace, subresource=args.subresource)
        access = check(client, permission)
        print(access.answer)
        return 0 if access.allowed else EXIT_NO


def _register(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    options = _options(args)
    bundle = None if args.no_ca_bundle else read_ca_bundle(args.ca_file or args.cert_dir / "ca.crt")
    configurations = build_configurations(options, bundle)
    if args.dry_run:
        sys.stdout.write(to_yaml(configurations))
        return 0
    from webhook.kube.apply import register  # noqa: PLC0415

    with _client(args, environ) as client:
        for outcome in register(client, configurations):
            print(outcome)
    return 0


def _audit(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from webhook.kube import audit, reports  # noqa: PLC0415

    if args.report and (args.watch or args.at is not None):
        # Reports are rebuilt from one whole list, and say what holds now, not at another time.
        other = "--watch" if args.watch else "--at"
        raise ConfigError(f"--report writes what one list finds now, so it does not go with {other}")
    policy = load_policy(args.policy)
    stop = threading.Event()

    def on_signal(sig: int, frame: object) -> None:
        # A handler runs on the main thread, which may be inside stop.wait() holding the event's
        # lock: setting it from here could deadlock, so another thread sets it.
        threading.Thread(target=stop.set, name="stop", daemon=True).start()

    # SIGTERM (a pod being stopped) and, in a watch, Ctrl-C end it cleanly, with status 0.
    handled = (signal.SIGTERM, signal.SIGINT) if args.watch else (signal.SIGTERM,)
    previous = {sig: signal.signal(sig, on_signal) for sig in handled}
    try:
        with _client(args, environ) as client:
            if args.report:
                return reports.run(client, policy, namespace=args.namespace, chunk_size=args.chunk_size,
                                   output=args.output, out=sys.stdout, err=sys.stderr, stop=stop)
            return audit.run(client, policy, namespace=args.namespace, watch=args.watch, chunk_size=args.chunk_size,
                             output=args.output, out=sys.stdout, err=sys.stderr, stop=stop, at=args.at)
    except KeyboardInterrupt:  # Ctrl-C during a one-off list
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def namespace_labels(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, Mapping[str, str]]:
    """``check --kubeconfig``: every namespace's labels. Raises KubeError when the cluster cannot be read."""
    from webhook.kube.client import KubeClient  # noqa: PLC0415 - see the note at the top
    from webhook.kube.namespaces import list_labels  # noqa: PLC0415

    with KubeClient(load_config(args.kubeconfig, args.context, environ), timeout=DEFAULT_TIMEOUT) as client:
        return list_labels(client)


def _unregister(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from webhook.kube.apply import unregister  # noqa: PLC0415

    with _client(args, environ) as client:
        for outcome in unregister(client, args.name):
            print(outcome)
    return 0


def _options(args: argparse.Namespace) -> RegistrationOptions:
    return RegistrationOptions(
        name=args.name,
        service_name=args.service_name,
        service_namespace=args.service_namespace,
        service_port=args.service_port,
        url=args.url,
        validating_failure_policy=args.validating_failure_policy,
        mutating_failure_policy=args.mutating_failure_policy,
        timeout_seconds=args.timeout_seconds,
        exclude_namespaces=tuple(args.exclude_namespace),
        custom_resources=policy_targets(load_policy(args.policy)),
    )


def _client(args: argparse.Namespace, environ: Mapping[str, str]) -> KubeClient:
    from webhook.kube.client import KubeClient  # noqa: PLC0415

    config: ClusterConfig = load_config(args.kubeconfig, args.context, environ)
    return KubeClient(config, timeout=args.request_timeout)


def _fail(exc: Exception, code: int) -> int:
    print(f"webhook: error: {exc}", file=sys.stderr)
    return code
