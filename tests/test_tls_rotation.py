"""CA rotation against the real server: while `certs --rotate-ca` takes each of its three stages and the
server reloads, clients that trust only the old CA, only the new CA, or the published bundle keep
connecting, with no failure at any moment of the overlap."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography import x509

from tests.conftest import SERVICE, ServerProcess
from tests.tlsutil import connects, eventually, find_logs, new_connection, serial_of, trust, wait_for_serial
from webhook.certs import ensure_certificates
from webhook.pki import certs_pem


@contextmanager
def always_connecting(port: int, clients: dict[str, str]) -> Iterator[dict[str, list[int]]]:
    """New connections, round after round, for each trust in ``clients``, for as long as the block runs.
    Yields {client: [successes, failures]}; every client gets at least one full round."""
    tally = {name: [0, 0] for name in clients}
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            for name, trusted in clients.items():
                tally[name][0 if connects(port, trusted) else 1] += 1

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        eventually(lambda: all(sum(counts) > 0 for counts in tally.values()), "every client connected once")
        yield tally
        before = {name: sum(counts) for name, counts in tally.items()}
        eventually(lambda: all(sum(c) > before[n] for n, c in tally.items()), "one more round after the change")
    finally:
        stop.set()
        thread.join()


def _ready(server: ServerProcess) -> bool:
    report = server.client().request("GET", "/readyz").json()["checks"]["certificate"]
    return bool(report["ready"] and report["chainsToCA"] and report["reloadError"] is None)


def _rotate(cert_dir: Path, stage: int) -> None:
    result = ensure_certificates(cert_dir, SERVICE, SERVICE, rotate_ca=True)
    assert result.rotated_to == stage, result.notes


def test_both_cas_are_trusted_through_every_stage_of_a_rotation(start_server: Any, tmp_path: Path) -> None:
    cert_dir = tmp_path / "certs"
    ensure_certificates(cert_dir, SERVICE, SERVICE)
    old_only = trust(cert_dir / "ca.crt")  # ca.crt before the rotation: the old CA alone
    with start_server("--reload-interval", "0.05", cert_dir=cert_dir) as server:
        first = serial_of(cert_dir / "tls.crt")

        # Stage 1: the bundle holds both CAs; the old CA still signs the leaf.
        with always_connecting(server.port, {"old CA only": old_only}) as tally:
            _rotate(cert_dir, 1)
            bundle = trust(cert_dir / "ca.crt")
            new_ca = x509.load_pem_x509_certificates(bundle.encode())[1]
            new_only = certs_pem([new_ca]).decode()
            # Once the cross-signed old CA is served, a client that trusts only the new CA connects too.
            eventually(lambda: connects(server.port, new_only), "a new-CA-only client connects")
        assert all(failed == 0 for _, failed in tally.values()), tally
        assert new_connection(server.port, bundle) == first
        eventually(lambda: _ready(server), "ready, chaining to the two-CA ca.crt")

        # Stage 2: the new CA signs a new leaf. Every client of the overlap keeps connecting throughout.
        overlap = {"old CA only": old_only, "new CA only": new_only, "ca.crt (both)": bundle}
        with always_connecting(server.port, overlap) as tally:
            _rotate(cert_dir, 2)
            second = serial_of(cert_dir / "tls.crt")
            wait_for_serial(server, second, new_only)
        assert all(failed == 0 for _, failed in tally.values()), tally
        assert trust(cert_dir / "ca.crt") == bundle
        eventually(lambda: _ready(server), "ready under the new CA")

        # Stage 3: the old CA is dropped. Clients of the stage before (both) and of this one (new) carry on.
        with always_connecting(server.port, {"ca.crt (both)": bundle, "new CA only": new_only}) as tally:
            _rotate(cert_dir, 3)
            assert trust(cert_dir / "ca.crt") == new_only
            # The cross-signed copy is no longer served, so the old CA alone no longer suffices.
            eventually(lambda: not connects(server.port, old_only), "an old-CA-only client is refused")
        assert all(failed == 0 for _, failed in tally.values()), tally
        assert new_connection(server.port, new_only) == second
        eventually(lambda: _ready(server), "ready with the new CA alone")
        assert not find_logs(server, "refused to reload")
