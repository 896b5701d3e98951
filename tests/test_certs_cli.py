"""`webhook certs` flags for key types, lifetimes, renewal and CA rotation, as a user runs them.

The command runs in-process through ``webhook.cli.main`` (test_cli.py covers the real process),
which keeps these many runs fast."""

from __future__ import annotations

import base64
import contextlib
import io
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from webhook.cli import main
from webhook.pki import parse_certificates


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's usage errors
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def certs(directory: Path, *args: str) -> tuple[int, str, str]:
    return run("certs", "--cert-dir", str(directory), "--service-name", "hook", "--service-namespace", "ops", *args)


def test_rsa_3072(tmp_path: Path) -> None:
    code, out, err = certs(tmp_path, "--key-type", "rsa", "--rsa-bits", "3072")
    assert code == 0, err
    assert out.startswith(f"CA created: {tmp_path / 'ca.crt'}\n")
    for name in ("ca.crt", "tls.crt"):
        key = parse_certificates((tmp_path / name).read_bytes(), name)[0].public_key()
        assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 3072


def test_lifetimes_and_renew_before(tmp_path: Path) -> None:
    assert certs(tmp_path, "--ca-validity", "720h", "--leaf-validity", "7d", "--renew-before", "2d")[0] == 0
    ca = parse_certificates((tmp_path / "ca.crt").read_bytes(), "ca")[0]
    leaf = parse_certificates((tmp_path / "tls.crt").read_bytes(), "tls")[0]
    assert (ca.not_valid_after_utc - ca.not_valid_before_utc).total_seconds() == (30 * 24 + 5 / 60) * 3600
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).total_seconds() == (7 * 24 + 5 / 60) * 3600
    _, out, _ = certs(tmp_path, "--leaf-validity", "7d", "--renew-before", "6d")
    assert "serving certificate kept (still valid)" in out
    _, out, _ = certs(tmp_path, "--leaf-validity", "29d", "--renew-before", "10081m")  # a minute over 7 days
    assert "serving certificate issued" in out


def test_rotate_ca_in_three_runs(tmp_path: Path) -> None:
    certs(tmp_path)
    host = "hook.ops.svc"
    runs = [certs(tmp_path, "--rotate-ca") for _ in range(3)]
    assert [code for code, _, _ in runs] == [0, 0, 0]
    assert runs[0][1] == (
        f"CA kept (still valid): {tmp_path / 'ca.crt'}\n"
        f"serving certificate kept (still valid): {tmp_path / 'tls.crt'} for {host}\n"
        "CA rotation stage 1 of 3: a new CA was created; ca.crt now holds the old and the new CA, and the "
        "serving certificate is still signed by the old one. Publish ca.crt as the caBundle, wait until "
        "every API server uses it, then run --rotate-ca again.\n"
    )
    assert runs[1][1] == (
        f"CA kept (still valid): {tmp_path / 'ca.crt'}\n"
        f"serving certificate issued: {tmp_path / 'tls.crt'} for {host}\n"
        "CA rotation stage 2 of 3: the serving certificate is now signed by the new CA; ca.crt still holds "
        "both. Once every replica serves it, run --rotate-ca again to drop the old CA.\n"
    )
    assert runs[2][1].endswith(
        "CA rotation stage 3 of 3: the old CA was dropped from ca.crt. Publish ca.crt as the caBundle.\n"
    )
    assert len(parse_certificates((tmp_path / "ca.crt").read_bytes(), "ca.crt")) == 1


def test_print_ca_bundle_during_a_rotation_prints_both_cas_and_writes_nothing(tmp_path: Path) -> None:
    certs(tmp_path)
    certs(tmp_path, "--rotate-ca")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    code, out, err = run("certs", "--cert-dir", str(tmp_path), "--print-ca-bundle")
    assert (code, err) == (0, "")
    assert base64.b64decode(out.strip()) == before["ca.crt"] and out.count("\n") == 1
    assert len(parse_certificates(before["ca.crt"], "ca.crt")) == 2
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize("args", [["--rotate-ca"], ["--key-type", "rsa"], ["--leaf-validity", "30d"],
                                  ["--ca-validity", "3650d"], ["--renew-before", "1d"]])
def test_print_ca_bundle_with_a_flag_that_writes_is_a_usage_error(tmp_path: Path, args: list[str]) -> None:
    certs(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    code, out, err = certs(tmp_path, "--print-ca-bundle", *args)
    assert code == 2 and out == ""
    assert f"--print-ca-bundle only reads ca.crt and cannot be combined with {args[0]}" in err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_broken_ca_is_an_error_not_a_silent_replacement(tmp_path: Path) -> None:
    certs(tmp_path)
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\ncut short")
    code, out, err = certs(tmp_path)
    assert code == 2 and out == ""
    assert err.startswith(f"webhook: error: {tmp_path / 'ca.crt'}: not a valid PEM certificate (incomplete or corrupt)")


@pytest.mark.parametrize(("args", "text"), [
    (["--rsa-bits", "3072"], "--rsa-bits needs --key-type rsa"),
    (["--key-type", "rsa", "--rsa-bits", "1024"], "invalid choice: 1024"),
    (["--leaf-validity", "30d", "--renew-before", "30d"], "--renew-before must be shorter than --leaf-validity"),
    (["--ca-validity", "10d"], "--leaf-validity must not be longer than --ca-validity"),
    (["--leaf-validity", "30"], "'30' is not a duration such as 365d, 720h or 90m"),
    (["--renew-before", "0d"], "'0d' is not a duration"),
])
def test_bad_certs_flags_are_explained(tmp_path: Path, args: list[str], text: str) -> None:
    code, _, err = certs(tmp_path, *args)
    assert code == 2 and text in err
    assert not tmp_path.joinpath("ca.crt").exists()


@pytest.mark.parametrize(("args", "text"), [
    (["--client-allow-name", "kube-apiserver"], "--client-allow-name needs --client-ca"),
    (["--reload-interval", "0"], "must be between 0.01 and 3600 seconds"),
])
def test_bad_serve_flags_are_explained(args: list[str], text: str) -> None:
    code, _, err = run("serve", *args)
    assert code == 2 and text in err


def test_serve_refuses_an_unreadable_client_ca(tmp_path: Path) -> None:
    certs(tmp_path)
    missing = tmp_path / "nope.crt"
    code, _, err = run("serve", "--cert-dir", str(tmp_path), "--client-ca", str(missing), "--port", "1")
    assert code == 2
    assert err.strip() == f"webhook: error: {missing}: file is missing"
