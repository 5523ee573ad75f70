"""The enveloped document signature: what is refused before any digest is computed, and the legacy allow-list."""

from __future__ import annotations

import pytest
from lxml import etree

from accesspoint.envelopes._common import EnvelopeError
from accesspoint.envelopes.signature import LEGACY_SHA1, DsigAlgorithm, sign_enveloped, verify_enveloped
from accesspoint.security.keys import KeyPair
from accesspoint.testing import pki

DS = "{http://www.w3.org/2000/09/xmldsig#}"


@pytest.fixture(scope="module")
def keys() -> KeyPair:
    return pki.issue(pki.make_ca("Signature CA"), "signer")


def _signed(keys: KeyPair) -> etree._Element:
    root = etree.fromstring(b'<doc xmlns="urn:example"><a>1</a><b Id="x">2</b></doc>')
    # Re-parsed: lxml's find misses the nodes libxmlsec writes until the tree is read back.
    return etree.fromstring(etree.tostring(sign_enveloped(root, keys)))


def test_signature_covers_the_whole_document(keys: KeyPair) -> None:
    """A fresh signature verifies and reports the algorithms it used: exclusive C14N, RSA-SHA256, SHA-256."""
    verified = verify_enveloped(_signed(keys), expected=keys.certificate)
    assert verified.signer == keys.certificate
    assert {DsigAlgorithm.EXC_C14N, DsigAlgorithm.RSA_SHA256, DsigAlgorithm.SHA256} <= verified.algorithms


def test_ec_key_signs_with_ecdsa() -> None:
    """An EC key signs with ECDSA-SHA256 and verifies."""
    keys = pki.issue(pki.make_ca("EC CA", "p256"), "ec signer", "p256")
    assert DsigAlgorithm.ECDSA_SHA256 in verify_enveloped(_signed(keys)).algorithms


def test_reference_to_a_part_is_refused(keys: KeyPair) -> None:
    """A Reference to one element (#x), not the whole document, is refused."""
    root = _signed(keys)
    root.find(f"{DS}Signature/{DS}SignedInfo/{DS}Reference").set("URI", "#x")  # type: ignore[union-attr]
    with pytest.raises(EnvelopeError, match="must cover the whole document"):
        verify_enveloped(root)


def test_signature_not_a_child_of_the_root_is_refused(keys: KeyPair) -> None:
    """A signature moved below the root is not an enveloped signature of the document."""
    root = _signed(keys)
    signature = root[-1]
    root[0].append(signature)
    with pytest.raises(EnvelopeError, match="found 0"):
        verify_enveloped(root)


def test_unknown_transform_is_refused(keys: KeyPair) -> None:
    """An XPath transform in the Reference is refused."""
    root = _signed(keys)
    transforms = root.find(f"{DS}Signature/{DS}SignedInfo/{DS}Reference/{DS}Transforms")
    assert transforms is not None
    etree.SubElement(transforms, f"{DS}Transform", Algorithm="http://www.w3.org/TR/1999/REC-xpath-19991116")
    with pytest.raises(EnvelopeError, match="transform not allowed"):
        verify_enveloped(root)


def test_sha1_needs_the_legacy_allow_list(keys: KeyPair) -> None:
    """A SHA-1 digest is refused by default and only reaches the digest check with the legacy allow-list."""
    root = _signed(keys)
    digest = root.find(f"{DS}Signature/{DS}SignedInfo/{DS}Reference/{DS}DigestMethod")
    assert digest is not None
    digest.set("Algorithm", DsigAlgorithm.SHA1)
    with pytest.raises(EnvelopeError, match="algorithm not allowed"):
        verify_enveloped(root)
    with pytest.raises(EnvelopeError, match="does not verify"):
        verify_enveloped(root, allowed=frozenset(DsigAlgorithm) | LEGACY_SHA1)


def test_tampered_content_is_refused(keys: KeyPair) -> None:
    """Changing signed text is detected."""
    root = _signed(keys)
    root[0].text = "2"
    with pytest.raises(EnvelopeError, match="does not verify"):
        verify_enveloped(root)


def test_missing_certificate_is_refused(keys: KeyPair) -> None:
    """Without an expected certificate, KeyInfo must carry one."""
    root = _signed(keys)
    key_info = root.find(f"{DS}Signature/{DS}KeyInfo")
    assert key_info is not None
    key_info.getparent().remove(key_info)  # type: ignore[union-attr]
    with pytest.raises(EnvelopeError, match="KeyInfo must carry"):
        verify_enveloped(root)
    assert verify_enveloped(root, expected=keys.certificate).signer == keys.certificate
