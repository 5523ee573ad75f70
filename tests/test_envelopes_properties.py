"""Round trips over arbitrary values: what we build parses back to the same model."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from accesspoint.envelopes.kvittens import (
    ApplicationResponse,
    LineResponse,
    ReasonCode,
    ResponseCode,
    build_application_response,
    parse_application_response,
)
from accesspoint.envelopes.sbdh import DocumentIdentification, Partner, Sbdh, Scope, build_sbd, parse_sbd
from accesspoint.envelopes.xhe import Xhe, XheParty, XhePayload, build_xhe, parse_xhe, sdk_scope

# Text as our parsers give it back: XML 1.0 characters, no surrounding whitespace, not empty.
TEXT = (
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Cn", "Zl", "Zp")), min_size=1, max_size=40)
    .map(str.strip)
    .filter(bool)
)
ZONES = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))])
MOMENTS = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1), timezones=ZONES)
PARTNERS = st.builds(Partner, TEXT, st.one_of(st.none(), TEXT))


@settings(max_examples=60, deadline=None)
@given(
    sender=st.lists(PARTNERS, min_size=1, max_size=3),
    receiver=st.lists(PARTNERS, min_size=1, max_size=3),
    ident=st.builds(DocumentIdentification, TEXT, TEXT, TEXT, TEXT, MOMENTS, st.one_of(st.none(), st.booleans())),
    scopes=st.lists(st.builds(Scope, TEXT, TEXT, st.one_of(st.none(), TEXT)), max_size=4),
)
def test_any_sbd_round_trips(
    sender: list[Partner], receiver: list[Partner], ident: DocumentIdentification, scopes: list[Scope]
) -> None:
    """Any header we can build is SBDH-valid and parses back equal."""
    header = Sbdh(tuple(sender), tuple(receiver), ident, tuple(scopes))
    parsed = parse_sbd(build_sbd(header, b"<d xmlns='urn:x'/>")).header
    assert parsed == header
    assert parsed.document.created == ident.created


@settings(max_examples=60, deadline=None)
@given(
    ident=TEXT,
    issued=st.dates(min_value=date(2000, 1, 1), max_value=date(2090, 1, 1)),
    at=st.times().map(lambda t: t.replace(microsecond=0, tzinfo=UTC)),
    parties=st.tuples(TEXT, TEXT, TEXT),
    lines=st.lists(st.builds(LineResponse, st.sampled_from(ReasonCode), TEXT, TEXT, st.one_of(st.none(), TEXT))),
)
def test_any_application_response_round_trips(
    ident: str, issued: date, at: time, parties: tuple[str, str, str], lines: list[LineResponse]
) -> None:
    """Any receipt that keeps DIGG's rules (ACCEPTED without lines, REJECTED with) parses back equal."""
    code = ResponseCode.REJECTED if lines else ResponseCode.ACCEPTED
    response = ApplicationResponse(ident, issued, at, *parties, code, tuple(lines))
    assert parse_application_response(build_application_response(response)) == response


@settings(max_examples=40, deadline=None)
@given(ident=TEXT, created=MOMENTS, parties=st.tuples(TEXT, TEXT), content=st.binary(max_size=200))
def test_any_binary_xhe_round_trips(ident: str, created: datetime, parties: tuple[str, str], content: bytes) -> None:
    """Any XHE with a binary payload keeps DIGG's rules and parses back equal, payload byte for byte."""
    xhe = Xhe(
        ident,
        created,
        sdk_scope("doc", "urn:fdc:digg.se:edelivery:federation:test"),
        XheParty(parties[0]),
        XheParty(parties[1]),
        XhePayload("application/octet-stream", "application/octet-stream", content, xml=False),
    )
    if not content:
        return  # an empty PayloadContent breaks R2-XHE, by design
    assert parse_xhe(build_xhe(xhe)) == xhe
