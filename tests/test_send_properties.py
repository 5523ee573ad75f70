"""``accesspoint send --property NAME=VALUE --property-type NAME=TYPE``: typed message properties from the CLI."""

from __future__ import annotations

import pytest

from accesspoint.cli import UsageError
from accesspoint.msh.submissions import Submission
from accesspoint.msh_cli import message_properties


def test_a_property_type_makes_a_typed_property_the_submission_carries() -> None:
    """finalRecipient with its identifier scheme becomes {value, type}; an untyped one stays a plain value."""
    properties = message_properties(
        ["originalSender=0007:5567212345", "finalRecipient=0088:7315458756324"],
        ["finalRecipient=iso6523-actorid-upis"],
    )
    assert properties == {
        "originalSender": "0007:5567212345",
        "finalRecipient": {"value": "0088:7315458756324", "type": "iso6523-actorid-upis"},
    }
    payload = {"content_id": "p@se", "mime_type": "application/xml", "data": "PGEvPg=="}
    document = {"pmode": "p", "message_id": "m@se", "properties": properties, "payloads": [payload]}
    typed = {p.name: p.type for p in Submission.from_document(document).properties}
    assert typed == {"originalSender": None, "finalRecipient": "iso6523-actorid-upis"}


@pytest.mark.parametrize(
    ("values", "types", "wrong"),
    [
        (["novalue"], [], "is not NAME=VALUE"),
        (["a=1"], ["a"], "is not NAME=TYPE"),
        (["a=1"], ["b=scheme"], "no --property b=VALUE"),
    ],
)
def test_a_malformed_property_is_a_usage_error(values: list[str], types: list[str], wrong: str) -> None:
    """A property without a value, a type without a name, or a type for no property is refused by name."""
    with pytest.raises(UsageError, match=wrong):
        message_properties(values, types)
