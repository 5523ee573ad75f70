"""The core stays sans-I/O: nothing under accesspoint.core imports an I/O framework."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "accesspoint" / "core"
FORBIDDEN = {"asyncio", "aiohttp", "sqlalchemy", "redis", "socket", "requests", "urllib.request", "http.client"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_core_never_imports_io_frameworks() -> None:
    """No module of the core imports asyncio, aiohttp, SQLAlchemy, Redis or a network client."""
    offenders = {
        f"{path.name}: {name}"
        for path in CORE.rglob("*.py")
        for name in _imports(path)
        if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN)
    }
    assert offenders == set()
    assert len(list(CORE.rglob("*.py"))) >= 8
