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


# The modules with tests on the shared federation: under parallel workers (``--dist loadfile``, the Makefile's) they
# are one unit of work, so one worker starts the federation once for all of them.
SHARED_FEDERATION_MODULES = frozenset({"tests/test_demo_end_to_end.py", "tests/test_twoway_e2e.py"})


def _module(item: pytest.Item) -> str:
    return item.nodeid.split("::")[0]


def _slow(item: pytest.Item) -> bool:
    """Whether the test allows itself more than the suite's timeout: the process-level ones that take minutes."""
    mark = item.get_closest_marker("timeout")
    return mark is not None and bool(mark.args) and float(mark.args[0]) > float(item.config.getini("timeout"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The tests on the shared federation run last, together: its processes start once, for the first of them,
    and stop with the session instead of idling through the rest of it. Under parallel workers the modules with
    slow tests go first instead, so that none of them starts last while the other workers have run out of work."""
    users = [item for item in items if SHARED_FEDERATION in getattr(item, "fixturenames", ())]
    strays = {_module(item) for item in users} - SHARED_FEDERATION_MODULES
    if strays:
        raise pytest.UsageError(f"{sorted(strays)} use {SHARED_FEDERATION}: add them to SHARED_FEDERATION_MODULES")
    if hasattr(config, "workerinput"):  # a pytest-xdist worker
        slow = {_module(item) for item in items if _slow(item)}
        items.sort(key=lambda item: _module(item) not in slow)
    elif users:
        items[:] = [item for item in items if SHARED_FEDERATION not in getattr(item, "fixturenames", ())] + users


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadfile``, with the shared federation's modules as one unit of work."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedFederationOnOneWorker(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = super()._split_scope(nodeid)
            return SHARED_FEDERATION if module in SHARED_FEDERATION_MODULES else module

    return SharedFederationOnOneWorker(config, log)


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
