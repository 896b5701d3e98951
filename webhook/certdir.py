"""Reading and writing the certificate directory, with errors that name the path and the cause.

The certificate directory is where a first run fails: a bare ``docker run`` (UID 65532, a path
only root may write), a file where the directory should be, a key only root can read. Each of
those becomes one ``CertificateError`` sentence naming the path, the cause and what to do, never
an ``OSError`` traceback. Writes are atomic, because a half-written key is an outage.
"""

from __future__ import annotations

import errno
import os
import pwd
import stat
import tempfile
from pathlib import Path

from webhook.pki import CertificateError

_CAUSES = {
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EISDIR: "it is a directory, not a file",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.ELOOP: "too many levels of symbolic links",
    errno.ENAMETOOLONG: "the name is too long",
}


def cause(exc: OSError) -> str:
    """A short, lower-case reason for an OS error, without Python's ``[Errno 13]`` noise."""
    return _CAUSES.get(exc.errno or 0) or (exc.strerror or str(exc)).lower()


def owner(path: Path) -> str:
    """``root``, or ``UID 1000`` when the user has no name here; what a permission error hinges on."""
    uid = path.stat().st_uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"UID {uid}"


def _who() -> str:
    uid = os.geteuid()
    try:
        return f"UID {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"UID {uid}"


def read_optional(path: Path) -> bytes | None:
    """The file's bytes, or None when it does not exist. A file that exists but cannot be read is an
    error, never "missing": calling an unreadable key missing sends people looking in the wrong place."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise CertificateError(f"cannot read {path}: {_file_in_the_way(path)} is a file, not a directory") from None
    except OSError as exc:
        hint = ""
        if exc.errno in (errno.EACCES, errno.EPERM):
            try:
                mode = stat.S_IMODE(path.stat().st_mode)
                hint = f" (owned by {owner(path)}, mode {mode:04o}, and webhook runs as {_who()})"
            except OSError:
                hint = f" (webhook runs as {_who()})"
        raise CertificateError(f"cannot read {path}: {cause(exc)}{hint}") from None


def make_directory(directory: Path) -> None:
    """Create the certificate directory (and its parents) if it is not there."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise CertificateError(f"cannot use {directory} as the certificate directory: it is a file, not a "
                               "directory; point --cert-dir at a directory") from None
    except NotADirectoryError:
        raise CertificateError(f"cannot create {directory}: {_file_in_the_way(directory)} is a file, not a "
                               "directory; point --cert-dir at a directory") from None
    except OSError as exc:
        parent = next((p for p in directory.parents if p.is_dir()), None)
        hint = ""
        if exc.errno in (errno.EACCES, errno.EPERM) and parent is not None:
            hint = (f" ({parent} belongs to {owner(parent)}, and webhook runs as {_who()}; mount a writable "
                    f"directory at {directory}, or choose another --cert-dir)")
        raise CertificateError(f"cannot create {directory}: {cause(exc)}{hint}") from None


def _file_in_the_way(path: Path) -> Path:
    return next((p for p in reversed(path.parents) if p.exists() and not p.is_dir()), path.parent)


def write_all(writes: list[tuple[Path, bytes, bool]]) -> None:
    """Write each to a temporary file beside its path, then rename them all: readers never see
    half a file. Entries are (path, data, private); a private file is 0600."""
    temporary: list[tuple[str, Path]] = []
    try:
        for path, data, private in writes:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
            temporary.append((tmp, path))
            os.fchmod(fd, 0o600 if private else 0o644)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        for tmp, path in temporary:
            os.replace(tmp, path)
    except OSError as exc:
        _discard(temporary)
        raise CertificateError(_cannot_write(writes[0][0].parent, exc)) from None
    except BaseException:
        _discard(temporary)
        raise


def remove(path: Path) -> None:
    """Remove a file if it is there (a leftover ``ca-next.key``), with the same errors as a write."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise CertificateError(_cannot_write(path.parent, exc)) from None


def _discard(temporary: list[tuple[str, Path]]) -> None:
    for tmp, _ in temporary:
        Path(tmp).unlink(missing_ok=True)


def _cannot_write(directory: Path, exc: OSError) -> str:
    hint = ""
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        try:
            belongs = f"the directory belongs to {owner(directory)}, and webhook runs as {_who()}; "
        except OSError:
            belongs = ""
        if exc.errno == errno.EROFS:
            belongs = ""
        hint = (f" ({belongs}mount a writable directory, or make the certificates beforehand with "
                f"'webhook certs --cert-dir {directory}')")
    return f"cannot write certificates to {directory}: {cause(exc)}{hint}"
