"""The newcomer's path: the P-Mode file of pmode/README.md, as written there, carries a message between two peers;
what the README says about endpoints holds."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from pmode import PModeError
from pmode.loader import load_document
from tests.conftest import REPO
from tests.inmemory import Node, Pair
from tests.test_msh import CERTS
from tests.test_msh_support import submission

README = REPO / "pmode" / "README.md"
EXAMPLES = REPO / "pmode" / "examples"


def _documented_example() -> dict[str, Any]:
    """The YAML block under "A first bilateral exchange"."""
    text = README.read_text("utf-8")
    section = text.split("## A first bilateral exchange", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert block is not None, "the README's first exchange has a YAML block"
    document = yaml.safe_load(block.group(1))
    assert isinstance(document, dict)
    return document


def _as(node: Node, document: dict[str, Any], name: str, endpoints: dict[str, str]) -> None:
    """The documented file for one side: only ``self`` and the endpoints' ports differ, as the README says."""
    mine = {**document, "self": name}
    mine["parties"] = {party: {**value, "endpoint": endpoints[party]} for party, value in document["parties"].items()}
    node.write_pmodes(mine)
    (node.folder / "certs").symlink_to(CERTS, target_is_directory=True)


async def test_the_readme_pmode_file_exchanges_a_message(pair_factory: Callable[..., Pair]) -> None:
    """Two access points on the README's P-Mode file (self and ports changed) deliver se-to-be with a receipt."""
    pair = pair_factory()
    document = _documented_example()
    assert set(document["parties"]) == {"se", "be"}
    endpoints = {"se": pair.se_url, "be": pair.be_url}
    _as(pair.se, document, "se", endpoints)
    _as(pair.be, document, "be", endpoints)
    await pair.be.start()
    await pair.se.start()
    status, _ = await pair.se.api("POST", "/api/v1/messages", submission("se-to-be", b"<hello/>", "first@se"))
    assert status == 202
    assert (await pair.se.until("first@se", {"delivered", "failed"}))["state"] == "delivered"
    received = await pair.be.until("first@se", {"received"}, direction="in")
    assert received["action"] == "Deliver"


def test_a_party_that_only_sends_to_us_needs_no_endpoint() -> None:
    """Without an endpoint, a partner that only sends to us loads; a P-Mode that sends to it is refused at its leg."""
    document = yaml.safe_load((EXAMPLES / "pmodes.yaml").read_text("utf-8"))
    del document["parties"]["partner-115"]["endpoint"]
    sending = [p for p in document["pmodes"] if p["id"] == "se-to-be"]
    document["pmodes"] = [p for p in document["pmodes"] if p["id"] != "se-to-be"]
    loaded = load_document(document, file="pmodes.yaml", base=EXAMPLES)
    only_sends = loaded.get("be-to-se")
    assert only_sends is not None and only_sends.partner.party.endpoint is None
    document["pmodes"] += sending
    with pytest.raises(PModeError) as refused:
        load_document(document, file="pmodes.yaml", base=EXAMPLES)
    (problem,) = refused.value.problems
    assert (problem.pmode, problem.field) == ("se-to-be", "legs[0]") and "partner-115" in problem.message
