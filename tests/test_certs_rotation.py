"""Certificate options and the staged CA rotation, checked with real TLS handshakes (in memory,
our server context against a verifying client) rather than by reading fields alone."""

from __future__ import annotations

import datetime as dt
import ssl
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.conftest import SERVICE
from tests.tlsutil import handshake
from webhook.certs import CertOptions, ensure_certificates, read_certificate
from webhook.pki import CertificateError, KeySpec, certs_pem, issued_by, parse_certificates

NOW = dt.datetime(2026, 11, 21, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


def run(directory: Path, *, rotate: bool = False, now: dt.datetime = NOW, **options: object):  # type: ignore[no-untyped-def]
    return ensure_certificates(directory, SERVICE, SERVICE, options=CertOptions(**options),  # type: ignore[arg-type]
                               rotate_ca=rotate, now=now)


def bundle(directory: Path) -> list[x509.Certificate]:
    return parse_certificates((directory / "ca.crt").read_bytes(), "ca.crt")


def served(directory: Path) -> list[x509.Certificate]:
    return parse_certificates((directory / "tls.crt").read_bytes(), "tls.crt")


def pem(*certs: x509.Certificate) -> str:
    return certs_pem(certs).decode()


def trusted_by(directory: Path, trust: str) -> bool:
    try:
        handshake(directory, trust)
    except ssl.SSLError:
        return False
    return True


# --- key types and lifetimes ----------------------------------------------------------------

@pytest.mark.parametrize("bits", [2048, 3072])
def test_rsa_keys_of_either_size_serve(tmp_path: Path, bits: int) -> None:
    result = run(tmp_path, key=KeySpec("rsa", bits))
    for cert in (bundle(tmp_path)[0], served(tmp_path)[0]):
        key = cert.public_key()
        assert isinstance(key, rsa.RSAPublicKey) and key.key_size == bits
    assert result.generated_ca and result.issued_leaf
    handshake(tmp_path, pem(*bundle(tmp_path)))
    assert stat.S_IMODE((tmp_path / "tls.key").stat().st_mode) == 0o600


def test_ecdsa_p256_is_the_default(tmp_path: Path) -> None:
    run(tmp_path)
    key = served(tmp_path)[0].public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"


def test_another_key_type_reissues_the_leaf_and_keeps_the_ca(tmp_path: Path) -> None:
    run(tmp_path)
    ca = (tmp_path / "ca.crt").read_bytes()
    result = run(tmp_path, key=KeySpec("rsa", 2048))
    assert result.issued_leaf and not result.generated_ca
    assert (tmp_path / "ca.crt").read_bytes() == ca
    assert isinstance(served(tmp_path)[0].public_key(), rsa.RSAPublicKey)
    assert not run(tmp_path, key=KeySpec("rsa", 2048)).issued_leaf
    assert run(tmp_path, key=KeySpec("rsa", 3072)).issued_leaf


def test_lifetimes_are_configurable_and_a_leaf_never_outlives_its_ca(tmp_path: Path) -> None:
    run(tmp_path, ca_validity=400 * DAY, leaf_validity=30 * DAY)
    ca, leaf = bundle(tmp_path)[0], served(tmp_path)[0]
    assert ca.not_valid_after_utc == NOW + 400 * DAY
    assert leaf.not_valid_after_utc == NOW + 30 * DAY
    later = NOW + 390 * DAY
    result = run(tmp_path, now=later, leaf_validity=30 * DAY)
    assert result.issued_leaf
    assert served(tmp_path)[0].not_valid_after_utc == ca.not_valid_after_utc
    assert any("the CA expires on 2027-12-26" in note and "--rotate-ca" in note for note in result.notes)


def test_renew_before_sets_the_renewal_window(tmp_path: Path) -> None:
    run(tmp_path, leaf_validity=90 * DAY)
    assert not run(tmp_path, now=NOW + 59 * DAY, leaf_validity=90 * DAY, renew_before=30 * DAY).issued_leaf
    assert run(tmp_path, now=NOW + 61 * DAY, leaf_validity=90 * DAY, renew_before=30 * DAY).issued_leaf


def test_the_default_window_is_a_third_of_the_leafs_own_lifetime(tmp_path: Path) -> None:
    run(tmp_path, leaf_validity=90 * DAY)
    assert not run(tmp_path, now=NOW + 59 * DAY).issued_leaf
    assert run(tmp_path, now=NOW + 61 * DAY).issued_leaf


# --- CA rotation ----------------------------------------------------------------------------

def rotate_through_the_stages(directory: Path, old: Any, now: dt.datetime, old_alone_until: int,
                              each: Callable[[int, Any], None] = lambda stage, result: None) -> tuple[list[str], Any]:
    """Run the three stages of --rotate-ca; at each, clients of the ca.crt before and of this one
    connect, and so does one trusting the new CA alone, or the old one alone up to a stage."""
    published = [pem(old)]
    new = None
    for stage in (1, 2, 3):
        result = run(directory, rotate=True, now=now)
        assert result.rotated_to == stage
        published.append((directory / "ca.crt").read_text())
        new = bundle(directory)[-1]
        assert trusted_by(directory, published[-2]), f"stage {stage}: client of the stage before"
        assert trusted_by(directory, published[-1]), f"stage {stage}: client of this stage"
        assert trusted_by(directory, pem(new)), f"stage {stage}: new CA only"
        assert trusted_by(directory, pem(old)) is (stage <= old_alone_until), f"stage {stage}: old CA only"
        each(stage, result)
    return published, new


def test_each_stage_keeps_clients_of_the_stage_before_and_of_this_one(tmp_path: Path) -> None:
    """fine-print.md: at every stage, a client trusting the ca.crt of the stage before, or of the
    current one, can connect. Cross-signing adds: during the overlap, either CA alone is enough."""
    now = dt.datetime.now(dt.UTC)  # the handshakes check dates against the real clock
    run(tmp_path, now=now)
    old = bundle(tmp_path)[0]
    published, new = rotate_through_the_stages(tmp_path, old, now, old_alone_until=2)
    assert published[1] == published[2] == pem(old, new)
    assert published[3] == pem(new)


def test_the_files_at_each_stage(tmp_path: Path) -> None:
    run(tmp_path)
    old, first_leaf = bundle(tmp_path)[0], served(tmp_path)[0]

    one = run(tmp_path, rotate=True)
    assert (one.stage, one.issued_leaf) == (1, False)
    old_, new = bundle(tmp_path)
    assert old_ == old and stat.S_IMODE((tmp_path / "ca-next.key").stat().st_mode) == 0o600
    leaf, cross = served(tmp_path)
    assert leaf == first_leaf  # same leaf, same key; only the chain grew
    assert issued_by(leaf, old) and issued_by(cross, new) and cross.subject == old.subject
    assert "stage 1 of 3" in one.notes[0]

    two = run(tmp_path, rotate=True)
    assert (two.stage, two.issued_leaf) == (2, True)
    assert not (tmp_path / "ca-next.key").exists()
    leaf, cross = served(tmp_path)
    assert issued_by(leaf, new) and issued_by(cross, old) and cross.subject == new.subject
    assert bundle(tmp_path) == [old, new]

    three = run(tmp_path, rotate=True)
    assert (three.stage, three.issued_leaf) == (0, False)
    assert served(tmp_path) == [leaf]  # the cross-signed copy is gone with the old CA
    assert bundle(tmp_path) == [new]
    assert "stage 3 of 3" in three.notes[0]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_plain_run_mid_rotation_changes_nothing_and_says_where_it_is(tmp_path: Path) -> None:
    run(tmp_path)
    run(tmp_path, rotate=True)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    result = run(tmp_path)
    assert not result.issued_leaf and result.rotated_to is None
    assert result.notes == ("CA rotation in progress: stage 1 of 3 done; run --rotate-ca again to continue",)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize("stage", [1, 2])
def test_renewal_during_the_overlap_keeps_the_signer_and_the_cross_signed_chain(tmp_path: Path, stage: int) -> None:
    now = dt.datetime.now(dt.UTC)
    run(tmp_path, now=now)
    old = bundle(tmp_path)[0]
    for _ in range(stage):
        run(tmp_path, rotate=True, now=now)
    signer = bundle(tmp_path)[stage - 1]
    before = served(tmp_path)[0]
    renewed = run(tmp_path, now=now, renew_before=365 * DAY)  # inside the window at once
    assert renewed.issued_leaf and renewed.stage == stage
    leaf = served(tmp_path)[0]
    assert leaf != before and issued_by(leaf, signer)
    for trust in (pem(old), pem(bundle(tmp_path)[1]), (tmp_path / "ca.crt").read_text()):
        handshake(tmp_path, trust)


def test_an_interrupted_stage_1_is_undone(tmp_path: Path) -> None:
    run(tmp_path)
    before = (tmp_path / "ca.crt").read_bytes()
    run(tmp_path / "elsewhere")
    (tmp_path / "ca-next.key").write_bytes((tmp_path / "elsewhere" / "ca.key").read_bytes())  # never published
    result = run(tmp_path)
    assert result.stage == 0 and not (tmp_path / "ca-next.key").exists()
    assert (tmp_path / "ca.crt").read_bytes() == before


def test_an_interrupted_stage_2_is_finished(tmp_path: Path) -> None:
    run(tmp_path)
    run(tmp_path, rotate=True)
    # Crashed after promoting the key and before removing ca-next.key:
    (tmp_path / "ca.key").write_bytes((tmp_path / "ca-next.key").read_bytes())
    result = run(tmp_path)
    assert result.stage == 2 and result.issued_leaf and not (tmp_path / "ca-next.key").exists()
    _, new = bundle(tmp_path)
    assert issued_by(served(tmp_path)[0], new)
    handshake(tmp_path, pem(new))


def test_a_ca_key_that_fits_no_ca_is_an_error_and_nothing_is_written(tmp_path: Path) -> None:
    run(tmp_path)
    run(tmp_path / "other")
    (tmp_path / "ca.key").write_bytes((tmp_path / "other" / "ca.key").read_bytes())
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with pytest.raises(CertificateError, match=r"fits none of the 1 certificates in .*ca\.crt; refusing to replace"):
        run(tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_an_expired_ca_is_replaced_and_the_note_says_to_publish_it(tmp_path: Path) -> None:
    run(tmp_path, ca_validity=10 * DAY, leaf_validity=5 * DAY)
    result = run(tmp_path, now=NOW + 11 * DAY)
    assert result.generated_ca and result.issued_leaf
    assert any("publish the new ca.crt" in note for note in result.notes)
    assert read_certificate(tmp_path / "ca.crt").not_valid_before_utc > NOW + 10 * DAY


def test_rotating_a_ca_made_in_the_same_run_does_nothing(tmp_path: Path) -> None:
    result = run(tmp_path, rotate=True)
    assert result.generated_ca and result.rotated_to is None and result.stage == 0
    assert "nothing to rotate yet" in result.notes[0]


# --- without ca.key (a Secret copied back, or a lost key) -----------------------------------

def without_ca_key(directory: Path, **options: object) -> x509.Certificate:
    run(directory, **options)  # type: ignore[arg-type]
    (directory / "ca.key").unlink()
    return bundle(directory)[0]


def test_without_ca_key_the_pair_is_kept_and_nothing_is_replaced(tmp_path: Path) -> None:
    without_ca_key(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    result = run(tmp_path)
    assert not result.generated_ca and not result.issued_leaf
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert "ca.key is missing" in result.notes[0] and "--rotate-ca" in result.notes[0]


def test_without_ca_key_a_certificate_due_for_renewal_is_refused_with_the_way_out(tmp_path: Path) -> None:
    without_ca_key(tmp_path, leaf_validity=90 * DAY)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(CertificateError, match=r"tls\.crt needs re-issuing \(it expires on 2027-02-19, inside its "
                       r"renewal window\), but .*ca\.key is missing, so the CA in .*ca\.crt cannot sign it\. Restore "
                       r"ca\.key, or start a CA rotation by running this command again with --rotate-ca"):
        run(tmp_path, now=NOW + 61 * DAY)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_without_ca_key_rotation_moves_to_a_new_ca_and_keeps_clients_of_each_stage(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)  # the handshakes check dates against the real clock
    old = without_ca_key(tmp_path, now=now)

    def at_each_stage(stage: int, result: Any) -> None:
        assert (tmp_path / "ca.key").exists() is (stage > 1)
        assert any("not cross-signed" in note for note in result.notes) is (stage == 2)

    # Without the old key nothing can be cross-signed by it: from stage 2 the old CA alone is not enough.
    published, new = rotate_through_the_stages(tmp_path, old, now, old_alone_until=1, each=at_each_stage)
    assert published[1] == published[2] == pem(old, new)
    assert published[3] == pem(new)


def test_without_ca_key_stage_1_of_a_rotation_keeps_a_leaf_that_is_due_and_stage_2_renews_it(tmp_path: Path) -> None:
    without_ca_key(tmp_path, leaf_validity=90 * DAY)
    later = NOW + 61 * DAY
    one = run(tmp_path, rotate=True, now=later)
    assert one.rotated_to == 1 and not one.issued_leaf
    assert any("can only be re-issued in stage 2" in note for note in one.notes)
    with pytest.raises(CertificateError, match="continue the CA rotation with --rotate-ca"):
        run(tmp_path, now=later)
    two = run(tmp_path, rotate=True, now=later)
    assert two.rotated_to == 2 and two.issued_leaf
    assert issued_by(served(tmp_path)[0], bundle(tmp_path)[1])


def test_without_ca_key_an_interrupted_stage_2_is_finished(tmp_path: Path) -> None:
    without_ca_key(tmp_path)
    run(tmp_path, rotate=True)
    new = bundle(tmp_path)[1]
    next_key = (tmp_path / "ca-next.key").read_bytes()
    run(tmp_path, rotate=True)
    # Crashed after the new pair and before ca.key was written:
    (tmp_path / "ca.key").unlink()
    (tmp_path / "ca-next.key").write_bytes(next_key)
    result = run(tmp_path)
    assert result.stage == 2 and not (tmp_path / "ca-next.key").exists()
    assert (tmp_path / "ca.key").read_bytes() == next_key
    assert issued_by(served(tmp_path)[0], new)


def test_an_expired_ca_without_its_key_is_replaced_since_no_client_can_trust_it(tmp_path: Path) -> None:
    without_ca_key(tmp_path, ca_validity=10 * DAY, leaf_validity=5 * DAY)
    result = run(tmp_path, now=NOW + 11 * DAY)
    assert result.generated_ca and result.issued_leaf
    assert any("had expired" in note and "publish the new ca.crt" in note for note in result.notes)
