"""A private CA and the serving certificate the API server verifies.

The file names are those of a mounted ``kubernetes.io/tls`` Secret (``tls.crt``, ``tls.key``,
``ca.crt``), so the same directory layout works on a laptop and in a cluster. Writes are
atomic and private keys are 0600, because a half-written key is an outage.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 365


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
    def tls_crt(self) -> Path:
        return self.directory / "tls.crt"

    @property
    def tls_key(self) -> Path:
        return self.directory / "tls.key"

    def serving_pair_present(self) -> bool:
        return self.tls_crt.is_file() and self.tls_key.is_file()


@dataclass(frozen=True, slots=True)
class CertResult:
    files: CertFiles
    generated_ca: bool
    issued_leaf: bool


def service_dns_names(service: str, namespace: str) -> list[str]:
    """The names the API server may use: it verifies ``<svc>.<ns>.svc``."""
    return [
        "localhost",
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]


def ensure_certificates(
    directory: Path, service: str, namespace: str, *, now: dt.datetime | None = None
) -> CertResult:
    """Keep a CA that is still valid; (re)issue the serving certificate when it is missing,
    expiring within a third of its lifetime, for other names, or signed by another CA."""
    now = now or dt.datetime.now(dt.UTC)
    files = CertFiles(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ca = _load_ca(files, now)
    generated_ca = ca is None
    if ca is None:
        ca = _new_ca(now)
        _write(files.ca_key, _key_pem(ca[1]), private=True)
        _write(files.ca_crt, ca[0].public_bytes(serialization.Encoding.PEM))
    names = service_dns_names(service, namespace)
    issued = generated_ca or not _leaf_ok(files, ca[0], names, now)
    if issued:
        cert, key = _new_leaf(ca[0], ca[1], names, now)
        _write(files.tls_key, _key_pem(key), private=True)
        _write(files.tls_crt, cert.public_bytes(serialization.Encoding.PEM))
    return CertResult(files, generated_ca, issued)


def ca_bundle_base64(path: Path) -> str:
    """The ``caBundle`` value of a webhook configuration: base64 of the PEM bundle."""
    return base64.b64encode(path.read_bytes()).decode("ascii")


def read_certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _load_ca(files: CertFiles, now: dt.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    try:
        cert = read_certificate(files.ca_crt)
        key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    except (OSError, ValueError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        return None
    if cert.not_valid_after_utc <= now:
        return None
    return cert, key


def _leaf_ok(files: CertFiles, ca: x509.Certificate, names: list[str], now: dt.datetime) -> bool:
    try:
        leaf = read_certificate(files.tls_crt)
        key = serialization.load_pem_private_key(files.tls_key.read_bytes(), password=None)
        leaf.verify_directly_issued_by(ca)
    except (OSError, ValueError, TypeError, InvalidSignature):
        return False
    if key.public_key() != leaf.public_key():
        return False
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    if leaf.not_valid_after_utc - now < lifetime / 3:
        return False
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return set(sans.get_values_for_type(x509.DNSName)) == set(names)


def _new_ca(now: dt.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"admission-webhook CA {now:%Y-%m-%d %H:%M:%S}")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _new_leaf(
    ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, names: list[str], now: dt.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[3])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=LEAF_DAYS), ca.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    """Write to a temporary file beside ``path``, then rename: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600 if private else 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
