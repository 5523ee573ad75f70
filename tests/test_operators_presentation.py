"""The presentation policy: PDF/A, UTF-8 text and a sanitised HTML subset, checked as the bytes stream through."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.presentation import PartCheck, PresentationPolicy, check_bytes

POLICY = PresentationPolicy(max_part_size=10_000)
PDF_A = b"%PDF-1.7\n1 0 obj << /Type /Metadata >> stream <x:xmpmeta><pdfaid:part>2</pdfaid:part></x:xmpmeta>\n%%EOF"


def test_pdf_a_text_and_clean_html_pass() -> None:
    """A PDF declaring PDF/A, UTF-8 text and HTML inside the subset are shown."""
    assert check_bytes(POLICY, "body", "application/pdf", PDF_A) is None
    assert check_bytes(POLICY, "body", "text/plain; charset=UTF-8", "Hej Åsa!".encode()) is None
    html = b'<p>Hej <b>Alice</b>, se <a href="https://example.se/x">beslutet</a>.</p><img src="cid:logo@x">'
    assert check_bytes(POLICY, "body", "text/html", html) is None


@pytest.mark.parametrize(
    ("content_type", "data", "rule", "words"),
    [
        ("application/zip", b"PK..", "content-type", "not shown"),
        ("application/pdf", b"%PDF-1.7\nno metadata\n%%EOF", "pdf-a", "no PDF/A"),
        ("application/pdf", PDF_A + b"\n<< /S /JavaScript /JS (app.alert(1)) >>", "pdf-a", "/JavaScript"),
        ("application/pdf", PDF_A + b"\ntrailer << /Encrypt 5 0 R >>", "pdf-a", "/Encrypt"),
        ("application/pdf", b"<html>not a pdf", "pdf", "%PDF-"),
        ("text/plain", b"caf\xe9", "utf-8", "UTF-8"),
        ("text/plain; charset=iso-8859-1", b"x", "charset", "iso-8859-1"),
        ("text/html", b"<p>x</p><script>alert(1)</script>", "html", "<script>"),
        ("text/html", b'<p onclick="x()">x</p>', "html", "onclick"),
        ("text/html", b'<img src="https://tracker.example/p.gif">', "html", "external image"),
        ("text/html", b'<a href="javascript:alert(1)">x</a>', "html", "only https"),
        ("text/html", b"<style>p{}</style><p>x</p>", "html", "<style>"),
        ("text/plain", b"x" * 10_001, "size", "larger than"),
    ],
)
def test_content_outside_the_policy_is_refused_naming_the_rule(
    content_type: str, data: bytes, rule: str, words: str
) -> None:
    """Each kind of unshowable content is refused with its rule and a reason that says why."""
    violation = check_bytes(POLICY, "attachment-1", content_type, data)
    assert violation is not None and violation.rule == rule and words in violation.reason
    assert str(violation).startswith("attachment-1: ")


@given(st.integers(min_value=1, max_value=40))
def test_pdf_is_judged_the_same_whatever_the_chunking(size: int) -> None:
    """Patterns split across chunks are still found: the verdict does not depend on where the stream breaks."""
    for data, expected in ((PDF_A, None), (PDF_A + b" /JavaScript ", "pdf-a")):
        check = PartCheck(POLICY, "body", "application/pdf")
        for start in range(0, len(data), size):
            check.feed(data[start : start + size])
        violation = check.finish()
        assert (violation.rule if violation else None) == expected


def test_pdf_a_can_be_relaxed_but_scripts_never() -> None:
    """Without pdf_a an ordinary PDF passes; JavaScript is refused regardless."""
    relaxed = PresentationPolicy(pdf_a=False)
    assert check_bytes(relaxed, "body", "application/pdf", b"%PDF-1.4\n%%EOF") is None
    assert check_bytes(relaxed, "body", "application/pdf", b"%PDF-1.4\n/JS (x)\n%%EOF") is not None
