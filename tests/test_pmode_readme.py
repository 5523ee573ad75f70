"""The newcomer's path: the P-Mode file of pmode/README.md, as written there, carries a message between two peers."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import yaml

from tests.conftest import REPO
from tests.inmemory import Node, Pair
from tests.test_msh import CERTS
from tests.test_msh_support import submission

README = REPO / "pmode" / "README.md"


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
