"""Shared fixtures: where the interop vectors live, and how their absence is handled."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import settings

from accesspoint.store import sqlite_url, upgrade_to_head
from accesspoint.testing import services

if TYPE_CHECKING:
    from accesspoint.demo_twoway import TwoWayFederation
    from accesspoint.testing.webhooks import WebhookListener

# Hypothesis's per-example deadline is a timed assertion: on a loaded 2-core machine it fails tests whose
# behaviour is right. Time belongs to bench/, so the suite runs without it (a test may still set its own).
settings.register_profile("suite", deadline=None)
settings.load_profile("suite")

REPO = Path(__file__).resolve().parent.parent
INTEROP = REPO.parent / "shared" / "interop"


def interop_path(relative: str) -> Path:
    """A file under ../shared/interop; skip (or, under CI=true, fail) when the folder is absent."""
    if not INTEROP.is_dir():
        reason = f"interop vectors not found at {INTEROP} (they live beside the project, in ../shared/interop)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    path = INTEROP / relative
    assert path.exists(), f"interop file {relative} is missing from {INTEROP}"
    return path


@pytest.fixture
def interop() -> Path:
    """The interop folder (skips or fails as ``interop_path`` does)."""
    interop_path(".")
    return INTEROP


# --- real PostgreSQL and Redis, started once per session (tests/services.py) ---


def unavailable(reason: str) -> None:
    """Skip where a server is not installed, but fail under CI=true, where it must be."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[services.PostgresServer]:
    """A PostgreSQL 15 server on a free loopback port for the whole session."""
    reason = services.missing_postgres()
    if reason is not None:
        unavailable(reason)
    with services.postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[services.RedisServer]:
    """A redis-server on a free loopback port, without persistence, for the whole session."""
    reason = services.missing_redis()
    if reason is not None:
        unavailable(reason)
    with services.redis_server() as server:
        yield server


@pytest.fixture(scope="session")
def database_templates() -> dict[str, str]:
    """Migrated databases made once per session: backend name -> SQLite file to copy, or PostgreSQL database."""
    return {}


async def _sqlite_template(request: pytest.FixtureRequest) -> str:
    """A migrated SQLite file made once per session, to copy."""
    templates: dict[str, str] = request.getfixturevalue("database_templates")
    if "sqlite" not in templates:
        template = request.getfixturevalue("tmp_path_factory").mktemp("template") / "store.db"
        await upgrade_to_head(sqlite_url(template))
        templates["sqlite"] = str(template)
    return templates["sqlite"]


@contextlib.asynccontextmanager
async def _database(request: pytest.FixtureRequest, tmp_path: Path, *, migrated: bool) -> AsyncIterator[str]:
    templates: dict[str, str] = request.getfixturevalue("database_templates")
    if request.param == "sqlite":
        path = tmp_path / "store.db"
        if migrated:
            shutil.copyfile(await _sqlite_template(request), path)
        yield sqlite_url(path)
        return
    server: services.PostgresServer = request.getfixturevalue("postgres_server")
    if migrated:
        # One migrated database per session, emptied for each test: creating a database costs 100-250 ms.
        if "postgresql" not in templates:
            templates["postgresql"] = await services.create_postgres_database(server)
            await upgrade_to_head(server.url(templates["postgresql"]))
        await services.empty_postgres_database(server, templates["postgresql"])
        yield server.url(templates["postgresql"])
        return
    name = await services.create_postgres_database(server)
    try:
        yield server.url(name)
    finally:
        await services.drop_postgres_database(server, name)


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a new, empty database: a SQLite file, or a database of its own on the session's PostgreSQL."""
    async with _database(request, tmp_path, migrated=False) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
async def migrated_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database at the newest schema with no rows: a copied SQLite file, or the session's PostgreSQL one emptied."""
    async with _database(request, tmp_path, migrated=True) as url:
        yield url


@pytest.fixture
async def pair_factory(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Make pairs of access points in this event loop on one manual clock (``tests/inmemory.py``); each is
    stopped after the test. ``pair_factory(retries=1, backoff="5s")`` passes the agreements' options."""
    from tests.inmemory import Pair

    template = Path(await _sqlite_template(request))
    made: list[Pair] = []

    def make(**agreed: Any) -> Pair:
        made.append(Pair(tmp_path / f"pair{len(made)}", template, **agreed))
        return made[-1]

    yield make
    for pair in made:
        await pair.stop()


@pytest.fixture
def redis_url(redis_server: services.RedisServer) -> str:
    """The URL of the session's Redis, emptied for this test."""
    import redis

    client = redis.Redis.from_url(redis_server.url())
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server.url()


# --- one federation of processes shared by the modules that only send through it ---

SHARED_FEDERATION = "shared_federation"


@dataclass(frozen=True)
class SharedFederation:
    """The two-way federation (``accesspoint.demo_twoway``: FaR, the registers, an SMP, the Nordic, Finnish and
    Swedish access points, two operators, a time-stamp authority, the agency's backend) and a listener for the
    Nordic access point's ``end-to-end-receipt`` events. Tests on it use their own message ids and never kill a
    process (those that do build their own federation)."""

    world: TwoWayFederation
    receipts: WebhookListener


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests on the shared federation run last, together: its processes start once, for the first of them,
    and stop with the session instead of idling through the rest of it."""
    users = [item for item in items if SHARED_FEDERATION in getattr(item, "fixturenames", ())]
    if users:
        items[:] = [item for item in items if SHARED_FEDERATION not in getattr(item, "fixturenames", ())] + users


@pytest.fixture(scope="session")
def shared_federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedFederation]:
    """Started when a test first needs it; every process must exit 0 on SIGTERM at the end."""
    from accesspoint import demo_twoway as tw
    from accesspoint.testing.webhooks import WebhookListener

    receipts = WebhookListener("sender-webhook-secret-0123456789")
    world = tw.build(tmp_path_factory.mktemp("federation"), nordic_hooks=(receipts.hook("end-to-end-receipt"),))
    try:
        tw.start(world)
        yield SharedFederation(world, receipts)
    except Exception:
        for server in world.federation.all:
            print(f"{server.name}:\n{server.log_tail(40)}")
        raise
    finally:
        codes = tw.stop(world)
        receipts.close()
    assert set(codes.values()) == {0}, codes
