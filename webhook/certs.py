"""The certificate directory: a private CA, the serving certificate, renewal and staged CA rotation.

The file names are those of a mounted ``kubernetes.io/tls`` Secret (``tls.crt``, ``tls.key``,
``ca.crt``), so the same directory layout works on a laptop and in a cluster. ``ca.crt`` is what
the caBundle publishes; during a rotation it holds two CAs. ``ca.key`` signs; ``ca-next.key``
exists only between rotation stages 1 and 2. Writes are atomic and private keys are 0600,
because a half-written key is an outage.

A rotation never leaves a client stranded: in stage 1 the old leaf is served with the old CA
cross-signed by the new one, and in stage 2 the new leaf with the new CA cross-signed by the old
one, so a client that trusts either CA alone, or both, verifies the server throughout.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from webhook.pki import (
    CertificateError,
    KeySpec,
    PrivateKey,
    certs_pem,
    cross_sign,
    issued_by,
    key_pem,
    new_ca,
    new_leaf,
    parse_certificates,
    parse_private_key,
    same_public_key,
)

CA_VALIDITY = dt.timedelta(days=3650)
LEAF_VALIDITY = dt.timedelta(days=365)
ECDSA_P256 = KeySpec()
ROTATION_STEPS = {
    1: "CA rotation stage 1 of 3: a new CA was created; ca.crt now holds the old and the new CA, and the "
       "serving certificate is still signed by the old one. Publish ca.crt as the caBundle, wait until "
       "every API server uses it, then run --rotate-ca again.",
    2: "CA rotation stage 2 of 3: the serving certificate is now signed by the new CA; ca.crt still holds "
       "both. Once every replica serves it, run --rotate-ca again to drop the old CA.",
    3: "CA rotation stage 3 of 3: the old CA was dropped from ca.crt. Publish ca.crt as the caBundle.",
}


@dataclass(frozen=True, slots=True)
class CertFiles:
    directory: Path

    @property
    def ca_crt(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def ca_next_key(self) -> Path:
        return self.directory / "ca-next.key"

    @property
    def tls_crt(self) -> Path:
        return self.directory / "tls.crt"

    @property
    def tls_key(self) -> Path:
        return self.directory / "tls.key"

    def serving_pair_present(self) -> bool:
        return self.tls_crt.is_file() and self.tls_key.is_file()


@dataclass(frozen=True, slots=True)
class CertOptions:
    key: KeySpec = ECDSA_P256
    ca_validity: dt.timedelta = CA_VALIDITY
    leaf_validity: dt.timedelta = LEAF_VALIDITY
    # None: re-issue in the last third of the leaf's own lifetime.
    renew_before: dt.timedelta | None = None


@dataclass(frozen=True, slots=True)
class CertResult:
    files: CertFiles
    generated_ca: bool
    issued_leaf: bool
    stage: int = 0  # rotation stage done and in effect after this run: 0 (none), 1 or 2
    rotated_to: int | None = None  # the stage this run completed with --rotate-ca: 1, 2 or 3
    notes: tuple[str, ...] = ()


@dataclass(slots=True)
class _Authority:
    bundle: list[x509.Certificate]  # ca.crt as published
    signer: x509.Certificate
    signer_key: PrivateKey
    next: x509.Certificate | None = None
    next_key: PrivateKey | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def stage(self) -> int:
        if self.next is not None:
            return 1
        return 2 if len(self.bundle) > 1 else 0


def service_dns_names(service: str, namespace: str) -> list[str]:
    """The names the API server may use: it verifies ``<svc>.<ns>.svc``."""
    return [
        "localhost",
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]


def ensure_certificates(directory: Path, service: str, namespace: str, *, options: CertOptions | None = None,
                        rotate_ca: bool = False, now: dt.datetime | None = None) -> CertResult:
    """Keep a CA that is still valid; (re)issue the serving certificate when it is missing, inside its
    renewal window, for other names or another key type, or not signed by the signing CA. With
    ``rotate_ca``, take the CA rotation one stage further."""
    options = options or CertOptions()
    now = now or dt.datetime.now(dt.UTC)
    files = CertFiles(directory)
    directory.mkdir(parents=True, exist_ok=True)
    authority = _load_authority(files, now)
    generated_ca = authority is None
    if authority is None:
        replaced = files.ca_crt.exists()
        authority = _create_ca(files, options, now)
        if replaced:
            authority.notes.append(f"the CA in {files.ca_crt} had expired or had no ca.key; a new CA replaced it: "
                                   "publish the new ca.crt as the caBundle")
    names = service_dns_names(service, namespace)
    start_stage = authority.stage
    rotated_to: int | None = None
    issued = False
    if rotate_ca and generated_ca:
        authority.notes.append("--rotate-ca: the CA was just created, so there is nothing to rotate yet")
    elif rotate_ca and start_stage == 0:
        _start_rotation(files, authority, options, now)
        rotated_to = 1
    elif rotate_ca and start_stage == 1:
        _promote_next(files, authority, names, options, now)
        issued, rotated_to = True, 2
    issued = _ensure_leaf(files, authority, names, options, now) or issued
    if rotate_ca and start_stage == 2:
        authority.bundle = [authority.signer]
        _ensure_leaf(files, authority, names, options, now)  # drops the cross-signed CA from the chain
        _write(files.ca_crt, certs_pem(authority.bundle))
        authority.notes.append(ROTATION_STEPS[3])
        rotated_to = 3
    if rotated_to is None and authority.stage:
        authority.notes.append(f"CA rotation in progress: stage {authority.stage} of 3 done; "
                               "run --rotate-ca again to continue")
    if authority.signer.not_valid_after_utc - now < options.leaf_validity:
        authority.notes.append(f"the CA expires on {authority.signer.not_valid_after_utc:%Y-%m-%d}, sooner than "
                               "a new serving certificate would; rotate it with --rotate-ca")
    return CertResult(files, generated_ca, issued, authority.stage, rotated_to, tuple(authority.notes))


def issue_serving_certificate(directory: Path, service: str, namespace: str, *,
                              options: CertOptions | None = None, now: dt.datetime | None = None) -> x509.Certificate:
    """Re-issue the serving certificate now under the signing CA, whatever state the old one is in."""
    options = options or CertOptions()
    now = now or dt.datetime.now(dt.UTC)
    files = CertFiles(directory)
    authority = _load_authority(files, now)
    if authority is None:
        raise CertificateError(f"{files.ca_crt}: no usable CA to sign with; run `webhook certs` first")
    return _issue_leaf(files, authority, service_dns_names(service, namespace), options, now)


def ca_bundle_base64(path: Path) -> str:
    """The ``caBundle`` value of a webhook configuration: base64 of the PEM bundle."""
    return base64.b64encode(path.read_bytes()).decode("ascii")


def read_certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _load_authority(files: CertFiles, now: dt.datetime) -> _Authority | None:
    """The CA state on disk; None when there is no CA to keep (none, half of one, or expired).
    A CA that is there but broken is an error: replacing it silently would break every client."""
    crt, key_data = _read(files.ca_crt), _read(files.ca_key)
    if crt is None or key_data is None:
        return None
    bundle = parse_certificates(crt, str(files.ca_crt))
    key = parse_private_key(key_data, str(files.ca_key))
    signer = next((cert for cert in bundle if same_public_key(cert.public_key(), key.public_key())), None)
    if signer is None:
        raise CertificateError(f"{files.ca_key} fits none of the {len(bundle)} certificates in {files.ca_crt}; "
                               "refusing to replace a CA that clients may trust")
    if signer.not_valid_after_utc <= now:
        return None
    authority = _Authority(bundle, signer, key)
    next_data = _read(files.ca_next_key)
    if next_data is not None:
        next_key = parse_private_key(next_data, str(files.ca_next_key))
        match = next((c for c in bundle if same_public_key(c.public_key(), next_key.public_key())), None)
        if match is None or match is signer:
            # Left by an interrupted stage 1 (never published) or stage 2 (already promoted).
            files.ca_next_key.unlink()
        else:
            authority.next, authority.next_key = match, next_key
    return authority


def _create_ca(files: CertFiles, options: CertOptions, now: dt.datetime) -> _Authority:
    key = options.key.generate()
    ca = new_ca(key, now, options.ca_validity)
    _write(files.ca_key, key_pem(key), private=True)
    _write(files.ca_crt, certs_pem([ca]))
    files.ca_next_key.unlink(missing_ok=True)
    return _Authority([ca], ca, key)


def _start_rotation(files: CertFiles, authority: _Authority, options: CertOptions, now: dt.datetime) -> None:
    """Stage 1: publish a new CA beside the old one; the old one keeps signing."""
    key = options.key.generate()
    ca = new_ca(key, now, options.ca_validity)
    _write(files.ca_next_key, key_pem(key), private=True)  # first: a crash here leaves nothing published
    authority.bundle = [*authority.bundle, ca]
    authority.next, authority.next_key = ca, key
    _write(files.ca_crt, certs_pem(authority.bundle))
    authority.notes.append(ROTATION_STEPS[1])


def _promote_next(files: CertFiles, authority: _Authority, names: list[str], options: CertOptions,
                  now: dt.datetime) -> None:
    """Stage 2: the new CA signs a new leaf, served with the new CA cross-signed by the old one."""
    if authority.next is None or authority.next_key is None:
        raise CertificateError("no next CA to promote")
    old, old_key = authority.signer, authority.signer_key
    authority.signer, authority.signer_key = authority.next, authority.next_key
    authority.next = authority.next_key = None
    _issue_leaf(files, authority, names, options, now, chain=[cross_sign(authority.signer, old, old_key, now)])
    _write(files.ca_key, key_pem(authority.signer_key), private=True)
    files.ca_next_key.unlink()
    authority.notes.append(ROTATION_STEPS[2])


def _ensure_leaf(files: CertFiles, authority: _Authority, names: list[str], options: CertOptions,
                 now: dt.datetime) -> bool:
    """Re-issue the leaf if it needs it, else only rewrite tls.crt if its chain should change."""
    try:
        served = parse_certificates(_read(files.tls_crt), str(files.tls_crt))
        key = parse_private_key(_read(files.tls_key), str(files.tls_key))
    except CertificateError:
        served, key = [], None
    leaf = served[0] if served else None
    if key is None or leaf is None or _needs_new_leaf(leaf, key, authority.signer, names, options=options, now=now):
        _issue_leaf(files, authority, names, options, now, chain=_chain(authority, served[1:], now))
        return True
    chain = _chain(authority, served[1:], now)
    if [c.fingerprint(hashes.SHA256()) for c in chain] != [c.fingerprint(hashes.SHA256()) for c in served[1:]]:
        _write(files.tls_crt, certs_pem([leaf, *chain]))
    return False


def _served_chain(files: CertFiles) -> list[x509.Certificate]:
    try:
        return parse_certificates(_read(files.tls_crt), str(files.tls_crt))[1:]
    except CertificateError:
        return []


def _needs_new_leaf(leaf: x509.Certificate, key: PrivateKey, signer: x509.Certificate, names: list[str], *,
                    options: CertOptions, now: dt.datetime) -> bool:
    if not same_public_key(leaf.public_key(), key.public_key()) or not issued_by(leaf, signer):
        return True
    if not options.key.fits(key):
        return True
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    margin = options.renew_before if options.renew_before is not None else lifetime / 3
    if leaf.not_valid_after_utc - now < margin:
        return True
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return True
    return set(sans.get_values_for_type(x509.DNSName)) != set(names)


def _chain(authority: _Authority, current: list[x509.Certificate], now: dt.datetime) -> list[x509.Certificate]:
    """The cross-signed copies of the signing CA that still lead into ca.crt (and one more in stage 1)."""
    others = [ca for ca in authority.bundle if ca is not authority.signer]
    keep = [
        cert for cert in current
        if same_public_key(cert.public_key(), authority.signer.public_key())
        and cert.not_valid_after_utc > now and any(issued_by(cert, other) for other in others)
    ]
    if authority.next is not None and authority.next_key is not None and not any(
        issued_by(cert, authority.next) for cert in keep
    ):
        keep.append(cross_sign(authority.signer, authority.next, authority.next_key, now))
    return keep


def _issue_leaf(files: CertFiles, authority: _Authority, names: list[str], options: CertOptions,
                now: dt.datetime, *, chain: list[x509.Certificate] | None = None) -> x509.Certificate:
    key = options.key.generate()
    validity = options.leaf_validity
    cert = new_leaf(authority.signer, authority.signer_key, key, names, now=now, validity=validity)
    if chain is None:
        chain = _chain(authority, _served_chain(files), now)
    # Both written and synced first, then renamed back to back: a reader can catch the pair
    # between the renames only for microseconds, and then sees a mismatch and keeps the old pair.
    _write_all([(files.tls_key, key_pem(key), True), (files.tls_crt, certs_pem([cert, *chain]), False)])
    return cert


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    _write_all([(path, data, private)])


def _write_all(writes: list[tuple[Path, bytes, bool]]) -> None:
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
    except BaseException:
        for tmp, _ in temporary:
            Path(tmp).unlink(missing_ok=True)
        raise

