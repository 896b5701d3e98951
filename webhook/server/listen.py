"""The listening sockets, bound in the parent before anything says it is serving.

uvicorn binds inside its server loop, and a port in use ends there in a logged ``OSError`` and
exit 1, after the start-up line has announced ``serving https://…``. Binding first makes a clash
one ``webhook: error:`` line that names the flag and the address, before anything is announced,
registered or started. A bound socket that is not yet listening refuses connections, so binding
early promises nothing to clients.
"""

from __future__ import annotations

import errno
import socket

_HINTS = {
    errno.EADDRINUSE: "another process listens there; stop it, or choose another {flag}",
    errno.EACCES: "ports below 1024 need privileges; choose another {flag}",
    errno.EADDRNOTAVAIL: "the address is not one of this host's; check --host",
}


class ListenError(Exception):
    """A port that cannot be listened on; the message names the flag, the address and the cause."""


def bind(host: str, port: int, flag: str) -> socket.socket:
    """A socket bound to ``host:port`` (not yet listening), as uvicorn would bind it, and
    inheritable so that spawned workers can serve on it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except socket.gaierror:
        sock.close()
        raise ListenError(f"{flag} {port}: cannot listen on {address}: --host {host} is not an address or a "
                          "name this host can resolve") from None
    except OSError as exc:
        sock.close()
        hint = _HINTS.get(exc.errno or 0, "")
        raise ListenError(f"{flag} {port}: cannot listen on {address}: {_reason(exc)}"
                          + (f" ({hint.format(flag=flag)})" if hint else "")) from None
    sock.set_inheritable(True)
    return sock


def _reason(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "the address is already in use"
    return (exc.strerror or str(exc)).lower()
