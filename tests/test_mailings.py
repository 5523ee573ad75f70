"""Mass mailings without a server: the mailing's fields, recipient lines, the line splitter and letter ids."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import pytest

from accesspoint.msh.mailings import lines_of, read_metadata, read_row
from accesspoint.store.mailings import letter_id

PERSON = "197802022389"


def test_the_mailing_is_read_with_its_defaults_and_the_sender_as_a_party_id() -> None:
    """A bare sender number becomes 0007:…; envelope sbdh and 50 letters/s unless the mailing says otherwise."""
    spec = read_metadata({"id": "m-1", "sender": "2021005448", "action": "Deliver"})
    assert (spec["id"], spec["sender"], spec["envelope"], spec["rate"]) == ("m-1", "0007:2021005448", "sbdh", 50.0)
    assert len(read_metadata({"sender": "0192:974760673"})["id"]) == 32  # an id is made when none is given


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({}, "sender"),
        ({"sender": "0192:974760674"}, "sender"),
        ({"sender": "2021005448", "rate": 0}, "rate"),
        ({"sender": "2021005448", "rate": True}, "rate"),
        ({"sender": "2021005448", "id": "no spaces please"}, "id"),
        ({"sender": "2021005448", "envelope": "zip"}, "envelope"),
        ({"sender": "2021005448", "properties": {"finalRecipient": PERSON}}, "properties"),
        ({"sender": "2021005448", "colour": "blue"}, "colour"),
    ],
)
def test_a_mailing_with_a_bad_field_is_refused_naming_it(document: dict[str, object], field: str) -> None:
    """Every field is checked: the error starts with the field's name."""
    with pytest.raises(ValueError, match=f"^{field}"):
        read_metadata(document)


def test_recipient_lines_take_a_bare_id_a_json_string_a_csv_row_or_an_object() -> None:
    """The forms of a recipient line; an object may bring its own payloads and properties."""
    assert read_row(PERSON) == (PERSON, None, None)
    assert read_row(json.dumps(PERSON)) == (PERSON, None, None)
    assert read_row(f"{PERSON},Anna Andersson") == (PERSON, None, None)
    data = base64.b64encode(b"<l/>").decode()
    line = json.dumps({"recipient": PERSON, "payloads": [{"content_id": "c", "data": data}], "properties": {"a": 1}})
    assert read_row(line) == (PERSON, [("c", "application/octet-stream", b"<l/>")], {"a": 1})


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("19781302xxxx", "not 12 digits"),
        ("{not json", "not JSON"),
        ('{"recipient": "197802022389", "payloads": [{"data": "***"}]}', "not base64"),
        ('{"recipient": "197802022389", "colour": 1}', "colour"),
        ('{"payloads": []}', "payloads"),
        ("{}", "no recipient"),
        ('{"recipient": "197802022389", "properties": {"originalSender": "x"}}', "properties"),
    ],
)
def test_a_broken_recipient_line_says_why(line: str, reason: str) -> None:
    """Each broken line is refused with its reason (the intake keeps it as an invalid row with its line)."""
    with pytest.raises(ValueError, match=reason):
        read_row(line)


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_lines_are_split_across_chunks_and_an_over_long_line_is_skipped_whole() -> None:
    """Lines cut anywhere by the network come whole; one past the limit is one None, and the next line is intact."""
    found = [
        line async for line in lines_of(_chunks(b"ab", b"c\nde", b"f\n" + b"x" * 30, b"y" * 30, b"\nlast"), limit=20)
    ]
    assert found == ["abc", "def", None, "last"]


def test_letter_ids_sort_by_row_and_name_their_mailing() -> None:
    """MessageIds of one mailing share a prefix and sort by row (the store counts them with one range scan)."""
    ids = [letter_id("m-1", seq) for seq in (0, 9, 10, 1000)]
    assert ids == sorted(ids) and all(i.startswith("ml.m-1.") and i.endswith("@mailing") for i in ids)
