"""BDXL labels against the hash vectors in ../shared/interop/smp (hash-vectors.tsv, hash-vectors-extra.tsv)."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smp.identifiers import (
    Identifier,
    IdentifierError,
    bdxl_naptr_name,
    peppol_cname_name,
    peppol_md5_label,
    peppol_naptr_name,
    peppol_sha256_label,
    raw_sha256_label,
)
from tests.conftest import interop_path


def _rows(name: str) -> Iterator[list[str]]:
    for line in interop_path(f"smp/{name}").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            yield line.split("\t")


def test_hash_vectors_give_the_documented_labels() -> None:
    """Every row of hash-vectors.tsv: the SHA-256 label (compared case-insensitively, as DNS does) and the MD5 one."""
    rows = list(_rows("hash-vectors.tsv"))
    assert len(rows) == 5
    for value, sha_label, md5_label in rows:
        if sha_label != "-":
            # Upper-case rows are BDXL 1.6 style (hashed as given); none of the inputs has upper-case letters.
            assert raw_sha256_label(value) == sha_label.lower()
            assert peppol_sha256_label(value) == sha_label.lower()
        if md5_label != "-":
            assert peppol_md5_label(value) == md5_label


_RULES = {"peppol-sha256": peppol_sha256_label, "raw-sha256": raw_sha256_label, "peppol-md5": peppol_md5_label}


def test_extra_hash_vectors_tell_lowercasing_apart() -> None:
    """Each row of hash-vectors-extra.tsv gives its expected label under its own rule."""
    rows = list(_rows("hash-vectors-extra.tsv"))
    assert len(rows) >= 13
    for value, rule, expected, _source in rows:
        assert _RULES[rule](value) == expected, (value, rule)


def test_names_put_the_scheme_between_label_and_zone() -> None:
    """Peppol names are <label>.<scheme>.<zone>; the ebCore URN in BDXL 1.6 is hashed whole with no scheme label."""
    participant = Identifier.parse("iso6523-actorid-upis::0088:123ABC")
    zone = "participant.sml.test.tech.peppol.org."
    assert peppol_naptr_name(participant, zone) == (
        "y7dzfxaf3d4cjz4kcgrxtec6twvcga4ky7zwa5boif6mswd4tdrq.iso6523-actorid-upis.participant.sml.test.tech.peppol.org"
    )
    assert peppol_cname_name(participant, zone).startswith("B-f5e78500450d37de5aabe6648ac3bb70.iso6523-actorid-upis.")
    ebcore = Identifier.parse("urn:oasis:names:tc:ebcore:partyid-type:iso6523:0088:4035811991021", allow_ebcore=True)
    assert bdxl_naptr_name(ebcore, "example.org") == "i3qyb36ctayrfgthbycqzdtojfhgazjeglfooe7727egvdwrk5qq.example.org"
    plain = Identifier.parse("iso6523-actorid-upis::0088:4035811991021")
    label = bdxl_naptr_name(plain, "example.org").split(".")[0]
    assert label == "LZMEDSMZXYD37YC74TZVPYCMUANFCMN667JHGBFQDDRVMSE6NYTA".lower()


def test_identifier_url_segment_is_percent_encoded() -> None:
    """``::`` and ``#`` are encoded in REST paths; a string without a scheme is refused."""
    doc = Identifier.parse("busdox-docid-qns::urn:x::Invoice##v1::2.1")
    assert doc.scheme == "busdox-docid-qns"
    assert doc.value == "urn:x::Invoice##v1::2.1"
    assert doc.url_segment() == "busdox-docid-qns%3A%3Aurn%3Ax%3A%3AInvoice%23%23v1%3A%3A2.1"
    with pytest.raises(IdentifierError):
        Identifier.parse("0088:123")


@given(
    scheme=st.text(st.characters(codec="ascii", exclude_characters=":"), min_size=1, max_size=30),
    value=st.text(min_size=1, max_size=60),
)
def test_identifier_round_trips_through_its_url_segment(scheme: str, value: str) -> None:
    """Any scheme::value survives percent-encoding; a Peppol label is 52 lower-case base32 characters."""
    identifier = Identifier(scheme, value)
    assert "/" not in identifier.url_segment() and "#" not in identifier.url_segment()
    assert Identifier.parse(unquote(identifier.url_segment())) == identifier
    label = peppol_sha256_label(value)
    assert len(label) == 52
    assert set(label) <= set("abcdefghijklmnopqrstuvwxyz234567")
    assert peppol_sha256_label(value.lower()) == label  # the Peppol rule lowercases before hashing
