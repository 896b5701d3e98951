"""Every partial certificate directory, through both commands that complete one: `webhook certs`
and `webhook serve`, run as real processes. A CA that may be trusted is never replaced, and
every refusal is one line that names what is missing and what to do, with nothing written.

`serve` is started with its HTTPS port already taken by the test, so it does all of its
certificate work and then stops at the bind with its own one-line error: the directory shows what
it did, and its log what it said, without a server to stop."""

from __future__ import annotations

import itertools
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.tlsutil import find_logs, new_connection, serial_of
from webhook.certs import ensure_certificates
from webhook.pki import issued_by, parse_certificates

FILES = ("ca.crt", "ca.key", "tls.crt", "tls.key")
NEW_CA, ISSUED, KEPT = "new CA", "issued under the CA", "kept"
RESTORE_OR_MOVE = "or move {d} aside to start over with a new CA (and publish its ca.crt as the caBundle)"


def refused(listing: str, remedy: str) -> tuple[str, str]:
    """A refusal: the start of the message after the directory, and the remedy it must give."""
    return listing, remedy


# The decision table, the same rules written out independently of webhook/certs.py:
# files present -> (what `certs` does, what `serve` does).
TABLE: dict[frozenset[str], tuple[Any, Any]] = {}
_UNSIGNABLE = ("without ca.key the CA in ca.crt cannot sign a new serving certificate, and a new CA would break "
               "every client that trusts this one")
_NO_CA_CRT = "the CA certificate that clients trust is gone, and a new CA would overwrite ca.key. Restore ca.crt"
for present in itertools.chain.from_iterable(itertools.combinations(FILES, n) for n in range(5)):
    has = frozenset(present)
    pair = {"tls.crt", "tls.key"} <= has
    if not has:
        outcome: tuple[Any, Any] = (NEW_CA, NEW_CA)
    elif "ca.key" in has and "ca.crt" not in has:
        refusal = refused("ca.crt is missing", _NO_CA_CRT)
        outcome = (refusal, KEPT if pair else refusal)
    elif "ca.crt" not in has and pair:
        outcome = (refused("ca.crt and ca.key are missing (tls.crt and tls.key are there)",
                           "the serving certificate was issued by a CA that is not here"), KEPT)
    elif "ca.crt" not in has:
        other = "tls.key" if "tls.crt" in has else "tls.crt"
        refusal = refused(f"{other}, ca.crt and ca.key are missing", f"no CA here to issue a new pair. Restore {other}")
        outcome = (refusal, refusal)
    elif "ca.key" in has:
        outcome = (KEPT if pair else ISSUED, KEPT if pair else ISSUED)
    elif pair:
        outcome = (KEPT, KEPT)
    else:
        missing = [f for f in ("tls.crt", "tls.key") if f not in has]
        listing = "tls.crt, tls.key and ca.key" if len(missing) == 2 else f"{missing[0]} and ca.key"
        refusal = refused(f"{listing} are missing", f"{_UNSIGNABLE}. Restore {' and '.join(missing)} (or ca.key)")
        outcome = (refusal, refusal)
    TABLE[has] = outcome


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("template")
    ensure_certificates(directory, "admission-webhook", "admission-webhook")
    return directory


@pytest.fixture(scope="module")
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "webhook", *args], capture_output=True, text=True, timeout=60,
                          cwd=REPO, check=False)


def name(has: frozenset[str]) -> str:
    return "+".join(f for f in FILES if f in has) or "empty"


@pytest.mark.parametrize("command", ["certs", "serve"])
@pytest.mark.parametrize("has", list(TABLE), ids=name)
def test_a_partial_directory_is_completed_safely_or_refused_with_a_way_out(
    tmp_path: Path, template: Path, taken_port: int, has: frozenset[str], command: str,
) -> None:
    directory = tmp_path / "certs"
    directory.mkdir()
    for file in has:
        shutil.copy2(template / file, directory / file)
    before = snapshot(directory)
    expected = TABLE[has][command == "serve"]
    if command == "certs":
        result = run("certs", "--cert-dir", str(directory))
        succeeded = result.returncode == 0
    else:
        result = run("serve", "--host", "127.0.0.1", "--port", str(taken_port), "--probe-port", "0",
                     "--cert-dir", str(directory), "--log-format", "text")
        # Got as far as binding, which the test's own socket refuses: every certificate step is done.
        succeeded = result.returncode == 2 and result.stderr.startswith(f"webhook: error: --port {taken_port}:")
    after = snapshot(directory) if directory.is_dir() else {}

    if isinstance(expected, tuple):
        listing, remedy = expected
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith(f"webhook: error: {directory}: {listing}"), result.stderr
        assert remedy in result.stderr and RESTORE_OR_MOVE.format(d=directory) in result.stderr
        assert after == before, "a refusal writes nothing"
        return
    assert succeeded, result.stdout + result.stderr
    if "ca.crt" in before:
        assert after["ca.crt"] == before["ca.crt"], "a CA that is there is never replaced"
    if expected == KEPT:
        assert after == before
        return
    assert set(after) == set(FILES)
    ca = parse_certificates(after["ca.crt"], "ca.crt")[0]
    assert issued_by(parse_certificates(after["tls.crt"], "tls.crt")[0], ca)
    if expected == NEW_CA:
        assert not before
        return
    assert after["ca.key"] == before["ca.key"]
    if command == "serve" and len(has & {"tls.crt", "tls.key"}) == 1:
        gone = ({"tls.crt", "tls.key"} - has).pop()
        assert f"WARNING webhook.server: {directory / gone} was missing: a new serving certificate and key were " \
               f"issued under the CA in {directory / 'ca.crt'}, which clients already trust" in result.stdout


def test_the_table_covers_every_combination() -> None:
    assert len(TABLE) == 16


def test_serve_with_a_lost_tls_key_and_the_ca_key_serves_clients_of_the_old_ca(
    tmp_path: Path, template: Path, start_server: Any,
) -> None:
    directory = tmp_path / "certs"
    directory.mkdir()
    for file in ("ca.crt", "ca.key", "tls.crt"):
        shutil.copy2(template / file, directory / file)
    trusted = (template / "ca.crt").read_text()
    with start_server(cert_dir=directory) as server:
        assert new_connection(server.port, trusted) == serial_of(directory / "tls.crt")
        assert find_logs(server, f"{directory / 'tls.key'} was missing", level="WARNING")
    assert (directory / "ca.crt").read_text() == trusted
