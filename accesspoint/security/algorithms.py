"""Every security algorithm and transform URI, as Enums whose value is the URI."""

from __future__ import annotations

from enum import StrEnum


class C14N(StrEnum):
    """Canonicalization methods."""

    EXCLUSIVE = "http://www.w3.org/2001/10/xml-exc-c14n#"
    EXCLUSIVE_WITH_COMMENTS = "http://www.w3.org/2001/10/xml-exc-c14n#WithComments"


class SignatureAlgorithm(StrEnum):
    """ds:SignatureMethod algorithms."""

    RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
    RSA_SHA384 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384"
    RSA_SHA512 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512"
    ECDSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
    ECDSA_SHA384 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384"
    ECDSA_SHA512 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512"
    ED25519 = "http://www.w3.org/2021/04/xmldsig-more#eddsa-ed25519"
    # Legacy: only through SecurityPolicy.legacy_algorithms.
    RSA_SHA1 = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"


class DigestAlgorithm(StrEnum):
    """ds:DigestMethod algorithms."""

    SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
    SHA384 = "http://www.w3.org/2001/04/xmldsig-more#sha384"
    SHA512 = "http://www.w3.org/2001/04/xmlenc#sha512"
    SHA1 = "http://www.w3.org/2000/09/xmldsig#sha1"


class Transform(StrEnum):
    """Reference transforms AS4 uses."""

    EXCLUSIVE_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
    ENVELOPED_SIGNATURE = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
    ATTACHMENT_CONTENT_SIGNATURE = (
        "http://docs.oasis-open.org/wss/oasis-wss-SwAProfile-1.1#Attachment-Content-Signature-Transform"
    )
    ATTACHMENT_COMPLETE_SIGNATURE = (
        "http://docs.oasis-open.org/wss/oasis-wss-SwAProfile-1.1#Attachment-Complete-Signature-Transform"
    )
    ATTACHMENT_CIPHERTEXT = "http://docs.oasis-open.org/wss/oasis-wss-SwAProfile-1.1#Attachment-Ciphertext-Transform"


class DataEncryption(StrEnum):
    """xenc:EncryptedData algorithms."""

    AES128_GCM = "http://www.w3.org/2009/xmlenc11#aes128-gcm"
    AES192_GCM = "http://www.w3.org/2009/xmlenc11#aes192-gcm"
    AES256_GCM = "http://www.w3.org/2009/xmlenc11#aes256-gcm"


class KeyTransport(StrEnum):
    """xenc:EncryptedKey key-transport algorithms (1.15)."""

    RSA_OAEP_XMLENC11 = "http://www.w3.org/2009/xmlenc11#rsa-oaep"
    # MGF1 with SHA-1: legacy, only through SecurityPolicy.legacy_algorithms.
    RSA_OAEP_MGF1P = "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p"


class MaskGeneration(StrEnum):
    """xenc11:MGF algorithms for RSA-OAEP."""

    MGF1_SHA1 = "http://www.w3.org/2009/xmlenc11#mgf1sha1"
    MGF1_SHA256 = "http://www.w3.org/2009/xmlenc11#mgf1sha256"
    MGF1_SHA384 = "http://www.w3.org/2009/xmlenc11#mgf1sha384"
    MGF1_SHA512 = "http://www.w3.org/2009/xmlenc11#mgf1sha512"


class KeyAgreement(StrEnum):
    """xenc:AgreementMethod algorithms (2.0)."""

    X25519 = "http://www.w3.org/2021/04/xmldsig-more#x25519"
    ECDH_ES = "http://www.w3.org/2009/xmlenc11#ECDH-ES"


class KeyDerivation(StrEnum):
    """xenc11:KeyDerivationMethod algorithms (2.0)."""

    HKDF = "http://www.w3.org/2021/04/xmldsig-more#hkdf"
    CONCAT_KDF = "http://www.w3.org/2009/xmlenc11#ConcatKDF"


class KeyWrap(StrEnum):
    """Symmetric key wrap for EncryptedKey under key agreement (2.0)."""

    AES128 = "http://www.w3.org/2001/04/xmlenc#kw-aes128"
    AES192 = "http://www.w3.org/2001/04/xmlenc#kw-aes192"
    AES256 = "http://www.w3.org/2001/04/xmlenc#kw-aes256"


class HkdfPrf(StrEnum):
    """HKDF pseudo-random functions (dsig-more:HKDFParams/PRF)."""

    HMAC_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#hmac-sha256"
    HMAC_SHA384 = "http://www.w3.org/2001/04/xmldsig-more#hmac-sha384"
    HMAC_SHA512 = "http://www.w3.org/2001/04/xmldsig-more#hmac-sha512"


class NamedCurve(StrEnum):
    """EC curves of the 2.0 ECDSA/ECDH-ES alternative, as dsig11:NamedCurve URIs."""

    SECP256R1 = "urn:oid:1.2.840.10045.3.1.7"
    SECP384R1 = "urn:oid:1.3.132.0.34"
    SECP521R1 = "urn:oid:1.3.132.0.35"
    BRAINPOOLP256R1 = "urn:oid:1.3.36.3.3.2.8.1.1.7"


class TokenType(StrEnum):
    """WSS X.509 token profile value types and the other STR types AS4 meets."""

    X509V3 = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509v3"
    X509_PKIPATH_V1 = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509PKIPathv1"
    X509_SKI = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509SubjectKeyIdentifier"
    ENCRYPTED_KEY = "http://docs.oasis-open.org/wss/oasis-wss-soap-message-security-1.1#EncryptedKey"
    BASE64_BINARY = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary"


class EncryptedDataType(StrEnum):
    """xenc:EncryptedData/@Type values for SwA attachments."""

    ATTACHMENT_CONTENT_ONLY = "http://docs.oasis-open.org/wss/oasis-wss-SwAProfile-1.1#Attachment-Content-Only"
    ATTACHMENT_COMPLETE = "http://docs.oasis-open.org/wss/oasis-wss-SwAProfile-1.1#Attachment-Complete"


# Algorithms whose security rests on SHA-1: refused unless a policy lists them in legacy_algorithms.
SHA1_BASED: frozenset[str] = frozenset(
    {
        SignatureAlgorithm.RSA_SHA1,
        DigestAlgorithm.SHA1,
        KeyTransport.RSA_OAEP_MGF1P,
        MaskGeneration.MGF1_SHA1,
    }
)
