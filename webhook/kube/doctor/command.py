"""The ``doctor`` sub-command: its flags and its handler, kept out of ``commands.py``.

The flags are those of the other cluster commands (``cluster_flags``) and of ``register``
(``registration_flags``), because the configurations are compared with what ``register`` would
write with the same flags. ``--cert-dir`` has no default here: without it, the serving
certificate is read from the Secret the manifests mount.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path

from webhook.kube.commands import _seconds, cluster_flags, registration_flags
from webhook.kube.config import ConfigError
from webhook.kube.registration import check_options
from webhook.settings import DEFAULT_SERVICE, ServeSettings

EXIT_STATUS = ("exit status: 0 no error or warning; 1 an error or a warning (a check that could not be done "
               "is a warning); 2 bad flags, kubeconfig, policy or --cert-dir; 3 the API server was "
               "unreachable or did not accept our credentials")


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    doctor = commands.add_parser(
        "doctor", help="report what the webhook does not protect in a cluster, and how to fix it",
        description="Check the live webhook configurations (existence, caBundle, rules, failure policy, timeout, "
        "drift from what register writes), the namespaces they leave out, who can switch the guard off (from "
        "RBAC), the Service's endpoints, and what runs that the policy would deny. Each finding has a severity "
        "(error, warning, info), what it means and its fix. Read only.",
        epilog=EXIT_STATUS,
    )
    doctor.add_argument("--policy", type=Path, metavar="FILE",
                        help="the policy the webhook serves (default: the embedded default policy)")
    doctor.add_argument("--cert-dir", type=Path, metavar="DIR",
                        help="check the caBundle against DIR/tls.crt (default: the Secret --tls-secret)")
    doctor.add_argument("--service-name", default=DEFAULT_SERVICE, metavar="NAME",
                        help="the webhook's Service (default: %(default)s)")
    doctor.add_argument("--service-namespace", default=DEFAULT_SERVICE, metavar="NS",
                        help="the Service's namespace, where the Secret and ConfigMap are (default: %(default)s)")
    doctor.add_argument("--tls-secret", default=f"{DEFAULT_SERVICE}-tls", metavar="NAME",
                        help="the serving certificate's Secret the pods mount (default: %(default)s)")
    doctor.add_argument("--policy-configmap", default=f"{DEFAULT_SERVICE}-policy", metavar="NAME",
                        help="the policy's ConfigMap the pods mount (default: %(default)s)")
    doctor.add_argument("--eval-timeout", type=_seconds, default=ServeSettings().eval_timeout, metavar="S",
                        help="serve's --eval-timeout, which timeoutSeconds must exceed (default: %(default)s)")
    doctor.add_argument("-o", "--output", choices=["table", "json"], default="table",
                        help="a table, or one JSON document (default: %(default)s)")
    registration_flags(doctor)
    cluster_flags(doctor)


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Build the settings, run every check, print; errors propagate to ``commands.run``."""
    from webhook.kube.commands import _client, _options  # noqa: PLC0415 - httpx only when a command runs
    from webhook.kube.doctor.findings import Settings  # noqa: PLC0415
    from webhook.kube.doctor.run import diagnose, exit_code, render  # noqa: PLC0415
    from webhook.policy.model import load_policy  # noqa: PLC0415

    cert_pem = None
    if args.cert_dir is not None:
        try:
            cert_pem = (args.cert_dir / "tls.crt").read_bytes()
        except OSError as exc:
            raise ConfigError(f"--cert-dir: {args.cert_dir / 'tls.crt'} cannot be read: "
                              f"{exc.strerror or exc}") from None
    settings = Settings(options=check_options(_options(args)), policy=load_policy(args.policy),
                        eval_timeout=args.eval_timeout, tls_secret=args.tls_secret,
                        policy_configmap=args.policy_configmap, cert_pem=cert_pem)
    with _client(args, environ) as client:
        report = diagnose(client, settings)
    sys.stdout.write(render(report, args.output))
    return exit_code(report)
