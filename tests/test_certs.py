"""Certificates made by our own code: names, chain, key files, and when they are re-issued."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

from cryptography import x509

from webhook.certs import CertFiles, ensure_certificates, read_certificate

NOW = dt.datetime(2026, 11, 21, tzinfo=dt.UTC)


def sans(path: Path) -> tuple[set[str], set[str]]:
    ext = read_certificate(path).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(ext.get_values_for_type(x509.DNSName)), {str(ip) for ip in ext.get_values_for_type(x509.IPAddress)}


def test_serving_certificate_names_and_chain(tmp_path: Path) -> None:
    result = ensure_certificates(tmp_path, "hook", "ops", now=NOW)
    assert result.generated_ca and result.issued_leaf
    assert sans(result.files.tls_crt) == (
        {"localhost", "hook", "hook.ops", "hook.ops.svc", "hook.ops.svc.cluster.local"},
        {"127.0.0.1"},
    )
    leaf = read_certificate(result.files.tls_crt)
    ca = read_certificate(result.files.ca_crt)
    leaf.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_private_keys_are_0600(tmp_path: Path) -> None:
    files = ensure_certificates(tmp_path, "hook", "ops").files
    for key in (files.tls_key, files.ca_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.tls_crt.stat().st_mode) == 0o644
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_a_valid_ca_and_leaf_are_kept(tmp_path: Path) -> None:
    first = ensure_certificates(tmp_path, "hook", "ops", now=NOW)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    second = ensure_certificates(tmp_path, "hook", "ops", now=NOW + dt.timedelta(days=30))
    assert not second.generated_ca and not second.issued_leaf
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert first.files == second.files


def test_leaf_is_reissued_for_new_names_under_the_same_ca(tmp_path: Path) -> None:
    ensure_certificates(tmp_path, "hook", "ops", now=NOW)
    ca_before = CertFiles(tmp_path).ca_crt.read_bytes()
    result = ensure_certificates(tmp_path, "hook", "other", now=NOW)
    assert result.issued_leaf and not result.generated_ca
    assert result.files.ca_crt.read_bytes() == ca_before
    assert "hook.other.svc" in sans(result.files.tls_crt)[0]


def test_leaf_is_renewed_in_the_last_third_of_its_life(tmp_path: Path) -> None:
    ensure_certificates(tmp_path, "hook", "ops", now=NOW)
    assert not ensure_certificates(tmp_path, "hook", "ops", now=NOW + dt.timedelta(days=240)).issued_leaf
    renewed = ensure_certificates(tmp_path, "hook", "ops", now=NOW + dt.timedelta(days=250))
    assert renewed.issued_leaf and not renewed.generated_ca
    assert read_certificate(renewed.files.tls_crt).not_valid_after_utc > NOW + dt.timedelta(days=600)


def test_a_leaf_from_another_ca_is_replaced(tmp_path: Path) -> None:
    ensure_certificates(tmp_path / "a", "hook", "ops", now=NOW)
    ensure_certificates(tmp_path / "b", "hook", "ops", now=NOW)
    for name in ("tls.crt", "tls.key"):
        (tmp_path / "a" / name).write_bytes((tmp_path / "b" / name).read_bytes())
    result = ensure_certificates(tmp_path / "a", "hook", "ops", now=NOW)
    assert result.issued_leaf
    read_certificate(result.files.tls_crt).verify_directly_issued_by(read_certificate(result.files.ca_crt))
