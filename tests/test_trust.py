"""Trust in certificates: pinned ones, paths to anchors, validity at a given moment, key usage, CN binding."""

from __future__ import annotations

import logging
import subprocess
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from accesspoint.core.errors import EbmsError, ErrorCode
from accesspoint.security.keys import KeyLoadError, KeyPair
from accesspoint.security.policy import RevocationMode, TrustSettings
from accesspoint.security.revocation import describe
from accesspoint.security.trust import (
    WIRE_DETAIL,
    CertificateUsage,
    TrustError,
    TrustFailure,
    TrustResult,
    load_truststore,
    validate_certificate,
)
from accesspoint.testing.pki import KeyType, issue, make_ca, new_key
from tests.conftest import interop_path
from tests.trustpki import (
    AGREEMENT_ONLY,
    CA_USAGE,
    ENCIPHER_ONLY,
    SIGN_ONLY,
    certificate,
    intermediate,
    root,
)

AT = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
SIGNATURE = CertificateUsage.SIGNATURE
ENCRYPTION = CertificateUsage.ENCRYPTION
OFF = RevocationMode.OFF


@pytest.fixture(scope="module")
def hierarchy() -> tuple[KeyPair, KeyPair, KeyPair]:
    """Root (RSA) -> issuing CA (P-256) -> access point certificate (P-256), CN = the Peppol-style seat id."""
    top = root(kind="rsa", path_length=1)
    issuing = intermediate(top, path_length=0)
    leaf = certificate("PTE000001", issuer=issuing)
    return top, issuing, leaf


def _anchored(top: KeyPair, **options: object) -> TrustSettings:
    return TrustSettings(anchors=(top.certificate,), revocation=OFF, **options)  # type: ignore[arg-type]


def _refused(
    leaf: x509.Certificate,
    chain: list[x509.Certificate],
    trust: TrustSettings,
    *,
    at: datetime = AT,
    usage: CertificateUsage = SIGNATURE,
    party_id: str | None = None,
) -> TrustError:
    with pytest.raises(TrustError) as caught:
        validate_certificate(leaf, chain, trust, at=at, usage=usage, party_id=party_id)
    return caught.value


def _peppol_chain() -> list[x509.Certificate]:
    pem = interop_path("phase4/keys/POP000306-expired-2021.chain.pem").read_bytes()
    return x509.load_pem_x509_certificates(pem)


# ------------------------------------------------------------------------------------------ valid paths


def test_chain_from_message_reaches_anchor(hierarchy: tuple[KeyPair, KeyPair, KeyPair]) -> None:
    """A leaf with its issuing CA in the message chain is trusted through the configured root."""
    top, issuing, leaf = hierarchy
    result = validate_certificate(leaf.certificate, [issuing.certificate], _anchored(top), at=AT, usage=SIGNATURE)
    assert isinstance(result, TrustResult)
    assert result.path == (leaf.certificate, issuing.certificate, top.certificate)
    assert result.anchor == top.certificate
    assert not result.pinned
    assert result.revocation == () and result.warnings == ()


def test_intermediates_from_settings(hierarchy: tuple[KeyPair, KeyPair, KeyPair]) -> None:
    """Intermediates configured in TrustSettings complete a path the message did not carry."""
    top, issuing, leaf = hierarchy
    trust = _anchored(top, intermediates=(issuing.certificate,))
    result = validate_certificate(leaf.certificate, [], trust, at=AT, usage=ENCRYPTION)
    assert result.path == (leaf.certificate, issuing.certificate, top.certificate)


def test_chain_order_and_extra_certificates_do_not_matter(hierarchy: tuple[KeyPair, KeyPair, KeyPair]) -> None:
    """A PKIPath given root first, with unrelated certificates mixed in, still yields the one valid path."""
    top, issuing, leaf = hierarchy
    stranger = root("Unrelated Root")
    chain = [top.certificate, stranger.certificate, issuing.certificate, leaf.certificate]
    result = validate_certificate(leaf.certificate, chain, _anchored(top), at=AT, usage=SIGNATURE)
    assert result.path == (leaf.certificate, issuing.certificate, top.certificate)


@pytest.mark.parametrize(
    ("kind", "pss"),
    [("rsa", False), ("rsa", True), ("p256", False), ("p384", False), ("ed25519", False), ("brainpool", False)],
    ids=["rsa-pkcs1", "rsa-pss", "ecdsa-p256", "ecdsa-p384", "ed25519", "ecdsa-brainpool"],
)
def test_signature_algorithms_on_the_path(kind: KeyType, pss: bool) -> None:
    """Paths signed with RSA PKCS#1 v1.5, RSA-PSS, ECDSA (NIST and brainpool curves) and Ed25519 verify."""
    top = root(kind=kind, pss=pss)
    issuing = intermediate(top, kind=kind, pss=pss)
    leaf = certificate("PTE000009", kind, issuer=issuing, pss=pss)
    result = validate_certificate(leaf.certificate, [issuing.certificate], _anchored(top), at=AT, usage=SIGNATURE)
    assert len(result.path) == 3


def test_leaf_without_key_usage_serves_both_purposes(hierarchy: tuple[KeyPair, KeyPair, KeyPair]) -> None:
    """Without a keyUsage extension a key may sign and encrypt (RFC 5280 4.2.1.3)."""
    top, issuing, _ = hierarchy
    leaf = certificate("PTE000003", issuer=issuing, key_usage=None)
    for usage in CertificateUsage:
        validate_certificate(leaf.certificate, [issuing.certificate], _anchored(top), at=AT, usage=usage)


def test_critical_eku_is_tolerated(hierarchy: tuple[KeyPair, KeyPair, KeyPair]) -> None:
    """A critical extendedKeyUsage (Peppol AP certificates carry clientAuth) does not stop the path."""
    top, issuing, _ = hierarchy
    eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    leaf = certificate("PTE000004", issuer=issuing, extra=[(eku, True)])
    validate_certificate(leaf.certificate, [issuing.certificate], _anchored(top), at=AT, usage=SIGNATURE)


# ------------------------------------------------------------------------------------------- validity


def test_expired_leaf_refused(hierarchy: tuple[KeyPair, KeyPair, KeyPair]) -> None:
    """A moment after notAfter refuses the certificate as expired, with an EBMS:0101 that says expired and no more."""
    top, issuing, leaf = hierarchy
    later = leaf.certificate.not_valid_after_utc + timedelta(seconds=1)
    error = _refused(leaf.certificate, [issuing.certificate], _anchored(top), at=later)
    assert isinstance(error, EbmsError)
    assert error.error_code is ErrorCode.FAILED_AUTHENTICATION and error.code == "EBMS:0101"
    assert error.failure is TrustFailure.EXPIRED
    assert error.detail == f"{WIRE_DETAIL}: expired"
    assert error.log_detail == error.reason
    assert leaf.certificate.not_valid_after_utc.isoformat() in error.reason


def test_not_yet_valid_leaf_refused(hierarchy: tuple[KeyPair, KeyPair, KeyPair]) -> None:
    """A moment before notBefore refuses the certificate as not yet valid."""
    top, issuing, leaf = hierarchy
    earlier = leaf.certificate.not_valid_before_utc - timedelta(seconds=1)
    error = _refused(leaf.certificate, [issuing.certificate], _anchored(top), at=earlier)
    assert error.failure is TrustFailure.NOT_YET_VALID


def test_a_certificate_is_valid_at_the_very_instants_its_validity_starts_and_ends() -> None:
    """notBefore and notAfter are inclusive (RFC 5280 4.1.2.5): the leaf is trusted at each of those instants."""
    top = root()
    issuing = intermediate(top)
    leaf = certificate("PTE000004", issuer=issuing).certificate
    for at in (leaf.not_valid_before_utc, leaf.not_valid_after_utc):
        validate_certificate(leaf, [issuing.certificate], _anchored(top), at=at, usage=SIGNATURE)


def test_expired_intermediate_refused() -> None:
    """An intermediate past its notAfter breaks the path even when the leaf is still valid."""
    top = root()
    issuing = intermediate(top, not_after=datetime(2025, 1, 1, tzinfo=UTC))
    leaf = certificate("PTE000005", issuer=issuing)
    error = _refused(leaf.certificate, [issuing.certificate], _anchored(top))
    assert error.failure is TrustFailure.EXPIRED
    assert error.reason.startswith("intermediate ")


def test_naive_moment_rejected(hierarchy: tuple[KeyPair, KeyPair, KeyPair]) -> None:
    """The moment of validation must carry a timezone."""
    top, _, leaf = hierarchy
    with pytest.raises(ValueError, match="timezone"):
        validate_certificate(leaf.certificate, [], _anchored(top), at=datetime(2026, 1, 1), usage=SIGNATURE)


# ------------------------------------------------------------------------------------------ untrusted


def test_python_peers_sender_trusted_by_its_ca() -> None:
    """The python-peers sender certificate chains to the interop test CA."""
    sender = load_truststore(interop_path("python-peers/pki/sender.cert.pem"))[0]
    anchors = load_truststore(interop_path("python-peers/pki/ca.cert.pem"))
    result = validate_certificate(sender, [], TrustSettings(anchors=anchors, revocation=OFF), at=AT, usage=SIGNATURE)
    assert result.anchor == anchors[0]


def test_same_name_other_key_ca_is_untrusted() -> None:
    """A CA with the issuer's name but another key (python-peers untrusted-ca) does not make the sender trusted."""
    sender = load_truststore(interop_path("python-peers/pki/sender.cert.pem"))[0]
    impostor = load_truststore(interop_path("python-peers/pki/untrusted-ca.cert.pem"))
    assert impostor[0].subject == sender.issuer
    error = _refused(sender, [], TrustSettings(anchors=impostor, revocation=OFF))
    assert error.failure is TrustFailure.UNTRUSTED_ISSUER
    assert error.code == "EBMS:0101"


@pytest.mark.parametrize("change", ["key rolled over", "key type changed", "certificate renewed"])
def test_a_certificate_is_trusted_through_the_anchor_that_issued_it_past_a_same_named_one_that_fails(
    change: str,
) -> None:
    """Two anchors with one name, the first listed failing (another key, a key of another type, or the same key
    in an expired certificate): the path search goes on to the second, which issued the certificate, and trusts
    it."""
    if change.startswith("key"):
        old = make_ca("Rollover CA", "p256" if change == "key rolled over" else "ed25519")
        new = make_ca("Rollover CA", "p256")
        leaf = issue(new, "PTE000001", "p256").certificate  # no authorityKeyIdentifier: order decides
    else:
        key = new_key("p256")
        old = root("Renewed CA", key=key, not_after=AT - timedelta(days=1))
        new = root("Renewed CA", key=key, not_before=AT - timedelta(days=2))
        leaf = certificate("PTE000001", issuer=new).certificate
    trust = TrustSettings(anchors=(old.certificate, new.certificate), revocation=OFF)
    result = validate_certificate(leaf, [], trust, at=AT, usage=SIGNATURE)
    assert result.anchor == new.certificate


def test_a_certificate_whose_only_same_named_anchor_has_a_key_of_another_type_is_refused_as_an_invalid_path() -> None:
    """An anchor whose key cannot check the certificate's signature at all (Ed25519 under an ECDSA signature)
    is refused as INVALID_PATH, the reason naming both certificates and why the check could not run."""
    impostor, issuer = make_ca("Rollover CA", "ed25519"), make_ca("Rollover CA", "p256")
    leaf = issue(issuer, "PTE000001", "p256").certificate
    error = _refused(leaf, [], _anchored(impostor))
    assert (error.failure, error.code) == (TrustFailure.INVALID_PATH, "EBMS:0101")
    assert error.reason == (
        f"cannot check the signature on {describe(leaf)} by {describe(impostor.certificate)}: "
        "Signature algorithm does not match issuer key type"
    )


def test_a_path_of_more_than_eight_certificates_is_refused_and_one_of_eight_is_trusted() -> None:
    """Leaf, six intermediates and the anchor (eight certificates) are trusted; one intermediate more and the
    search stops before the anchor: INVALID_PATH, the reason naming the limit."""
    top = root()
    issuers = [top]
    for level in range(7):
        issuers.append(intermediate(issuers[-1], f"Level {level} CA"))
    within = certificate("PTE000001", issuer=issuers[-2])
    chain = [c.certificate for c in issuers[1:]]
    result = validate_certificate(within.certificate, chain, _anchored(top), at=AT, usage=SIGNATURE)
    assert len(result.path) == 8 and result.anchor == top.certificate
    beyond = certificate("PTE000001", issuer=issuers[-1])
    error = _refused(beyond.certificate, chain, _anchored(top))
    assert (error.failure, error.reason) == (TrustFailure.INVALID_PATH, "no anchor within 8 certificates")


def test_impostor_intermediate_in_message_is_untrusted(hierarchy: tuple[KeyPair, KeyPair, KeyPair]) -> None:
    """An intermediate the sender made up, with the real issuing CA's name, does not chain to the root."""
    top, issuing, _ = hierarchy
    fake_issuer = root(issuing.certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value)  # type: ignore[arg-type]
    fake_leaf = certificate("PTE000001", issuer=fake_issuer)
    error = _refused(fake_leaf.certificate, [fake_issuer.certificate], _anchored(top))
    assert error.failure is TrustFailure.UNTRUSTED_ISSUER


def test_missing_intermediate_is_untrusted(hierarchy: tuple[KeyPair, KeyPair, KeyPair]) -> None:
    """Without the issuing CA (neither in the message nor configured) there is no path."""
    top, _, leaf = hierarchy
    error = _refused(leaf.certificate, [], _anchored(top))
    assert error.failure is TrustFailure.UNTRUSTED_ISSUER


def test_nothing_configured_trusts_nothing(hierarchy: tuple[KeyPair, KeyPair, KeyPair]) -> None:
    """With neither anchors nor pins every certificate is refused."""
    _, issuing, leaf = hierarchy
    error = _refused(leaf.certificate, [issuing.certificate], TrustSettings(revocation=OFF))
    assert error.failure is TrustFailure.UNTRUSTED_ISSUER


# ----------------------------------------------------------------------------------- path constraints


def test_issuer_that_is_not_a_ca_refused(hierarchy: tuple[KeyPair, KeyPair, KeyPair]) -> None:
    """A certificate issued by an end-entity certificate (basicConstraints CA false) is refused."""
    top, issuing, leaf = hierarchy
    below = certificate("PTE000006", issuer=leaf)
    error = _refused(below.certificate, [leaf.certificate, issuing.certificate], _anchored(top))
    assert error.failure is TrustFailure.INVALID_PATH


def test_intermediate_without_basic_constraints_refused() -> None:
    """An intermediate without basicConstraints may not issue (RFC 5280 6.1.4 (k))."""
    top = root()
    issuing = intermediate(top, ca=None)
    leaf = certificate("PTE000007", issuer=issuing)
    error = _refused(leaf.certificate, [issuing.certificate], _anchored(top))
    assert error.failure is TrustFailure.INVALID_PATH


def test_ca_without_key_cert_sign_refused() -> None:
    """An intermediate whose keyUsage lacks keyCertSign may not issue."""
    top = root()
    issuing = intermediate(top, key_usage=x509.KeyUsage(True, False, False, False, False, False, True, False, False))
    leaf = certificate("PTE000008", issuer=issuing)
    error = _refused(leaf.certificate, [issuing.certificate], _anchored(top))
    assert error.failure is TrustFailure.INVALID_PATH


def test_path_length_constraint_enforced() -> None:
    """A root with pathLenConstraint 0 may not have an intermediate below it."""
    top = root(path_length=0)
    issuing = intermediate(top)
    leaf = certificate("PTE000010", issuer=issuing)
    error = _refused(leaf.certificate, [issuing.certificate], _anchored(top))
    assert error.failure is TrustFailure.INVALID_PATH
    direct = certificate("PTE000011", issuer=top)
    validate_certificate(direct.certificate, [], _anchored(top), at=AT, usage=SIGNATURE)


def test_unknown_critical_extension_refused(hierarchy: tuple[KeyPair, KeyPair, KeyPair]) -> None:
    """An unrecognised critical extension makes the certificate unusable (RFC 5280 4.2)."""
    top, issuing, _ = hierarchy
    odd = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00")
    leaf = certificate("PTE000012", issuer=issuing, extra=[(odd, True)])
    error = _refused(leaf.certificate, [issuing.certificate], _anchored(top))
    assert error.failure is TrustFailure.UNSUPPORTED_EXTENSION


def test_short_rsa_key_refused(hierarchy: tuple[KeyPair, KeyPair, KeyPair]) -> None:
    """A 1024-bit RSA key is refused however well it chains."""
    top, issuing, _ = hierarchy
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 (the point of the test)
    leaf = certificate("PTE000013", issuer=issuing, key=weak)
    error = _refused(leaf.certificate, [issuing.certificate], _anchored(top))
    assert error.failure is TrustFailure.INVALID_PATH


def test_sha1_signed_certificate_refused(tmp_path: Path) -> None:
    """A leaf signed with SHA-1 (made by openssl, which still can) is refused, and the reason names SHA-1."""
    top = root(kind="rsa")
    key_file, ca_file, out = tmp_path / "ca.key", tmp_path / "ca.pem", tmp_path / "leaf.pem"
    key_file.write_bytes(
        top.private_key.private_bytes(  # type: ignore[union-attr]
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    ca_file.write_bytes(top.certificate.public_bytes(serialization.Encoding.PEM))
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(tmp_path / "leaf.key"),
         "-subj", "/CN=PTE000014", "-CA", str(ca_file), "-CAkey", str(key_file), "-sha1", "-days", "30",
         "-out", str(out)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    leaf = x509.load_pem_x509_certificate(out.read_bytes())
    assert leaf.signature_hash_algorithm is not None and leaf.signature_hash_algorithm.name == "sha1"
    now = leaf.not_valid_before_utc + timedelta(minutes=1)
    error = _refused(leaf, [], _anchored(top), at=now)
    assert error.failure is TrustFailure.INVALID_PATH
    assert "SHA1" in error.reason


# ------------------------------------------------------------------------------------------ key usage


def test_encryption_only_key_refused_for_signature(hierarchy: tuple[KeyPair, KeyPair, KeyPair]) -> None:
    """A certificate whose keyUsage is only keyEncipherment may not vouch for a signature."""
    top, issuing, _ = hierarchy
    leaf = certificate("PTE000015", "rsa", issuer=issuing, key_usage=ENCIPHER_ONLY)
    error = _refused(leaf.certificate, [issuing.certificate], _anchored(top), usage=SIGNATURE)
    assert error.failure is TrustFailure.KEY_USAGE
    validate_certificate(leaf.certificate, [issuing.certificate], _anchored(top), at=AT, usage=ENCRYPTION)


def test_signature_only_key_refused_for_encryption(hierarchy: tuple[KeyPair, KeyPair, KeyPair]) -> None:
    """A digitalSignature-only certificate may not be an encryption target."""
    top, issuing, _ = hierarchy
    leaf = certificate("PTE000016", issuer=issuing, key_usage=SIGN_ONLY)
    error = _refused(leaf.certificate, [issuing.certificate], _anchored(top), usage=ENCRYPTION)
    assert error.failure is TrustFailure.KEY_USAGE


def test_x25519_agreement_certificate(hierarchy: tuple[KeyPair, KeyPair, KeyPair]) -> None:
    """An eDelivery 2.0 X25519 certificate (keyAgreement) serves encryption and not signatures."""
    top, issuing, _ = hierarchy
    leaf = certificate("PTE000017", "x25519", issuer=issuing, key_usage=AGREEMENT_ONLY)
    validate_certificate(leaf.certificate, [issuing.certificate], _anchored(top), at=AT, usage=ENCRYPTION)
    error = _refused(leaf.certificate, [issuing.certificate], _anchored(top), usage=SIGNATURE)
    assert error.failure is TrustFailure.KEY_USAGE


# ------------------------------------------------------------------------------------------ CN binding


def test_cn_bound_to_party_id(hierarchy: tuple[KeyPair, KeyPair, KeyPair]) -> None:
    """With the Peppol binding, the CN must equal the sender's PartyId (case aside)."""
    top, issuing, leaf = hierarchy
    trust = _anchored(top, bind_cn_to_party_id=True)
    chain = [issuing.certificate]
    validate_certificate(leaf.certificate, chain, trust, at=AT, usage=SIGNATURE, party_id="PTE000001")
    validate_certificate(leaf.certificate, chain, trust, at=AT, usage=SIGNATURE, party_id="pte000001")
    mismatch = _refused(leaf.certificate, chain, trust, party_id="PTE000002")
    assert mismatch.failure is TrustFailure.PARTY_MISMATCH
    missing = _refused(leaf.certificate, chain, trust, party_id=None)
    assert missing.failure is TrustFailure.PARTY_MISMATCH


def test_cn_binding_off_ignores_party_id(hierarchy: tuple[KeyPair, KeyPair, KeyPair]) -> None:
    """Without the binding the PartyId plays no part."""
    top, issuing, leaf = hierarchy
    validate_certificate(
        leaf.certificate, [issuing.certificate], _anchored(top), at=AT, usage=SIGNATURE, party_id="someone-else"
    )


def test_required_certificate_policies(hierarchy: tuple[KeyPair, KeyPair, KeyPair]) -> None:
    """A required certificate policy must be asserted by the end entity; without it the certificate is refused."""
    _, issuing, _ = hierarchy
    wanted = "1.3.6.1.4.1.99999.1.2"
    trust = _anchored(issuing, required_policies=(wanted,))
    asserting = issue(issuing, "PTE000001", "p256", policies=(wanted, "1.3.6.1.4.1.99999.7"))
    validate_certificate(asserting.certificate, [], trust, at=AT, usage=SIGNATURE)
    for policies in ((), ("1.3.6.1.4.1.99999.7",)):
        other = issue(issuing, "PTE000001", "p256", policies=policies)
        refused = _refused(other.certificate, [], trust)
        assert refused.failure is TrustFailure.POLICY and wanted in refused.reason
    validate_certificate(
        issue(issuing, "PTE000001", "p256").certificate, [], _anchored(issuing), at=AT, usage=SIGNATURE
    )


# ---------------------------------------------------------------------------------------------- pinning


def test_a_pinned_self_signed_certificate_is_trusted_without_anchors_and_an_unpinned_one_is_not() -> None:
    """Pinned alone (no anchors), a self-signed partner certificate is trusted as pinned; another one is refused."""
    partner = certificate("PTE000017").certificate
    trust = TrustSettings(pinned=(partner,), revocation=OFF)
    result = validate_certificate(partner, [], trust, at=AT, usage=SIGNATURE)
    assert result.pinned and result.path == (partner,) and result.anchor is None
    stranger = certificate("PTE000017").certificate
    assert _refused(stranger, [], trust).failure is TrustFailure.UNTRUSTED_ISSUER


def test_pinned_partner_certificate() -> None:
    """A pinned self-signed partner certificate (Domibus blue_gw) is trusted as such while it is valid."""
    blue = load_truststore(interop_path("domibus/keys/blue_gw.cert.pem"))
    red = load_truststore(interop_path("domibus/keys/red_gw.cert.pem"))[0]
    trust = TrustSettings(pinned=blue, revocation=OFF)
    then = datetime(2020, 6, 1, tzinfo=UTC)
    result = validate_certificate(blue[0], [], trust, at=then, usage=SIGNATURE)
    assert result.pinned and result.path == (blue[0],) and result.anchor is None
    expired = _refused(blue[0], [], trust, at=AT)  # blue_gw expired on 2025-12-01
    assert expired.failure is TrustFailure.EXPIRED
    other = _refused(red, [], trust, at=then)
    assert other.failure is TrustFailure.UNTRUSTED_ISSUER


def test_pin_is_exact_not_by_name() -> None:
    """A certificate with the pinned one's subject, issuer and serial but another key is not pinned."""
    pinned = certificate("PTE000018", ca=True, key_usage=None, serial=42)
    twin = certificate("PTE000018", ca=True, key_usage=None, serial=42)
    error = _refused(twin.certificate, [], TrustSettings(pinned=(pinned.certificate,), revocation=OFF))
    assert error.failure is TrustFailure.UNTRUSTED_ISSUER


def test_pinned_certificate_still_needs_key_usage(hierarchy: tuple[KeyPair, KeyPair, KeyPair]) -> None:
    """Pinning does not lift the keyUsage check."""
    _, issuing, _ = hierarchy
    leaf = certificate("PTE000019", issuer=issuing, key_usage=SIGN_ONLY)
    error = _refused(leaf.certificate, [], TrustSettings(pinned=(leaf.certificate,), revocation=OFF), usage=ENCRYPTION)
    assert error.failure is TrustFailure.KEY_USAGE


# ------------------------------------------------------------------------------------------ truststores


def test_pkcs12_truststore_with_password() -> None:
    """Domibus' gateway_truststore.p12 (password test123) holds blue_gw and red_gw, trusted as anchors."""
    store = load_truststore(interop_path("domibus/keys/gateway_truststore.p12"), "test123")
    names = sorted(c.subject.rfc4514_string() for c in store)
    assert names == ["C=BE,O=eDelivery,CN=blue_gw", "C=BE,O=eDelivery,CN=red_gw"]
    blue = load_truststore(interop_path("domibus/keys/blue_gw.cert.pem"))[0]
    result = validate_certificate(
        blue, [], TrustSettings(anchors=store, revocation=OFF), at=datetime(2020, 6, 1, tzinfo=UTC), usage=SIGNATURE
    )
    assert result.pinned  # the certificate itself is in the truststore


def test_pkcs12_truststore_wrong_password() -> None:
    """A wrong truststore password is a load error naming the file."""
    with pytest.raises(KeyLoadError, match="gateway_truststore"):
        load_truststore(interop_path("domibus/keys/gateway_truststore.p12"), b"wrong")


def test_truststore_from_pem_and_der_files(tmp_path: Path, hierarchy: tuple[KeyPair, KeyPair, KeyPair]) -> None:
    """PEM files with several certificates and DER files load together, each certificate once."""
    top, issuing, _ = hierarchy
    pem = tmp_path / "bundle.pem"
    der = tmp_path / "root.cer"
    encode = serialization.Encoding
    pem.write_bytes(top.certificate.public_bytes(encode.PEM) + issuing.certificate.public_bytes(encode.PEM))
    der.write_bytes(top.certificate.public_bytes(encode.DER))
    store = load_truststore([pem, der])
    assert store == (top.certificate, issuing.certificate)


# ---------------------------------------------------------------------------------------------- Peppol


def test_peppol_expired_chain_as_of_its_validity() -> None:
    """POP000306 (expired 2021) chains to the Peppol test PKI as of 2020 with phase4's complete truststore."""
    leaf, issuing, _root = _peppol_chain()
    anchors = load_truststore(interop_path("phase4/keys/complete-truststore.pem"))
    assert len(anchors) == 19
    trust = TrustSettings(anchors=anchors, revocation=OFF, bind_cn_to_party_id=True)
    then = datetime(2020, 6, 1, tzinfo=UTC)
    for usage in CertificateUsage:
        result = validate_certificate(leaf, [issuing], trust, at=then, usage=usage, party_id="POP000306")
        # The truststore lists the AP test CA itself, so the path ends there.
        assert result.path == (leaf, issuing)
    error = _refused(leaf, [issuing], trust, at=AT, party_id="POP000306")
    assert error.failure is TrustFailure.EXPIRED


def test_peppol_chain_to_root_only() -> None:
    """With only the Peppol test root as anchor the path runs through the intermediate (pathLen 1 and 0 hold)."""
    leaf, issuing, peppol_root = _peppol_chain()
    trust = TrustSettings(anchors=(peppol_root,), revocation=OFF)
    result = validate_certificate(leaf, [issuing], trust, at=datetime(2020, 6, 1, tzinfo=UTC), usage=SIGNATURE)
    assert result.path == (leaf, issuing, peppol_root)


# -------------------------------------------------------------------------------- revocation settings


def test_hard_fail_without_checker_refuses(hierarchy: tuple[KeyPair, KeyPair, KeyPair]) -> None:
    """Hard-fail revocation with no checker configured fails closed."""
    top, issuing, leaf = hierarchy
    trust = replace(_anchored(top), revocation=RevocationMode.HARD_FAIL)
    error = _refused(leaf.certificate, [issuing.certificate], trust)
    assert error.failure is TrustFailure.REVOCATION_UNKNOWN


def test_soft_fail_without_checker_warns(
    hierarchy: tuple[KeyPair, KeyPair, KeyPair], caplog: pytest.LogCaptureFixture
) -> None:
    """Soft-fail revocation with no checker passes, with a warning in the result and the log."""
    top, issuing, leaf = hierarchy
    trust = replace(_anchored(top), revocation=RevocationMode.SOFT_FAIL)
    with caplog.at_level(logging.WARNING, logger="accesspoint.security.trust"):
        result = validate_certificate(leaf.certificate, [issuing.certificate], trust, at=AT, usage=SIGNATURE)
    assert len(result.warnings) == 1
    assert [r.levelno for r in caplog.records] == [logging.WARNING]


def test_anchor_without_basic_constraints_accepted() -> None:
    """A configured anchor needs no basicConstraints (old v1-style roots), an intermediate does."""
    top = root(ca=None, key_usage=CA_USAGE)
    leaf = certificate("PTE000020", issuer=top)
    validate_certificate(leaf.certificate, [], _anchored(top), at=AT, usage=SIGNATURE)
