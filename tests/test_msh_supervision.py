"""Supervision and health: failing tasks restarted with backoff, a send worker riding out database errors,
/healthz for the loop, /readyz for the database, migrations, keys and every supervised task."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from accesspoint.msh import sending
from accesspoint.msh.app import SUPERVISOR
from accesspoint.msh.supervisor import Supervisor, TaskState
from accesspoint.store import StoreUnavailable
from tests.inmemory import Node, Pair, eventually
from tests.test_msh_support import submission


async def test_a_failing_task_is_restarted_with_backoff_and_a_one_shot_task_ends_done() -> None:
    """Two failures, then it runs: two restarts recorded, the last error kept; a once task that returns is done."""
    supervisor = Supervisor(backoff=timedelta(milliseconds=1), backoff_max=timedelta(milliseconds=4))
    runs: list[int] = []
    steady = asyncio.Event()

    async def flaky() -> None:
        runs.append(len(runs))
        if len(runs) <= 2:
            raise OSError(f"failure {len(runs)}")
        steady.set()
        await asyncio.Event().wait()

    async def once() -> None:
        return None

    supervisor.spawn("flaky", flaky)
    supervisor.spawn("once", once, once=True)
    await asyncio.wait_for(steady.wait(), 5)
    await asyncio.sleep(0)
    flaky_status, once_status = supervisor.status()
    assert (flaky_status.state, flaky_status.restarts, flaky_status.last_error) == (
        TaskState.RUNNING,
        2,
        "OSError: failure 2",
    )
    assert once_status.state is TaskState.DONE and supervisor.healthy
    await supervisor.stop()


async def _get(node: Node, path: str) -> tuple[int, Any]:
    assert node.http is not None
    async with node.http.get(node.base + path) as response:
        return response.status, await response.json()


async def test_a_send_worker_rides_out_database_errors_and_the_message_is_still_sent(
    pair_factory: Callable[..., Pair], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first claims fail as if the database were gone: the workers log, pause and go on; nothing restarts."""
    monkeypatch.setattr(sending, "PAUSE_AFTER_FAULT", 0.01)
    pair = pair_factory()
    await pair.be.start()
    await pair.se.start()
    store = pair.se.store
    claim = store.claim
    failures: list[str] = []

    async def failing_claim(*args: Any, **kwargs: Any) -> Any:
        if len(failures) < 3:
            failures.append("down")
            raise StoreUnavailable("database is down")  # what the store raises for a lost connection
        return await claim(*args, **kwargs)

    store.claim = failing_claim  # type: ignore[method-assign]
    assert (await pair.se.api("POST", "/api/v1/messages", submission("se-to-be", b"<x/>", "db@se")))[0] == 202

    async def state() -> str:
        return (await pair.se.message("db@se"))["state"]

    # The claims back off on the shared clock (1 s, 2 s, 4 s): moved on until the message went.
    assert await pair.advance_until(timedelta(seconds=1), state, lambda s: s in {"delivered", "failed"}, "sent") == (
        "delivered"
    )
    assert len(failures) == 3
    assert pair.se.app is not None
    workers = [s for s in pair.se.app[SUPERVISOR].status() if s.name == "send pool"]
    assert workers and all(s.state is TaskState.RUNNING and s.restarts == 0 for s in workers)


async def test_healthz_says_the_loop_answers_and_readyz_names_what_is_not_ready(
    pair_factory: Callable[..., Pair],
) -> None:
    """/healthz and /health answer; /readyz is 200 with every check, 503 naming a down database or a failing task."""
    node = pair_factory().se
    await node.start()
    assert await _get(node, "/healthz") == (200, {"ok": True}) == await _get(node, "/health")
    status, ready = await _get(node, "/readyz")
    assert status == 200 and ready["ready"] is True
    assert {k: ready["checks"][k] for k in ("database", "migrations", "keys")} == dict.fromkeys(
        ("database", "migrations", "keys"), "ok"
    )
    assert ready["checks"]["tasks"]["send pool"] == "running"

    run = node.store.db.run

    async def down(work: Any) -> Any:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("database is down"))

    node.store.db.run = down  # type: ignore[method-assign]
    status, ready = await _get(node, "/readyz")
    assert status == 503 and ready["checks"]["database"].startswith("unavailable: OperationalError")
    node.store.db.run = run  # type: ignore[method-assign]

    async def broken() -> None:
        raise RuntimeError("broken on purpose")

    assert node.app is not None
    node.app[SUPERVISOR].spawn("broken", broken)

    async def readiness() -> tuple[int, Any]:
        return await _get(node, "/readyz")

    status, ready = await eventually(readiness, lambda answer: answer[0] == 503, "readyz to report the broken task")
    assert ready["checks"]["tasks"]["broken"] == "restarting" and ready["checks"]["database"] == "ok"
    assert (await _get(node, "/healthz"))[0] == 200
