"""Security state belongs to an access point (its Signer and Verifier), never to the process."""

from __future__ import annotations

import ast
from collections.abc import Callable

from tests.conftest import REPO
from tests.inmemory import Pair
from tests.test_msh_support import submission

SHELL_AND_SECURITY = [REPO / "accesspoint" / "security", REPO / "accesspoint" / "msh"]


def _process_wide_state(path: str, tree: ast.Module) -> list[str]:
    """Module-level locks (a cache shared by the process needs one) and functools caches, where they are."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for decorator in node.decorator_list:
                name = ast.unparse(decorator)
                if "lru_cache" in name or name.endswith(("functools.cache", "cache")):
                    found.append(f"{path}:{node.lineno} @{name}")
    for statement in tree.body:
        if isinstance(statement, ast.Assign | ast.AnnAssign) and statement.value is not None:
            text = ast.unparse(statement.value)
            if "Lock(" in text or "lru_cache" in text:
                found.append(f"{path}:{statement.lineno} {text}")
    return found


def test_no_module_keeps_security_caches_for_the_whole_process() -> None:
    """accesspoint/security and accesspoint/msh hold no module-level locks or functools caches."""
    found = []
    for folder in SHELL_AND_SECURITY:
        for path in sorted(folder.glob("*.py")):
            found += _process_wide_state(path.name, ast.parse(path.read_text("utf-8")))
    assert found == []


async def test_two_access_points_in_one_process_keep_their_own_signers_and_verifiers(
    pair_factory: Callable[..., Pair],
) -> None:
    """Each has its own token templates, decoded tokens and trust decisions; an exchange fills each one's own."""
    pair = pair_factory()
    await pair.be.start()
    await pair.se.start()
    se, be = pair.se.ctx, pair.be.ctx
    assert se.signer is not be.signer and se.verifier is not be.verifier
    assert se.signer.templates is not be.signer.templates
    assert se.verifier.tokens is not be.verifier.tokens and se.verifier.trust is not be.verifier.trust
    assert (await pair.se.api("POST", "/api/v1/messages", submission("se-to-be", b"<x/>", "own@se")))[0] == 202
    assert (await pair.se.until("own@se", {"delivered", "failed"}))["state"] == "delivered"
    # Belgium decoded Sweden's token (the message), Sweden Belgium's (the receipt); each signed with its own.
    assert len(be.verifier.tokens) == len(se.verifier.tokens) == 1
    assert len(se.signer.templates) == len(be.signer.templates) == 1
    assert len(be.verifier.trust) == 1  # revocation is off on these legs: the decision is kept
