"""The `webhook` command as a user runs it: real processes, real output, real exit codes."""

from __future__ import annotations

import base64
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, free_ports


def webhook(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "webhook", *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd, check=False)


@pytest.mark.parametrize("command", [[], ["serve"], ["certs"]])
def test_help_describes_each_command(command: list[str]) -> None:
    result = webhook(*command, "--help")
    assert result.returncode == 0
    assert "usage: webhook" in result.stdout
    if command == ["serve"]:
        assert "--policy FILE" in result.stdout and "--max-body-bytes" in result.stdout
    if command:
        assert "exit status: 0 " in result.stdout and "; 2 a bad flag" in result.stdout
    if command == ["certs"]:
        assert "cannot be combined with --rotate-ca" in " ".join(result.stdout.split())


def test_no_command_is_a_usage_error() -> None:
    result = webhook()
    assert result.returncode == 2
    assert "required: COMMAND" in result.stderr


def test_certs_creates_then_keeps(tmp_path: Path) -> None:
    first = webhook("certs", "--cert-dir", str(tmp_path), "--service-name", "hook", "--service-namespace", "ops")
    assert first.returncode == 0, first.stderr
    assert first.stdout == (
        f"CA created: {tmp_path / 'ca.crt'}\n"
        f"serving certificate issued: {tmp_path / 'tls.crt'} for hook.ops.svc\n"
    )
    second = webhook("certs", "--cert-dir", str(tmp_path), "--service-name", "hook", "--service-namespace", "ops")
    assert "CA kept (still valid)" in second.stdout and "serving certificate kept" in second.stdout


def test_print_ca_bundle_is_base64_of_the_ca_and_changes_nothing(tmp_path: Path) -> None:
    """The README's walk-through: certificates for other names, then the bundle, which must not
    re-issue them for the default names."""
    made = webhook("certs", "--cert-dir", str(tmp_path), "--service-name", "hook", "--service-namespace", "ops")
    assert made.returncode == 0, made.stderr
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    result = webhook("certs", "--cert-dir", str(tmp_path), "--print-ca-bundle")
    assert (result.returncode, result.stderr) == (0, "")
    assert base64.b64decode(result.stdout.strip()) == (tmp_path / "ca.crt").read_bytes()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize("flag", ["--port", "--probe-port"])
def test_a_port_in_use_is_one_line_naming_the_flag_before_anything_is_announced(
    tmp_path: Path, pki: Path, flag: str,
) -> None:
    port, other = free_ports(2)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        ports = {"--port": port, "--probe-port": other} if flag == "--port" else {"--port": other, "--probe-port": port}
        result = webhook("serve", "--host", "127.0.0.1", "--cert-dir", str(pki), "--log-format", "text",
                         *(str(x) for item in ports.items() for x in item))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == (f"webhook: error: {flag} {port}: cannot listen on 127.0.0.1:{port}: the address is "
                             f"already in use (another process listens there; stop it, or choose another {flag})\n")
    assert "serving" not in result.stdout


def test_serve_refuses_a_bad_policy_before_binding(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("images:\n  allow: [ghcr.io/acme-*]\n")
    result = webhook("serve", "--policy", str(policy), "--cert-dir", str(tmp_path / "certs"), "--port", "1")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"webhook: error: policy file {policy}: images.allow[0]: pattern 'ghcr.io/acme-*': "
        "'*' must be a whole path component, not part of 'acme-*'"
    )
    assert not (tmp_path / "certs").exists()


@pytest.mark.parametrize(("flag", "value", "text"), [("--port", "70000", "not a TCP port"),
                                                    ("--workers", "0", "must be at least 1"),
                                                    ("--max-body-bytes", "lots", "not a whole number")])
def test_bad_flags_are_explained(flag: str, value: str, text: str) -> None:
    result = webhook("serve", flag, value)
    assert result.returncode == 2
    assert text in result.stderr
