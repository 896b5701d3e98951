"""Faults inside the server's own pod: its certificate files vanish, or a worker process is killed.
Admission keeps being answered; what went wrong shows in /readyz and the log."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import SERVICE, ApiServerClient, ServerProcess
from tests.reviews import pod_review
from tests.steady import SteadyClient, steady_client
from tests.tlsutil import eventually, new_connection, serial_of, trust, wait_for_log
from webhook.certs import ensure_certificates

CERT_FILES = ("tls.crt", "tls.key", "ca.crt")
LOAD_CLIENTS = 6


def certificate_check(server: ServerProcess) -> tuple[int, dict[str, Any]]:
    """/readyz from the plain-HTTP probe port, which needs no CA file to reach."""
    reply = httpx.get(f"http://127.0.0.1:{server.probe_port}/readyz", timeout=10)
    return reply.status_code, reply.json()["checks"]["certificate"]


def test_vanished_certificate_files_keep_the_last_good_pair_serving(start_server: Any, tmp_path: Path) -> None:
    cert_dir = tmp_path / "certs"
    ensure_certificates(cert_dir, SERVICE, SERVICE)
    serial, trusted = serial_of(cert_dir / "tls.crt"), trust(cert_dir / "ca.crt")
    saved = {name: (cert_dir / name).read_bytes() for name in CERT_FILES}
    (tmp_path / "trusted-ca.crt").write_bytes(saved["ca.crt"])
    with start_server("--reload-interval", "0.05", "--log-format", "text", cert_dir=cert_dir) as server, \
            steady_client(server) as steady:
        eventually(lambda: steady.answered > 0, "the steady client is connected")
        for name in CERT_FILES:  # the Secret is gone: every file at once
            (cert_dir / name).unlink()
        code, check = eventually(lambda: (r := certificate_check(server))[1]["reloadError"] and r,
                                 "/readyz reports the missing files")
        assert code == 200 and check["ready"] is True
        assert check["reloadError"] == f"{cert_dir / 'tls.crt'}: file is missing"
        assert check["serial"] == f"{serial:x}"
        wait_for_log(server, f"refused to reload TLS: {cert_dir / 'tls.crt'}: file is missing; still serving serial "
                     f"{serial:x}", level="ERROR")
        # New handshakes still get the last good pair, and reviews are still answered.
        assert new_connection(server.port, trusted) == serial
        fresh = ApiServerClient(server.port, tmp_path / "trusted-ca.crt")
        assert fresh.review("/validate", pod_review("evil.io/x"))["allowed"] is False
        fresh.close()
        answered = steady.answered
        eventually(lambda: steady.answered > answered + 3, "reviews keep being answered")

        for name, data in saved.items():  # the files come back
            (cert_dir / name).write_bytes(data)
        eventually(lambda: certificate_check(server)[1]["reloadError"] is None, "the fault clears from /readyz")
    assert steady.failures == []


# --- a worker killed ----------------------------------------------------------------------------

def workers_of(parent: int) -> set[int]:
    """The serving children of the supervisor (not multiprocessing's resource tracker)."""
    pids = set()
    for task in Path(f"/proc/{parent}/task").iterdir():
        for pid in (task / "children").read_text().split():
            with contextlib.suppress(OSError):
                if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    pids.add(int(pid))
    return pids


def two_workers(parent: int) -> set[int] | None:
    pids = workers_of(parent)
    return pids if len(pids) == 2 else None


def connections_held(pid: int, port: int) -> int:
    """Established TCP connections to ``port`` whose socket this process holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    held = 0
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port, state, inode = int(fields[1].rsplit(":", 1)[1], 16), fields[3], fields[9]
        if local_port == port and state == "01" and inode in inodes:  # 01: ESTABLISHED
            held += 1
    return held


@contextlib.contextmanager
def load(server: ServerProcess, count: int) -> Iterator[list[SteadyClient]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(steady_client(server)) for _ in range(count)]


def test_a_killed_worker_is_replaced_and_only_its_connections_fail(start_server: Any) -> None:
    with start_server("--workers", "2", "--log-format", "text") as server:
        parent = server.process.pid
        first = eventually(lambda: two_workers(parent), "two workers")
        with load(server, LOAD_CLIENTS) as clients:
            eventually(lambda: all(c.answered >= 3 for c in clients), "every client has its connection")
            held = {pid: connections_held(pid, server.port) for pid in first}
            assert sum(held.values()) == LOAD_CLIENTS, held  # one keep-alive connection each
            victim = max(held, key=lambda pid: held[pid])
            os.kill(victim, signal.SIGKILL)
            now = eventually(lambda: (w := two_workers(parent)) and victim not in w and w, "a replacement worker",
                             timeout=30)
            answered = [c.answered for c in clients]
            eventually(lambda: all(c.answered > a + 3 for c, a in zip(clients, answered, strict=True)),
                       "every client is answered again")
        failures = [f for c in clients for f in c.failures]
        assert len(failures) <= held[victim], failures
        wait_for_log(server, f"worker {victim} exited with -9; starting a new one", level="ERROR")
        replacement = (now - first).pop()
        # Every new connection succeeds, whichever worker takes it, the replacement among them.
        for index in range(20):
            client = server.client(timeout=10)
            assert client.review("/validate", pod_review("evil.io/x", uid=f"new-{index}"))["allowed"] is False
            client.close()
        assert replacement in workers_of(parent)
    print(f"\nworker killed: {held[victim]} of {LOAD_CLIENTS} connections were on it, "
          f"{len(failures)} request(s) failed")
