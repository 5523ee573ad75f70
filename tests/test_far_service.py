"""FaR's service layer: every reachability reason, the one-query lookup, audited changes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.pool import StaticPool

from far.identifiers import Policy, with_check_digit
from far.importer import import_file
from far.model import AccountStatus, audit, create_engine
from far.service import DISCOVERY, Conflict, FarService, InvalidInput, NotFound, OperatorStatus, Reachability, Reason
from tests.test_far_support import BILLO, KIVRA, NOW, OTHER_SENDER, SENDER, make_service, seed_people


@pytest.fixture
async def far(tmp_path: Path) -> AsyncIterator[FarService]:
    service = await make_service(tmp_path / "far.db")
    await seed_people(service)
    yield service
    await service.engine.dispose()


async def test_reachable_secure_recipient_goes_to_its_operator_endpoint(far: FarService) -> None:
    """A secure account that accepts the sender is reachable at its operator's AS4 endpoint."""
    [answer] = await far.is_reachable(SENDER, ["197802022389"])
    assert answer.reachable and answer.reason is None and answer.sender_accepted
    assert answer.operator == KIVRA
    assert answer.endpoint == KIVRA.endpoint
    assert answer.last_registration == NOW


async def test_reachable_operator_without_endpoint_means_discovery(far: FarService) -> None:
    """An operator with no endpoint on record is reached through SMP discovery by its party id."""
    [answer] = await far.is_reachable(SENDER, ["198112189876"])
    assert answer.reachable and answer.endpoint == DISCOVERY and answer.operator == BILLO


@pytest.mark.parametrize(
    ("recipient", "reason", "accepted"),
    [
        ("197802022388", Reason.INVALID_IDENTIFIER, False),  # wrong check digit
        ("19780202238", Reason.INVALID_IDENTIFIER, False),  # 11 digits
        ("191001012382", Reason.NO_MAILBOX, False),  # unknown to FaR (valid number)
        ("196408233234", Reason.NO_MAILBOX, False),  # status none
        ("195806142377", Reason.PENDING, False),
        ("194004048569", Reason.ANONYMOUS, True),
        ("199001302380", Reason.SENDER_REFUSED, False),
    ],
)
async def test_each_unreachable_reason(far: FarService, recipient: str, reason: Reason, accepted: bool) -> None:
    """Each way of being unreachable gives its documented reason and no endpoint."""
    [answer] = await far.is_reachable(SENDER, [recipient])
    assert (answer.reachable, answer.reason, answer.endpoint, answer.sender_accepted) == (
        False,
        reason,
        None,
        accepted,
    )


async def test_refusal_is_per_sender(far: FarService) -> None:
    """A recipient who refuses one sender is reachable for another."""
    [answer] = await far.is_reachable(OTHER_SENDER, ["199001302380"])
    assert answer.reachable and answer.sender_accepted


async def test_pending_change_of_a_secure_account_stays_reachable(far: FarService) -> None:
    """A secure account with a pending change is still delivered to at its current operator."""
    [answer] = await far.is_reachable(SENDER, ["201112192396"])
    assert answer.reachable and answer.pending and answer.operator == KIVRA


async def test_organisations_are_looked_up_like_people(far: FarService) -> None:
    """16 + organisationsnummer is a recipient like any other."""
    [answer] = await far.is_reachable(SENDER, ["165568402266"])
    assert answer.reachable and answer.operator == BILLO


async def test_no_operator_reason_for_inconsistent_data(far: FarService) -> None:
    """A secure account whose operator row is missing is refused with no-operator, not delivered nowhere."""
    async with far.engine.begin() as conn:
        await conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        await conn.exec_driver_sql("UPDATE far_recipients SET operator_id='5560000001' WHERE id='197802022389'")
    [answer] = await far.is_reachable(SENDER, ["197802022389"])
    assert answer.reason is Reason.NO_OPERATOR and not answer.reachable


async def test_answers_keep_request_order_and_duplicates_in_one_query(far: FarService) -> None:
    """1,000 recipients (known, unknown, invalid, repeated) are answered in order with one SELECT."""
    ids = ["197802022389", "bogus", "191001012382", "197802022389"] * 250
    # One connection only, so that SQLite's trace sees every statement the lookup runs.
    engine = create_engine(str(far.engine.url), poolclass=StaticPool)
    statements: list[str] = []
    try:
        async with engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None
            await driver.set_trace_callback(statements.append)
        answers = await FarService(engine).is_reachable(SENDER, ids)
    finally:
        await engine.dispose()
    assert [a.recipient for a in answers] == ids
    assert [a.reason for a in answers[:4]] == [None, Reason.INVALID_IDENTIFIER, Reason.NO_MAILBOX, None]
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1


async def test_the_routes_answer_routes_each_recipient_as_the_full_answer_does(far: FarService) -> None:
    """A batch with every reason, invalid ids and repeats gets the routes answer the full one gives, row for row."""
    await far.put_recipient("191001012382", status=AccountStatus.SECURE, operator_id=BILLO.id, actor="t")
    await far.decide_operator(BILLO.id, OperatorStatus.SUSPENDED, reason="audit", actor="t")
    known = ["197802022389", "198112189876", "194004048569", "195806142377", "196408233234", "199001302380",
             "201112192396", "165568402266", "191001012382", "20" + with_check_digit("000101238")]  # fmt: skip
    ids = [*known, "bogus", "197802022388", "ES/SE/1", 'ES/SE/"1\\', *reversed(known), "197802022389"]
    full = await far.is_reachable(SENDER, ids)
    routes = await far.routes(SENDER, ids)

    def routed(answers: list[Reachability]) -> list[tuple[Any, ...]]:
        return [(a.recipient, a.reachable, a.reason, a.operator if a.reachable else None, a.endpoint) for a in answers]

    assert routed(routes.answers(ids)) == routed(full)
    assert {a.reason for a in full} >= {None, Reason.OPERATOR_SUSPENDED, Reason.INVALID_IDENTIFIER, Reason.PENDING}
    assert [operator.id for operator, _ in routes.operators] == [KIVRA.id]  # only the operators answers use


async def test_more_than_1000_recipients_or_a_bad_sender_is_refused(far: FarService) -> None:
    """The request itself is refused: over 1,000 recipients, or a sender that is no organisationsnummer."""
    with pytest.raises(InvalidInput):
        await far.is_reachable(SENDER, ["197802022389"] * 1001)
    with pytest.raises(InvalidInput) as caught:
        await far.is_reachable("2021005449", ["197802022389"])
    assert caught.value.field == "sender"


async def test_sender_with_16_prefix_is_the_same_sender(far: FarService) -> None:
    """The Recipient v3 form 16 + organisationsnummer names the same sender as the ten digits."""
    [answer] = await far.is_reachable("16" + SENDER, ["199001302380"])
    assert answer.reason is Reason.SENDER_REFUSED


async def test_is_registered_ignores_refusals(far: FarService) -> None:
    """isRegistered tells the account, whoever asks."""
    answers = await far.is_registered(["199001302380", "195806142377"])
    assert [(a.status, a.pending) for a in answers] == [(AccountStatus.SECURE, False), (AccountStatus.NONE, True)]
    assert answers[0].reachable


async def test_lenient_policy_accepts_schema_valid_numbers(tmp_path: Path) -> None:
    """With check digits off, a schema-valid number with a wrong check digit is stored and found."""
    far = await make_service(tmp_path / "lenient.db", policy=Policy(check_digits=False))
    try:
        await far.put_recipient("192301010168", status=AccountStatus.SECURE, operator_id=KIVRA.id, actor="t")
        [answer] = await far.is_reachable(SENDER, ["192301010168"])
        assert answer.reachable
    finally:
        await far.engine.dispose()


async def test_every_change_is_audited(far: FarService) -> None:
    """Creating, updating and deleting recipients, refusals and operators each leave an audit row."""
    await far.put_recipient("197802022389", status=AccountStatus.ANONYMOUS, operator_id=KIVRA.id, actor="alice")
    await far.accept_sender("199001302380", SENDER, actor="bob")
    await far.delete_recipient("196408233234", actor="carol")
    trail = await far.audit_trail("197802022389")
    assert [(c["action"], c["actor"]) for c in trail] == [("update", "alice"), ("create", "test")]
    assert trail[0]["detail"]["status"] == "anonymous"
    async with far.engine.connect() as conn:
        rows = (await conn.execute(select(audit.c.action, audit.c.entity, audit.c.actor))).all()
    assert ("accept", "refusal", "bob") in rows
    assert ("delete", "recipient", "carol") in rows
    assert ("create", "operator", "test") in rows


async def test_operator_in_use_cannot_be_deleted(far: FarService) -> None:
    """Deleting an operator that recipients still use is a conflict; an unknown one is not found."""
    with pytest.raises(Conflict):
        await far.delete_operator(KIVRA.id, actor="t")
    with pytest.raises(NotFound):
        await far.delete_operator("2021005448", actor="t")


async def test_recipient_with_mailbox_needs_a_known_operator(far: FarService) -> None:
    """A secure account without an operator, or with an unknown one, is refused."""
    with pytest.raises(InvalidInput):
        await far.put_recipient("191001012382", status=AccountStatus.SECURE, actor="t")
    with pytest.raises(InvalidInput):
        await far.put_recipient("191001012382", status=AccountStatus.SECURE, operator_id="2021005448", actor="t")


async def test_sqlite_and_postgresql_answer_alike(database_url: str, tmp_path: Path) -> None:
    """The same register on SQLite and PostgreSQL: every reason, isRegistered, an import and a replay of it."""
    far = await make_service(database_url)
    try:
        await seed_people(far)
        ids = ["197802022389", "198112189876", "194004048569", "195806142377", "196408233234", "199001302380"]
        answers = await far.is_reachable(SENDER, [*ids, "191001012382", "x"])
        assert [a.reason for a in answers] == [
            None,
            None,
            Reason.ANONYMOUS,
            Reason.PENDING,
            Reason.NO_MAILBOX,
            Reason.SENDER_REFUSED,
            Reason.NO_MAILBOX,
            Reason.INVALID_IDENTIFIER,
        ]
        assert answers[0].last_registration == NOW and answers[1].endpoint == DISCOVERY
        routes = await far.routes(SENDER, [*ids, "191001012382", "x"])
        assert [(a.reason, a.endpoint) for a in routes.answers([*ids, "191001012382", "x"])] == [
            (a.reason, a.endpoint) for a in answers
        ]
        assert [a.status for a in await far.is_registered(ids[:2])] == [AccountStatus.SECURE] * 2
        path = tmp_path / "people.csv"
        path.write_text(
            f"recipient,operator,refused_senders\n191001012382,{KIVRA.id},{SENDER}\n197802022389,{KIVRA.id},\n"
        )
        for _ in range(2):
            report = await import_file(far.engine, path, batch_size=1)
            assert report.ok and report.refusals == 1
        answers = await far.is_reachable(SENDER, ["191001012382", "197802022389"])
        assert [a.reason for a in answers] == [Reason.SENDER_REFUSED, None]
        assert len(await far.audit_trail("191001012382")) == 2
    finally:
        await far.engine.dispose()
