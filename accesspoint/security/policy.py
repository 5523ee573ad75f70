"""The security policy a P-Mode embeds: profile, algorithms, token reference, what is required, trust."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

from cryptography import x509

from accesspoint.security.algorithms import (
    C14N,
    SHA1_BASED,
    DataEncryption,
    DigestAlgorithm,
    HkdfPrf,
    KeyAgreement,
    KeyDerivation,
    KeyTransport,
    KeyWrap,
    MaskGeneration,
    NamedCurve,
    SignatureAlgorithm,
    Transform,
)


class Profile(StrEnum):
    """The eDelivery AS4 profile a policy follows."""

    EDELIVERY_1_15 = "edelivery-as4-1.15"
    EDELIVERY_2_0 = "edelivery-as4-2.0"


class TokenReference(StrEnum):
    """How a certificate is referenced from a signature or an EncryptedKey."""

    BST_X509V3 = "bst-x509v3"
    BST_PKIPATH = "bst-pkipath"
    ISSUER_SERIAL = "issuer-serial"
    SUBJECT_KEY_IDENTIFIER = "ski"


class RevocationMode(StrEnum):
    """What happens when a certificate's revocation status is looked up."""

    OFF = "off"
    SOFT_FAIL = "soft-fail"  # revoked refuses; unknown or unreachable passes (and is logged)
    HARD_FAIL = "hard-fail"  # anything but a fresh "good" refuses


@dataclass(frozen=True, slots=True)
class TrustSettings:
    """Whom to trust: CA anchors (chain validation) and/or pinned partner certificates."""

    anchors: tuple[x509.Certificate, ...] = ()
    pinned: tuple[x509.Certificate, ...] = ()
    intermediates: tuple[x509.Certificate, ...] = ()
    revocation: RevocationMode = RevocationMode.SOFT_FAIL
    # Peppol-style binding: the signer certificate's CN must equal the sender's PartyId.
    bind_cn_to_party_id: bool = False
    # Certificate policy OIDs the partner's end-entity certificate must each assert (a network's AP policy; the
    # eDelivery Dynamic Receiver checks the sender's certificate this way, AS4_DR_TA03).
    required_policies: tuple[str, ...] = ()


_COMMON_INCOMING: frozenset[str] = frozenset(
    {
        C14N.EXCLUSIVE,
        Transform.EXCLUSIVE_C14N,
        Transform.ATTACHMENT_CONTENT_SIGNATURE,
        Transform.ATTACHMENT_COMPLETE_SIGNATURE,
        Transform.ATTACHMENT_CIPHERTEXT,
        DigestAlgorithm.SHA256,
        DigestAlgorithm.SHA384,
        DigestAlgorithm.SHA512,
        DataEncryption.AES128_GCM,
        DataEncryption.AES192_GCM,
        DataEncryption.AES256_GCM,
    }
)

ALLOWED_1_15: frozenset[str] = _COMMON_INCOMING | {
    SignatureAlgorithm.RSA_SHA256,
    SignatureAlgorithm.RSA_SHA384,
    SignatureAlgorithm.RSA_SHA512,
    KeyTransport.RSA_OAEP_XMLENC11,
    MaskGeneration.MGF1_SHA256,
    MaskGeneration.MGF1_SHA384,
    MaskGeneration.MGF1_SHA512,
}

ALLOWED_2_0: frozenset[str] = _COMMON_INCOMING | {
    SignatureAlgorithm.ED25519,
    SignatureAlgorithm.ECDSA_SHA256,
    SignatureAlgorithm.ECDSA_SHA384,
    SignatureAlgorithm.ECDSA_SHA512,
    KeyAgreement.X25519,
    KeyAgreement.ECDH_ES,
    KeyDerivation.HKDF,
    HkdfPrf.HMAC_SHA256,
    KeyWrap.AES128,
    KeyWrap.AES192,
    KeyWrap.AES256,
}


@dataclass(frozen=True, slots=True)
class SecurityPolicy:
    """What to do on sending and what to require on receiving, for one P-Mode leg."""

    profile: Profile
    sign: bool = True
    encrypt: bool = True
    signature_algorithm: SignatureAlgorithm = SignatureAlgorithm.RSA_SHA256
    digest_algorithm: DigestAlgorithm = DigestAlgorithm.SHA256
    data_encryption: DataEncryption = DataEncryption.AES128_GCM
    key_transport: KeyTransport = KeyTransport.RSA_OAEP_XMLENC11
    key_agreement: KeyAgreement = KeyAgreement.X25519
    key_agreement_curve: NamedCurve | None = None  # for ECDH-ES
    key_wrap: KeyWrap = KeyWrap.AES128
    token_reference: TokenReference = TokenReference.BST_X509V3
    allowed_algorithms: frozenset[str] = ALLOWED_1_15
    # SHA-1 based algorithms (e.g. rsa-oaep-mgf1p) pass only when listed here explicitly.
    legacy_algorithms: frozenset[str] = frozenset()
    trust: TrustSettings = field(default_factory=TrustSettings)
    require_signed_receipts: bool = True

    def __post_init__(self) -> None:
        outgoing = {self.signature_algorithm, self.digest_algorithm, self.data_encryption}
        outgoing |= {self.key_transport} if self.profile is Profile.EDELIVERY_1_15 else {self.key_agreement}
        refused = {uri for uri in outgoing if not self.allows(uri)}
        if refused:
            raise ValueError(f"policy sends with algorithms it does not allow: {sorted(refused)}")
        ecdh = self.key_agreement is KeyAgreement.ECDH_ES and self.profile is Profile.EDELIVERY_2_0
        if ecdh and self.key_agreement_curve is None:
            raise ValueError("ECDH-ES needs key_agreement_curve")

    def allows(self, uri: str) -> bool:
        """True when an incoming algorithm URI is allowed (SHA-1 based ones only via the legacy list)."""
        if uri in SHA1_BASED:
            return uri in self.legacy_algorithms
        return uri in self.allowed_algorithms

    @classmethod
    def edelivery_1_15(cls, **overrides: object) -> SecurityPolicy:
        """The eDelivery AS4 1.15 defaults: RSA-SHA256, AES-128-GCM, RSA-OAEP (MGF1-SHA256), BST X509v3."""
        return replace(cls(profile=Profile.EDELIVERY_1_15), **overrides)  # type: ignore[arg-type]

    @classmethod
    def edelivery_2_0(cls, **overrides: object) -> SecurityPolicy:
        """The eDelivery AS4 2.0 defaults: Ed25519, X25519 + HKDF-SHA256 + kw-aes128, AES-128-GCM, PKIPath BST."""
        base = cls(
            profile=Profile.EDELIVERY_2_0,
            signature_algorithm=SignatureAlgorithm.ED25519,
            token_reference=TokenReference.BST_PKIPATH,
            allowed_algorithms=ALLOWED_2_0,
        )
        return replace(base, **overrides)  # type: ignore[arg-type]
