"""The certificate directory: a private CA, the serving certificate, renewal and staged CA rotation.

The file names are those of a mounted ``kubernetes.io/tls`` Secret (``tls.crt``, ``tls.key``,
``ca.crt``), so the same directory layout works on a laptop and in a cluster. ``ca.crt`` is what
the caBundle publishes; during a rotation it holds two CAs. ``ca.key`` signs; ``ca-next.key``
exists only between rotation stages 1 and 2. Writes are atomic and private keys are 0600,
because a half-written key is an outage.

A rotation never leaves a client stranded: in stage 1 the old leaf is served with the old CA
cross-signed by the new one, and in stage 2 the new leaf with the new CA cross-signed by the old
one, so a client that trusts either CA alone, or both, verifies the server throughout.

Nothing clients may trust is replaced implicitly. A new CA is made only in a directory with no
certificate files at all, or in place of a CA that has expired; a directory with some of the files
is completed only where that keeps every client working (a lost ``tls.key`` is re-issued under
``ca.key``), and is otherwise refused with what is missing and what to run. Without ``ca.key``
the pair is kept as it is, and ``--rotate-ca`` moves to a new CA.
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from webhook.certdir import make_directory, read_optional, remove, write_all
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
        """Both halves of the pair are there; one that is there but unreadable is an error, not absent."""
        return read_optional(self.tls_crt) is not None and read_optional(self.tls_key) is not None


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
    signer_key: PrivateKey | None  # None: ca.crt without ca.key; keeps what it vouches for, signs nothing
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
    ``rotate_ca``, take the CA rotation one stage further.

    A CA that clients may trust is never replaced implicitly, and neither is a pair this directory
    did not make: a directory that cannot be completed safely is a ``CertificateError`` that says
    what is missing and what to run, raised before anything is written."""
    options = options or CertOptions()
    now = now or dt.datetime.now(dt.UTC)
    files = CertFiles(directory)
    make_directory(directory)
    authority = _load_authority(files, now)
    names = service_dns_names(service, namespace)
    generated_ca = authority is None
    if authority is None:
        replaced = read_optional(files.ca_crt) is not None
        authority = _create_ca(files, options, now)
        if replaced:
            authority.notes.append(f"every CA in {files.ca_crt} had expired, so no client could trust it any more; "
                                   "a new CA replaced it: publish the new ca.crt as the caBundle")
    elif authority.signer_key is None:
        _check_unsigned_run(files, authority, names, options, now, rotate_ca=rotate_ca)
    half_pair = [p.name for p in (files.tls_crt, files.tls_key) if read_optional(p) is None]
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
    if issued and not generated_ca and len(half_pair) == 1:
        authority.notes.append(f"{directory / half_pair[0]} was missing: a new serving certificate and key were "
                               f"issued under the CA in {files.ca_crt}, which clients already trust")
    if rotated_to is None and authority.stage:
        authority.notes.append(f"CA rotation in progress: stage {authority.stage} of 3 done; "
                               "run --rotate-ca again to continue")
    if authority.signer_key is None and rotated_to is None:
        authority.notes.append(f"{files.ca_key} is missing, so the CA in {files.ca_crt} cannot sign: the serving "
                               "certificate is kept, but cannot be renewed here; restore ca.key, or move to a new "
                               "CA with --rotate-ca")
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
    if authority is None or authority.signer_key is None:
        raise CertificateError(f"{files.ca_key}: no usable CA key to sign with; run `webhook certs` first")
    return _issue_leaf(files, authority, service_dns_names(service, namespace), options, now)


def ca_bundle_base64(path: Path) -> str:
    """The ``caBundle`` value of a webhook configuration: base64 of the PEM bundle, as it is on disk.

    Only reads: printing a bundle must never change the directory it comes from."""
    data = read_optional(path)
    if data is None:
        raise CertificateError(f"{path}: file is missing; create it with 'webhook certs --cert-dir {path.parent}'")
    parse_certificates(data, str(path))
    return base64.b64encode(data).decode("ascii")


def read_certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _listing(files: CertFiles, missing: list[Path]) -> str:
    """``certs: tls.key and ca.key are missing (ca.crt and tls.crt are there)``."""
    there = [p.name for p in (files.ca_crt, files.ca_key, files.tls_crt, files.tls_key)
             if p not in missing and read_optional(p) is not None]
    gone = [p.name for p in missing]
    text = f"{files.directory}: {_and(gone)} {'is' if len(gone) == 1 else 'are'} missing"
    return text + (f" ({_and(there)} {'is' if len(there) == 1 else 'are'} there)" if there else "")


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _start_over(files: CertFiles) -> str:
    return f"move {files.directory} aside to start over with a new CA (and publish its ca.crt as the caBundle)"


def _load_authority(files: CertFiles, now: dt.datetime) -> _Authority | None:
    """The CA state on disk; None when there is no CA to keep (none at all, or only expired ones).

    A CA that clients may trust is never replaced: one that is there but broken, or that cannot be
    completed without inventing a new CA, is an error that says what is missing and what to do."""
    crt, key_data = read_optional(files.ca_crt), read_optional(files.ca_key)
    if crt is None:
        _refuse_without_ca(files, has_key=key_data is not None)
        return None
    bundle = parse_certificates(crt, str(files.ca_crt))
    if key_data is None:
        return _keyless_authority(files, bundle, now)
    key = parse_private_key(key_data, str(files.ca_key))
    signer = next((cert for cert in bundle if same_public_key(cert.public_key(), key.public_key())), None)
    if signer is None:
        raise CertificateError(f"{files.ca_key} fits none of the {len(bundle)} certificates in {files.ca_crt}; "
                               "refusing to replace a CA that clients may trust")
    if signer.not_valid_after_utc <= now:
        return None
    authority = _Authority(bundle, signer, key)
    _load_next(files, authority)
    return authority


def _refuse_without_ca(files: CertFiles, *, has_key: bool) -> None:
    """No ca.crt: start afresh only in an empty directory."""
    present = [p for p in (files.tls_crt, files.tls_key) if read_optional(p) is not None]
    if has_key:
        raise CertificateError(f"{_listing(files, [files.ca_crt])}: the CA certificate that clients trust is gone, "
                               f"and a new CA would overwrite ca.key. Restore ca.crt, or {_start_over(files)}")
    if len(present) == 2:
        raise CertificateError(f"{_listing(files, [files.ca_crt, files.ca_key])}: the serving certificate was "
                               "issued by a CA that is not here, and renewing it here would replace it "
                               "('webhook serve' serves the pair as it is). Add that CA as ca.crt and ca.key, "
                               f"or {_start_over(files)}")
    if present:
        other = files.tls_key if present[0] == files.tls_crt else files.tls_crt
        raise CertificateError(f"{_listing(files, [other, files.ca_crt, files.ca_key])}: a serving certificate "
                               f"needs both files, and there is no CA here to issue a new pair. Restore "
                               f"{other.name}, or {_start_over(files)}")


def _keyless_authority(files: CertFiles, bundle: list[x509.Certificate], now: dt.datetime) -> _Authority | None:
    """ca.crt without ca.key (a Secret copied back, or a lost key): keep the pair it vouches for as it
    is, and let --rotate-ca move to a new CA; anything that needs signing is an error."""
    if all(ca.not_valid_after_utc <= now for ca in bundle):
        return None  # no client can trust an expired CA, so replacing it breaks nobody
    unsignable = ("without ca.key the CA in ca.crt cannot sign a new serving certificate, and a new CA would "
                  "break every client that trusts this one")
    missing = [p for p in (files.tls_crt, files.tls_key) if read_optional(p) is None]
    if missing:
        raise CertificateError(f"{_listing(files, [*missing, files.ca_key])}: {unsignable}. Restore "
                               f"{_and([p.name for p in missing])} (or ca.key), or {_start_over(files)}")
    try:
        served = parse_certificates(read_optional(files.tls_crt), str(files.tls_crt))
        key = parse_private_key(read_optional(files.tls_key), str(files.tls_key))
        if not same_public_key(served[0].public_key(), key.public_key()):
            raise CertificateError(f"{files.tls_key} does not belong to {files.tls_crt}")
    except CertificateError as exc:
        raise CertificateError(f"{exc}; and {files.ca_key} is missing, so {unsignable}. Restore the files, "
                               f"or {_start_over(files)}") from None
    signer = next((ca for ca in bundle if ca.not_valid_after_utc > now and issued_by(served[0], ca)), None)
    if signer is None:
        raise CertificateError(f"{files.tls_crt} was not issued by a valid CA in {files.ca_crt}, and "
                               f"{files.ca_key} is missing, so {unsignable}. Restore ca.key, or {_start_over(files)}")
    authority = _Authority(bundle, signer, None)
    _load_next(files, authority)
    return authority


def _load_next(files: CertFiles, authority: _Authority) -> None:
    """ca-next.key: the new CA's key between rotation stages 1 and 2, or the leftover of a crash."""
    next_data = read_optional(files.ca_next_key)
    if next_data is None:
        return
    next_key = parse_private_key(next_data, str(files.ca_next_key))
    match = next((c for c in authority.bundle if same_public_key(c.public_key(), next_key.public_key())), None)
    if match is not None and match is authority.signer and authority.signer_key is None:
        # Stage 2 without the old key crashed after the new leaf and before ca.key: finish it.
        _write(files.ca_key, next_data, private=True)
        authority.signer_key = next_key
        remove(files.ca_next_key)
    elif match is None or match is authority.signer:
        # Left by an interrupted stage 1 (never published) or stage 2 (already promoted).
        remove(files.ca_next_key)
    else:
        authority.next, authority.next_key = match, next_key


def _check_unsigned_run(files: CertFiles, authority: _Authority, names: list[str], options: CertOptions,
                        now: dt.datetime, *, rotate_ca: bool) -> None:
    """Without a CA key, a serving certificate that needs re-issuing is an error, before anything is
    written; except when --rotate-ca is starting or completing the move to a new CA that can sign it."""
    served = parse_certificates(read_optional(files.tls_crt), str(files.tls_crt))
    key = parse_private_key(read_optional(files.tls_key), str(files.tls_key))
    reason = _why_new_leaf(served[0], key, authority.signer, names, options=options, now=now)
    if reason is None:
        return
    if rotate_ca and authority.stage == 0:
        authority.notes.append(f"the serving certificate {reason}; without ca.key it can only be re-issued in "
                               "stage 2, under the new CA")
        return
    if rotate_ca and authority.stage == 1:
        return
    then = ("continue the CA rotation with --rotate-ca (stage 2 issues it under the new CA)" if authority.stage == 1
            else "start a CA rotation by running this command again with --rotate-ca (its stage 2 issues it "
            "under a new CA)")
    raise CertificateError(f"{files.tls_crt} needs re-issuing ({reason}), but {files.ca_key} is missing, so the CA "
                           f"in {files.ca_crt} cannot sign it. Restore ca.key, or {then}")


def _create_ca(files: CertFiles, options: CertOptions, now: dt.datetime) -> _Authority:
    key = options.key.generate()
    ca = new_ca(key, now, options.ca_validity)
    _write(files.ca_key, key_pem(key), private=True)
    _write(files.ca_crt, certs_pem([ca]))
    remove(files.ca_next_key)
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
    """Stage 2: the new CA signs a new leaf, served with the new CA cross-signed by the old one.

    Without the old CA's key there is no cross-signed copy; clients trust the new leaf through the
    stage 1 ca.crt, which holds both CAs, as the rotation guarantees."""
    if authority.next is None or authority.next_key is None:
        raise CertificateError("no next CA to promote")
    old, old_key = authority.signer, authority.signer_key
    authority.signer, authority.signer_key = authority.next, authority.next_key
    authority.next = authority.next_key = None
    chain = [] if old_key is None else [cross_sign(authority.signer, old, old_key, now)]
    _issue_leaf(files, authority, names, options, now, chain=chain)
    _write(files.ca_key, key_pem(authority.signer_key), private=True)
    remove(files.ca_next_key)
    authority.notes.append(ROTATION_STEPS[2])
    if old_key is None:
        authority.notes.append("without the old CA's key, the new serving certificate is not cross-signed: "
                               "clients need the ca.crt of stage 1 (both CAs), not the old CA alone")


def _ensure_leaf(files: CertFiles, authority: _Authority, names: list[str], options: CertOptions,
                 now: dt.datetime) -> bool:
    """Re-issue the leaf if it needs it, else only rewrite tls.crt if its chain should change.
    Without a CA key the leaf is kept: ``_check_unsigned_run`` has refused the runs where it may not be."""
    try:
        served = parse_certificates(read_optional(files.tls_crt), str(files.tls_crt))
        key: PrivateKey | None = parse_private_key(read_optional(files.tls_key), str(files.tls_key))
    except CertificateError:
        served, key = [], None
    leaf = served[0] if served else None
    if authority.signer_key is not None and (
        key is None or leaf is None
        or _why_new_leaf(leaf, key, authority.signer, names, options=options, now=now) is not None
    ):
        _issue_leaf(files, authority, names, options, now, chain=_chain(authority, served[1:], now))
        return True
    if leaf is None:
        raise CertificateError(f"{files.tls_crt}: no serving certificate, and no CA key to issue one")
    chain = _chain(authority, served[1:], now)
    if [c.fingerprint(hashes.SHA256()) for c in chain] != [c.fingerprint(hashes.SHA256()) for c in served[1:]]:
        _write(files.tls_crt, certs_pem([leaf, *chain]))
    return False


def _served_chain(files: CertFiles) -> list[x509.Certificate]:
    try:
        return parse_certificates(read_optional(files.tls_crt), str(files.tls_crt))[1:]
    except CertificateError:
        return []


def _why_new_leaf(leaf: x509.Certificate, key: PrivateKey, signer: x509.Certificate, names: list[str], *,
                  options: CertOptions, now: dt.datetime) -> str | None:
    """Why the serving certificate must be re-issued, in words for a message; None if it may be kept."""
    if not same_public_key(leaf.public_key(), key.public_key()):
        return "tls.key does not belong to it"
    if not issued_by(leaf, signer):
        return "it was not issued by the signing CA"
    if not options.key.fits(key):
        return f"its key is not {options.key}"
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    margin = options.renew_before if options.renew_before is not None else lifetime / 3
    if leaf.not_valid_after_utc - now < margin:
        return f"it expires on {leaf.not_valid_after_utc:%Y-%m-%d}, inside its renewal window"
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "it has no DNS names"
    if set(sans.get_values_for_type(x509.DNSName)) != set(names):
        return f"it is not for {names[3] if len(names) > 3 else names[0]}"
    return None


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
    if authority.signer_key is None:
        raise CertificateError(f"{files.ca_key}: no CA key to sign a serving certificate with")
    key = options.key.generate()
    validity = options.leaf_validity
    cert = new_leaf(authority.signer, authority.signer_key, key, names, now=now, validity=validity)
    if chain is None:
        chain = _chain(authority, _served_chain(files), now)
    # Both written and synced first, then renamed back to back: a reader can catch the pair
    # between the renames only for microseconds, and then sees a mismatch and keeps the old pair.
    write_all([(files.tls_key, key_pem(key), True), (files.tls_crt, certs_pem([cert, *chain]), False)])
    return cert


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    write_all([(path, data, private)])
