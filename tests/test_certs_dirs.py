"""Certificate directories that cannot be used as they are: one `webhook: error:` line naming the
path and the cause, exit 2, and never a traceback, from `certs`, `certs --print-ca-bundle` and
`serve` (before it binds anything).

Permission cases run the real CLI as an unprivileged user, as the image does (UID 65532): as
root through setpriv, otherwise as the user running the tests, for whom modes 0555 and 0000 deny
writing and reading just the same."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from webhook.certs import ensure_certificates

UNPRIVILEGED_UID = 65532  # the image's user


def webhook(*args: str, unprivileged: bool = False) -> subprocess.CompletedProcess[str]:
    prefix: list[str] = []
    if unprivileged and os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot run the CLI as an unprivileged user")
        prefix = [setpriv, f"--reuid={UNPRIVILEGED_UID}", f"--regid={UNPRIVILEGED_UID}", "--clear-groups"]
    return subprocess.run([*prefix, sys.executable, "-m", "webhook", *args], capture_output=True, text=True,
                          timeout=60, cwd=REPO, check=False)


def serve(cert_dir: Path, *, unprivileged: bool = False) -> subprocess.CompletedProcess[str]:
    # Port 1: only reached if the certificate step wrongly succeeds, and then refused for the test user.
    return webhook("serve", "--host", "127.0.0.1", "--port", "1", "--probe-port", "0", "--cert-dir", str(cert_dir),
                   unprivileged=unprivileged)


def certs(cert_dir: Path, *args: str, unprivileged: bool = False) -> subprocess.CompletedProcess[str]:
    return webhook("certs", "--cert-dir", str(cert_dir), *args, unprivileged=unprivileged)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("webhook: error: "), result.stderr
    return result.stderr.removeprefix("webhook: error: ").rstrip("\n")


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory the unprivileged user can traverse (pytest's own tmp_path is private to root)."""
    directory = Path(tempfile.mkdtemp(prefix="webhook-dirs-"))
    directory.chmod(0o755)
    yield directory
    for path in [directory, *directory.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    shutil.rmtree(directory)


def owner_of(path: Path) -> str:
    return pwd.getpwuid(path.stat().st_uid).pw_name


@pytest.mark.parametrize("run", [certs, serve], ids=["certs", "serve"])
def test_a_parent_that_is_a_file(tmp_path: Path, run: object) -> None:
    (tmp_path / "file").write_text("not a directory")
    cert_dir = tmp_path / "file" / "certs"
    message = one_error_line(run(cert_dir))  # type: ignore[operator]
    assert message == f"cannot create {cert_dir}: {tmp_path / 'file'} is a file, not a directory; " \
                      "point --cert-dir at a directory"


@pytest.mark.parametrize("run", [certs, serve], ids=["certs", "serve"])
def test_a_file_where_the_directory_should_be(tmp_path: Path, run: object) -> None:
    cert_dir = tmp_path / "certs"
    cert_dir.write_text("not a directory")
    message = one_error_line(run(cert_dir))  # type: ignore[operator]
    assert message == f"cannot use {cert_dir} as the certificate directory: it is a file, not a directory; " \
                      "point --cert-dir at a directory"


@pytest.mark.parametrize("run", [certs, serve], ids=["certs", "serve"])
def test_a_directory_that_cannot_be_created(shared: Path, run: object) -> None:
    shared.chmod(0o555)
    cert_dir = shared / "etc" / "certs"
    message = one_error_line(run(cert_dir, unprivileged=True))  # type: ignore[operator]
    assert message.startswith(f"cannot create {cert_dir}: permission denied ({shared} belongs to {owner_of(shared)}, "
                              "and webhook runs as UID ")
    assert message.endswith(f"mount a writable directory at {cert_dir}, or choose another --cert-dir)")


@pytest.mark.parametrize("run", [certs, serve], ids=["certs", "serve"])
def test_a_directory_that_cannot_be_written(shared: Path, run: object) -> None:
    """A bare `docker run` of the image: an empty directory that only root may write."""
    cert_dir = shared / "certs"
    cert_dir.mkdir(mode=0o555)
    cert_dir.chmod(0o555)
    message = one_error_line(run(cert_dir, unprivileged=True))  # type: ignore[operator]
    assert message.startswith(f"cannot write certificates to {cert_dir}: permission denied (the directory belongs to "
                              f"{owner_of(cert_dir)}, and webhook runs as UID ")
    assert message.endswith(f"mount a writable directory, or make the certificates beforehand with "
                            f"'webhook certs --cert-dir {cert_dir}')")
    assert not list(cert_dir.iterdir())


def test_a_key_that_cannot_be_read_is_not_called_missing(shared: Path) -> None:
    cert_dir = shared / "certs"
    ensure_certificates(cert_dir, "admission-webhook", "admission-webhook")
    for path in cert_dir.iterdir():
        path.chmod(0o644)
    (cert_dir / "tls.key").chmod(0o000)
    expected = f"cannot read {cert_dir / 'tls.key'}: permission denied (owned by {owner_of(cert_dir)}, mode 0000, " \
               "and webhook runs as UID "
    assert one_error_line(serve(cert_dir, unprivileged=True)).startswith(expected)
    assert one_error_line(certs(cert_dir, unprivileged=True)).startswith(expected)


# --- --print-ca-bundle: reads ca.crt and nothing else ---------------------------------------

def test_print_ca_bundle_without_a_ca_creates_nothing(tmp_path: Path) -> None:
    cert_dir = tmp_path / "certs"
    message = one_error_line(certs(cert_dir, "--print-ca-bundle"))
    assert message == f"{cert_dir / 'ca.crt'}: file is missing; create it with 'webhook certs --cert-dir {cert_dir}'"
    assert not cert_dir.exists()


def test_print_ca_bundle_of_a_broken_ca(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\ncut short")
    message = one_error_line(certs(tmp_path, "--print-ca-bundle"))
    assert message.startswith(f"{tmp_path / 'ca.crt'}: not a valid PEM certificate (incomplete or corrupt)")
    assert [p.name for p in tmp_path.iterdir()] == ["ca.crt"]


def test_print_ca_bundle_of_an_unreadable_ca(shared: Path) -> None:
    cert_dir = shared / "certs"
    ensure_certificates(cert_dir, "admission-webhook", "admission-webhook")
    (cert_dir / "ca.crt").chmod(0o000)
    message = one_error_line(certs(cert_dir, "--print-ca-bundle", unprivileged=True))
    assert message.startswith(f"cannot read {cert_dir / 'ca.crt'}: permission denied (owned by ")


def test_print_ca_bundle_in_a_read_only_directory(shared: Path) -> None:
    cert_dir = shared / "certs"
    ensure_certificates(cert_dir, "hook", "ops")
    cert_dir.chmod(0o555)
    result = certs(cert_dir, "--print-ca-bundle", unprivileged=True)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(cert_dir.stat().st_mode) == 0o555
