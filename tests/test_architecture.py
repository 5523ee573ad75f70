"""Layers point down: each part of the code imports only what its contract allows, read from the source (AST).

The contract per layer follows ``../shared/architecture.json`` (its parts and the arrows that must never exist)
and the house rules: the core and WS-Security are sans-I/O, routing and the operators never reach into the MSH,
the service toolkit imports no service, and the product never imports the test fixtures.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import REPO

# What a sans-I/O layer never imports: event loops, web and database frameworks, network clients.
FORBIDDEN = {"asyncio", "aiohttp", "sqlalchemy", "redis", "socket", "requests", "urllib.request", "http.client"}
# What a pure layer that may fetch (security's blocking revocation fetcher) still never imports.
FRAMEWORKS = {"asyncio", "aiohttp", "sqlalchemy", "alembic", "redis", "asyncpg"}

# The parts, by the package each is (architecture.json "is"), plus those the house rules add.
PARTS = {
    "Core": "accesspoint.core",
    "Security": "accesspoint.security",
    "Envelopes": "accesspoint.envelopes",
    "Store": "accesspoint.store",
    "MSH": "accesspoint.msh",
    "Console": "accesspoint.console",
    "Routing": "accesspoint.routing",
    "PModes": "pmode",
    "Discovery": "smp",
    "FaR": "far",
    "Operators": "operators",
    "Toolkit": "accesspoint.servicekit",
    "Fixtures": "accesspoint.testing",
    "Tests": "tests",
    "Bench": "bench",
}
SERVICES = ("MSH", "Console", "Routing", "Discovery", "FaR", "Operators")
PRODUCT = tuple(name for name in PARTS if name not in ("Fixtures", "Tests", "Bench"))
# The application on top (cli.py, the *_cli.py commands, the demos): may use every part, never the fixtures.
APPLICATION = sorted(f"accesspoint.{p.stem}" for p in (REPO / "accesspoint").glob("*.py") if p.stem != "__init__")


@dataclass(frozen=True)
class Contract:
    """What the modules of one part never import: other parts (by name), modules, and why."""

    part: str
    never: tuple[str, ...] = ()
    modules: frozenset[str] = frozenset()
    why: str = ""
    folders: tuple[str, ...] = field(default=())

    def forbidden(self) -> dict[str, str]:
        """Module prefix -> the reason it is forbidden."""
        found = {PARTS[part]: f"{self.part} never imports {part}" for part in self.never}
        found.update({module: f"{self.part} never imports {module} ({self.why})" for module in self.modules})
        return found

    def roots(self) -> list[Path]:
        """The folders (or files) the part is."""
        return [REPO / folder for folder in self.folders or (PARTS[self.part].replace(".", "/"),)]


def _all_but(*kept: str) -> tuple[str, ...]:
    return tuple(part for part in PARTS if part not in kept)


CONTRACTS = [
    # The core is handed bytes, endpoints and keys: it knows no other part and no sockets, database or loop.
    Contract("Core", _all_but("Core"), frozenset(FORBIDDEN) | frozenset(APPLICATION), "the core is sans-I/O"),
    # WS-Security is pure: it sits on the core only.
    Contract("Security", _all_but("Core", "Security"), frozenset(FRAMEWORKS) | frozenset(APPLICATION), "pure"),
    Contract("Envelopes", _all_but("Core", "Security", "Envelopes"), frozenset(FORBIDDEN), "sans-I/O"),
    # The store keeps state for the shell; it knows no message security, routing or service (the toolkit's
    # database helpers are below it).
    Contract("Store", _all_but("Core", "Store", "Toolkit"), frozenset(APPLICATION), "the application sits on top"),
    # Agreements are data, loaded by the shell.
    Contract(
        "PModes", ("MSH", "Console", "Store", "Routing", "Discovery", "FaR", "Operators", "Fixtures", "Tests", "Bench")
    ),
    Contract(
        "Discovery", ("MSH", "Console", "Store", "Routing", "FaR", "Operators", "PModes", "Fixtures", "Tests", "Bench")
    ),
    Contract(
        "FaR", ("MSH", "Console", "Store", "Routing", "Discovery", "Operators", "PModes", "Fixtures", "Tests", "Bench")
    ),
    # Routing decides; the MSH carries out.
    Contract("Routing", ("MSH", "Console", "Operators", "Fixtures", "Tests", "Bench")),
    # Operators see verified deliveries, not the transport.
    Contract(
        "Operators",
        ("MSH", "Console", "Store", "Routing", "Discovery", "FaR", "PModes", "Fixtures", "Tests", "Bench"),
    ),
    # The console sits above the MSH: the MSH never knows it is watched.
    Contract(
        "MSH", ("Console", "Fixtures", "Tests", "Bench"), frozenset(APPLICATION), "the application sits on the MSH"
    ),
    # The console reads the store and calls the MSH's public services; FaR and the operator only over their APIs.
    Contract(
        "Console",
        ("FaR", "Operators", "Fixtures", "Tests", "Bench"),
        frozenset(APPLICATION),
        "the application sits on the console",
    ),
    # The toolkit is below every service and knows none of them, nor any other part.
    Contract("Toolkit", _all_but("Toolkit"), frozenset(APPLICATION), "the toolkit knows no service"),
    Contract(
        "Application", ("Fixtures", "Tests", "Bench"), folders=tuple(f"{m.replace('.', '/')}.py" for m in APPLICATION)
    ),
    # The fixtures serve the tests and the benchmarks, and need neither.
    Contract("Fixtures", ("Tests", "Bench")),
    # Benchmarks share fixtures with the tests through accesspoint.testing, never by importing the tests.
    Contract("Bench", ("Tests",)),
]


def imports(path: Path, base: Path = REPO) -> Iterator[tuple[int, str]]:
    """(line, module) for every import in a file, at any depth; ``from a import b`` yields ``a`` and ``a.b``.

    Relative imports are resolved against the file's package, its folder below ``base``.
    """
    tree = ast.parse(path.read_text("utf-8"), filename=str(path))
    package = ".".join(path.relative_to(base).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def violations(contract: Contract, roots: list[Path] | None = None, base: Path = REPO) -> list[str]:
    """Every import of the part that its contract forbids, as ``file:line: module (reason)``, paths from ``base``."""
    forbidden = contract.forbidden()
    found = []
    for root in roots or contract.roots():
        for path in sorted([root] if root.is_file() else root.rglob("*.py")):
            for line, module in imports(path, base):
                reason = next((why for prefix, why in forbidden.items() if _within(module, prefix)), None)
                if reason is not None:
                    found.append(f"{path.relative_to(base)}:{line}: {module} ({reason})")
    return sorted(set(found))


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: c.part)
def test_each_layer_imports_only_what_its_contract_allows(contract: Contract) -> None:
    """No module of the part imports a part, framework or module its contract forbids."""
    roots = contract.roots()
    assert all(root.exists() for root in roots), roots
    assert violations(contract) == []


def test_the_contract_catches_a_forbidden_import(tmp_path: Path) -> None:
    """A routing module importing the MSH, lazily or relatively, and a core module importing asyncio are reported."""
    routing = tmp_path / "accesspoint" / "routing"
    routing.mkdir(parents=True)
    (routing / "bad.py").write_text(
        "from __future__ import annotations\n\n\ndef later() -> None:\n    from accesspoint.msh import server\n"
    )
    (routing / "worse.py").write_text("from ..msh.receiving import new_message_id\n")
    (routing / "fine.py").write_text("from accesspoint.core.ids import new_message_id\nimport accesspoint.store\n")
    routing_contract = next(c for c in CONTRACTS if c.part == "Routing")
    assert violations(routing_contract, [routing], tmp_path) == [
        "accesspoint/routing/bad.py:5: accesspoint.msh (Routing never imports MSH)",
        "accesspoint/routing/bad.py:5: accesspoint.msh.server (Routing never imports MSH)",
        "accesspoint/routing/worse.py:1: accesspoint.msh.receiving (Routing never imports MSH)",
        "accesspoint/routing/worse.py:1: accesspoint.msh.receiving.new_message_id (Routing never imports MSH)",
    ]
    core = tmp_path / "core.py"
    core.write_text("import asyncio\n")
    assert violations(next(c for c in CONTRACTS if c.part == "Core"), [core], tmp_path) == [
        "core.py:1: asyncio (Core never imports asyncio (the core is sans-I/O))"
    ]


def test_the_command_line_imports_no_server_stack_until_a_server_runs() -> None:
    """Building the CLI (every command module registers) imports neither aiohttp, SQLAlchemy nor OpenTelemetry, so
    ``verify``, ``inspect`` and the other one-shot commands start without the servers' imports."""
    script = (
        "import json, sys\nfrom accesspoint.cli import build_parser\nbuild_parser()\n"
        "print(json.dumps([m for m in ('aiohttp', 'sqlalchemy', 'opentelemetry') if m in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_each_command_word_names_the_module_that_registers_it() -> None:
    """The command table the CLI imports from names, for every command, the one module that registers it."""
    from accesspoint.cli import COMMAND_MODULES, build_parser

    def words(parser: argparse.ArgumentParser) -> set[str]:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        return set(actions[0].choices)

    assert words(build_parser()) == {"inspect", *COMMAND_MODULES}
    for command in COMMAND_MODULES:
        module = COMMAND_MODULES[command]
        assert words(build_parser(command)) == {"inspect"} | {w for w, m in COMMAND_MODULES.items() if m == module}


def test_the_contracts_hold_every_never_arrow_of_the_architecture() -> None:
    """Each part of ../shared/architecture.json is the package named here, and each arrow it forbids is forbidden."""
    path = REPO.parent / "shared" / "architecture.json"
    if not path.exists():
        message = f"{path} is absent: the contracts cannot be compared with the architecture"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    architecture = json.loads(path.read_text("utf-8"))
    for name, part in architecture["parts"].items():
        assert [f.rstrip("/").replace("/", ".") for f in part["is"]] == [PARTS[name]], name
    by_part = {c.part: c for c in CONTRACTS}
    for source, target, _why in architecture["never"]:
        assert target in by_part[source].never, f"{source} -> {target} is not in the contracts"
