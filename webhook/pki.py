"""X.509 building blocks: keys, a CA, cross-signed CA certificates, leaves, and parsing with clear errors.

Pure functions of their inputs (the clock included), so the directory logic in ``certs.py`` and the
server's reload in ``server/tls.py`` share one idea of what a usable certificate is.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
Usage = Literal["server", "client"]
# Backdating covers clocks a little behind ours (API servers, nodes).
BACKDATE = dt.timedelta(minutes=5)


class CertificateError(ValueError):
    """A certificate or key that cannot be used; the message names the file and the reason."""


@dataclass(frozen=True, slots=True)
class KeySpec:
    """ECDSA P-256 unless asked otherwise: small, fast, and accepted by every API server."""

    kind: Literal["ecdsa", "rsa"] = "ecdsa"
    rsa_bits: int = 2048

    def generate(self) -> PrivateKey:
        if self.kind == "rsa":
            return rsa.generate_private_key(public_exponent=65537, key_size=self.rsa_bits)
        return ec.generate_private_key(ec.SECP256R1())

    def fits(self, key: object) -> bool:
        if self.kind == "rsa":
            return isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey) and key.key_size == self.rsa_bits
        return isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) and isinstance(
            key.curve, ec.SECP256R1
        )

    def __str__(self) -> str:
        return f"RSA {self.rsa_bits}" if self.kind == "rsa" else "ECDSA P-256"


def new_ca(key: PrivateKey, now: dt.datetime, validity: dt.timedelta) -> x509.Certificate:
    """A self-signed root. Path length 1 leaves room for one cross-signed CA below it during a rotation."""
    name = _ca_name(key, now)
    return _ca_builder(name, name, key, now, now + validity, path_length=1).sign(key, hashes.SHA256())


def cross_sign(ca: x509.Certificate, issuer: x509.Certificate, issuer_key: PrivateKey,
               now: dt.datetime) -> x509.Certificate:
    """``ca``'s name and key, vouched for by ``issuer``: served as an intermediate so that clients
    that trust only ``issuer`` accept leaves signed by ``ca`` (and the other way round)."""
    key = ca.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise CertificateError(f"cannot cross-sign a CA with a {type(key).__name__}")
    not_after = min(ca.not_valid_after_utc, issuer.not_valid_after_utc)
    builder = _ca_builder(ca.subject, issuer.subject, key, now, not_after, path_length=0)
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
    )
    return builder.sign(issuer_key, hashes.SHA256())


def new_leaf(ca: x509.Certificate, ca_key: PrivateKey, key: PrivateKey, names: Sequence[str], *,
             now: dt.datetime, validity: dt.timedelta, usage: Usage = "server",
             ips: Sequence[str] = ("127.0.0.1",), common_name: str | None = None) -> x509.Certificate:
    """A serving (or client) certificate, with ``names`` as DNS SANs; it never outlives its CA."""
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    eku = ExtendedKeyUsageOID.SERVER_AUTH if usage == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
    if common_name is None:
        common_name = names[3] if len(names) > 3 else names[0]
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + validity, ca.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(key, ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def certs_pem(certs: Sequence[x509.Certificate]) -> bytes:
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certs)


def parse_certificates(data: bytes | None, what: str) -> list[x509.Certificate]:
    """Every certificate in a PEM file, or an error that says which file and why."""
    if data is None:
        raise CertificateError(f"{what}: file is missing")
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise CertificateError(f"{what}: no PEM certificate in it ({len(data)} bytes)")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise CertificateError(f"{what}: not a valid PEM certificate (incomplete or corrupt): {exc}") from None


def parse_private_key(data: bytes | None, what: str) -> PrivateKey:
    if data is None:
        raise CertificateError(f"{what}: file is missing")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise CertificateError(f"{what}: the private key is encrypted; a serving key must not be") from None
    except (ValueError, UnsupportedAlgorithm):
        # cryptography's message can quote the input; never log key material.
        raise CertificateError(f"{what}: not a valid PEM private key (incomplete or corrupt)") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CertificateError(f"{what}: unsupported key type {type(key).__name__}; use ECDSA or RSA")
    return key


def same_public_key(a: CertificatePublicKeyTypes, b: CertificatePublicKeyTypes) -> bool:
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return a.public_bytes(der, spki) == b.public_bytes(der, spki)


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def chains_to(leaf: x509.Certificate, intermediates: Sequence[x509.Certificate],
              anchors: Sequence[x509.Certificate], now: dt.datetime) -> bool:
    """Is there a path of valid signatures from ``leaf`` through ``intermediates`` to one of ``anchors``,
    every CA on it inside its validity period? This is the question the API server's verification asks
    of the caBundle, names and the leaf's own dates aside (those are reported on their own)."""
    def valid(cert: x509.Certificate) -> bool:
        return cert.not_valid_before_utc <= now < cert.not_valid_after_utc

    def walk(cert: x509.Certificate, depth: int) -> bool:
        if any(valid(anchor) and issued_by(cert, anchor) for anchor in anchors):
            return True
        return depth < 4 and any(valid(mid) and issued_by(cert, mid) and walk(mid, depth + 1)
                                 for mid in intermediates)

    return walk(leaf, 0)


@contextmanager
def private_file(data: bytes) -> Iterator[str]:
    """A path to ``data`` for APIs that only read files (``SSLContext.load_cert_chain``).

    In memory where the system allows (memfd), so a key never lands on a disk, and so that it works
    on a read-only root filesystem; otherwise a 0600 temporary file that is removed at once.
    """
    if hasattr(os, "memfd_create") and Path("/proc/self/fd").is_dir():
        fd = os.memfd_create("webhook-tls", os.MFD_CLOEXEC)
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="webhook-tls-") as directory:
        path = Path(directory) / "material.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        yield str(path)


def _ca_name(key: PrivateKey, now: dt.datetime) -> x509.Name:
    # A name per CA: during a rotation two CAs coexist, and equal names would confuse path building.
    key_id = x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest.hex()[:8]
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"admission-webhook CA {now:%Y-%m-%d} {key_id}")])


def _ca_builder(subject: x509.Name, issuer: x509.Name, key: PrivateKey | ec.EllipticCurvePublicKey |
                rsa.RSAPublicKey, now: dt.datetime, not_after: dt.datetime,
                *, path_length: int) -> x509.CertificateBuilder:
    public = key if isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey) else key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_key_usage(public, ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )


def _key_usage(key: object, *, ca: bool) -> x509.KeyUsage:
    rsa_leaf = not ca and isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey)
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=rsa_leaf,
        data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
        encipher_only=False, decipher_only=False,
    )
