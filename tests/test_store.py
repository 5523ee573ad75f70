"""The message store on SQLite and on a real PostgreSQL: lifecycles, compare-and-set, duplicates, retention."""

from __future__ import annotations

import asyncio
import hashlib
import random
import tracemalloc
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect

from accesspoint.store import (
    TRANSITIONS,
    Direction,
    DuplicateMessage,
    Durability,
    EvidenceKind,
    FileStore,
    FileTooLarge,
    IllegalTransition,
    MessageInfo,
    MessageState,
    MessageStore,
    NewEvidence,
    NewPayload,
    Retention,
    StoredMessage,
    check_transition,
    create_engine,
    upgrade_to_head,
)
from accesspoint.store.clock import ManualClock
from accesspoint.store.files import SMALL_FILE
from accesspoint.store.schema import metadata
from accesspoint.store.states import FINAL, INITIAL, diagram, states_of

S = MessageState
K = EvidenceKind
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)
KEEP = timedelta(days=3650)
# The stores under test keep content up to this many bytes in the database, longer content in files: the short
# test documents go inline, LONG goes to a file, so both ways are exercised.
INLINE = 64
LONG = b"<doc>" + b"x" * INLINE + b"</doc>"


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    """Yield the parts as a stream, the way the server hands over a request body."""
    for part in parts:
        yield part


async def collect(stream: AsyncIterator[bytes]) -> bytes:
    """Read a stream to the end (test data only: small)."""
    return b"".join([chunk async for chunk in stream])


def payload(content_id: str = "cid:part-1", data: bytes = b"<doc/>") -> NewPayload:
    """One XML payload with a part property."""
    return NewPayload(content_id, "application/xml", chunks(data), {"MimeType": "application/xml"})


@pytest.fixture
async def store(migrated_database_url: str, tmp_path: Path) -> AsyncIterator[MessageStore]:
    """A store on a migrated database of each backend, files under tmp_path."""
    opened = await MessageStore.open(migrated_database_url, tmp_path / "files", instance="a", inline_limit=INLINE)
    yield opened
    await opened.close()


@pytest.fixture
async def other(store: MessageStore, migrated_database_url: str) -> AsyncIterator[MessageStore]:
    """A second instance over the same database and file store, with its own connections."""
    opened = await MessageStore.open(
        migrated_database_url, store.files.root, instance="b", migrate=False, inline_limit=INLINE
    )
    yield opened
    await opened.close()


# --- migrations ------------------------------------------------------------------------------------------


def _schema_differences(connection: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(connection), metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def test_migrations_build_the_schema_on_an_empty_database(database_url: str) -> None:
    """upgrade_to_head on an empty database creates exactly the declared schema, and a second run changes nothing."""
    await upgrade_to_head(database_url)
    await upgrade_to_head(database_url)
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(_tables) == {
                "alembic_version",
                "messages",
                "payloads",
                "evidence",
                "transitions",
                "end_to_end",
                "outbox",
                "route_targets",
                "idempotency_keys",
            }
            assert await connection.run_sync(_schema_differences) == []
    finally:
        await engine.dispose()


@pytest.mark.parametrize(("durability", "synchronous"), [(Durability.POWER_LOSS, 2), (Durability.PROCESS_CRASH, 1)])
async def test_sqlite_connections_use_wal_foreign_keys_busy_timeout_and_the_durability(
    tmp_path: Path, durability: Durability, synchronous: int
) -> None:
    """Every SQLite connection runs in WAL mode with foreign keys, a busy timeout and FULL or NORMAL syncing."""
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}", durability=durability)
    try:
        async with engine.connect() as connection:
            pragmas = [
                (await connection.exec_driver_sql(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")
            ]
        assert pragmas == ["wal", 1, 10_000, synchronous]
    finally:
        await engine.dispose()


# --- the transition table --------------------------------------------------------------------------------


@pytest.mark.parametrize("direction", list(Direction))
def test_every_pair_outside_the_table_is_illegal(direction: Direction) -> None:
    """check_transition accepts exactly the pairs in TRANSITIONS and raises IllegalTransition for all others."""
    states = list(MessageState)
    for source in states:
        for target in states:
            if (source, target) in TRANSITIONS[direction]:
                check_transition(direction, source, target)
            else:
                with pytest.raises(IllegalTransition):
                    check_transition(direction, source, target)


@pytest.mark.parametrize("direction", list(Direction))
def test_every_state_is_reachable_and_final_states_are_final(direction: Direction) -> None:
    """From the initial state every state of the direction is reachable, and nothing leaves a final state."""
    reached, frontier = {INITIAL[direction]}, [INITIAL[direction]]
    while frontier:
        source = frontier.pop()
        for start, target in TRANSITIONS[direction]:
            if start == source and target not in reached:
                reached.add(target)
                frontier.append(target)
    assert reached == states_of(direction)
    assert not [pair for pair in TRANSITIONS[direction] if pair[0] in FINAL[direction]]


# --- lifecycles ------------------------------------------------------------------------------------------


async def test_outgoing_message_walks_submitted_sending_awaiting_receipt_delivered(store: MessageStore) -> None:
    """An outgoing message is retried from awaiting_receipt only when due and every step lands in the audit."""
    info = MessageInfo("out-1@ap", conversation_id="c1", pmode_id="p1", leg=1, service="s", action="a")
    submitted = await store.submit(info, [payload()], now=T0)
    assert (submitted.state, submitted.attempts, submitted.payload_bytes) == (S.SUBMITTED, 0, 6)

    sending = await store.claim("out-1@ap", now=T0, lease=LEASE)
    assert sending is not None and sending.lease_owner == "a" and sending.attempts == 1
    retry_at = T0 + timedelta(minutes=1)
    waiting = await store.transition(
        sending, S.AWAITING_RECEIPT, now=T0, next_attempt_at=retry_at, error=("EBMS:0005", "connection refused")
    )
    assert waiting is not None and waiting.lease_owner is None and waiting.last_error_code == "EBMS:0005"
    assert await store.claim("out-1@ap", now=retry_at - timedelta(seconds=1), lease=LEASE) is None

    again = await store.claim("out-1@ap", now=retry_at, lease=LEASE)
    assert again is not None and again.attempts == 2
    delivered = await store.transition(again, S.DELIVERED, now=retry_at)
    assert delivered is not None and delivered.state is S.DELIVERED

    history = await store.history(delivered)
    assert [(step.source, step.target) for step in history] == [
        (None, S.SUBMITTED),
        (S.SUBMITTED, S.SENDING),
        (S.SENDING, S.AWAITING_RECEIPT),
        (S.AWAITING_RECEIPT, S.SENDING),
        (S.SENDING, S.DELIVERED),
    ]
    assert history[2].detail == "EBMS:0005"
    [stored] = await store.payloads(delivered)
    assert stored.properties == {"MimeType": "application/xml"}
    assert stored.sha256 == hashlib.sha256(b"<doc/>").hexdigest()
    assert await collect(store.read(stored)) == b"<doc/>"


async def test_incoming_message_walks_received_delivered_acknowledged(store: MessageStore) -> None:
    """An incoming message goes received -> delivered_to_backend -> acknowledged and may not skip a step."""
    reception = await store.receive(MessageInfo("in-1@partner", pmode_id="p1"), [payload()], now=T0)
    assert not reception.duplicate and reception.message.state is S.RECEIVED
    with pytest.raises(IllegalTransition):
        await store.transition(reception.message, S.ACKNOWLEDGED, now=T0)
    delivered = await store.transition(reception.message, S.DELIVERED_TO_BACKEND, now=T0)
    assert delivered is not None
    acknowledged = await store.transition(delivered, S.ACKNOWLEDGED, now=T0)
    assert acknowledged is not None and acknowledged.version == 3


async def test_illegal_transition_raises_and_changes_nothing(store: MessageStore) -> None:
    """A move outside the table raises IllegalTransition before any write, and sending is reached only by claim."""
    message = await store.submit(MessageInfo("out-2@ap"), [], now=T0)
    with pytest.raises(IllegalTransition):
        await store.transition(message, S.DELIVERED, now=T0)
    with pytest.raises(IllegalTransition):
        await store.transition(message, S.RECEIVED, now=T0)
    with pytest.raises(ValueError, match="claim"):
        await store.transition(message, S.SENDING, now=T0)
    assert await store.get(Direction.OUT, "out-2@ap") == message


# --- compare-and-set -------------------------------------------------------------------------------------


async def test_two_instances_claiming_the_same_messages_never_both_win(
    store: MessageStore, other: MessageStore
) -> None:
    """Two instances racing to claim each of 10 messages: every message is won by exactly one of them."""
    ids = [f"race-{n}@ap" for n in range(10)]
    for message_id in ids:
        await store.submit(MessageInfo(message_id), [], now=T0)
    results = await asyncio.gather(
        *(node.claim(message_id, now=T0, lease=LEASE) for message_id in ids for node in (store, other))
    )
    winners = [result for result in results if result is not None]
    assert sorted(winner.message_id for winner in winners) == sorted(ids)
    for message_id in ids:
        history = await store.history(await _get_out(store, message_id))
        assert [step.target for step in history] == [S.SUBMITTED, S.SENDING]


async def test_a_stale_snapshot_moves_nothing(store: MessageStore, other: MessageStore) -> None:
    """A transition from a row someone else has moved since it was read returns None and writes nothing."""
    await store.submit(MessageInfo("stale@ap"), [], now=T0)
    sending = await store.claim("stale@ap", now=T0, lease=LEASE)
    assert sending is not None
    delivered = await other.transition(sending, S.DELIVERED, now=T0)
    assert delivered is not None
    assert await store.transition(sending, S.FAILED, now=T0, error=("EBMS:0301", "late")) is None
    assert (await _get_out(store, "stale@ap")).state is S.DELIVERED


async def test_an_expired_lease_is_taken_over_and_fences_the_old_worker(
    store: MessageStore, other: MessageStore
) -> None:
    """A message left in sending is reclaimed only after its lease, and the crashed worker can no longer move it."""
    await store.submit(MessageInfo("crash@ap"), [], now=T0)
    abandoned = await store.claim("crash@ap", now=T0, lease=LEASE)
    assert abandoned is not None
    early = T0 + LEASE - timedelta(seconds=1)
    assert await other.claim("crash@ap", now=early, lease=LEASE) is None
    assert await other.recoverable(now=early) == []

    late = T0 + LEASE + timedelta(seconds=1)
    assert await other.recoverable(now=late) == ["crash@ap"]
    taken = await other.claim("crash@ap", now=late, lease=LEASE)
    assert taken is not None and taken.lease_owner == "b" and taken.attempts == 2
    assert await store.transition(abandoned, S.DELIVERED, now=late) is None
    history = await other.history(taken)
    assert (history[-1].source, history[-1].target, history[-1].actor) == (S.SENDING, S.SENDING, "b")
    assert history[-1].detail is not None and "lease of a expired" in history[-1].detail


async def test_a_renewed_lease_keeps_the_message_and_a_lost_one_cannot_be_renewed(
    store: MessageStore, other: MessageStore
) -> None:
    """Renewing extends the holder's lease (no takeover until it runs out); once taken over, renewing gives None."""
    await store.submit(MessageInfo("renew@ap"), [], now=T0)
    held = await store.claim("renew@ap", now=T0, lease=LEASE)
    assert held is not None
    later = T0 + LEASE - timedelta(seconds=1)
    renewed = await store.renew(held, now=later, lease=LEASE)
    assert renewed is not None and renewed.lease_until == later + LEASE and renewed.attempts == 1
    assert await other.claim("renew@ap", now=T0 + LEASE + timedelta(seconds=1), lease=LEASE) is None
    taken = await other.claim("renew@ap", now=later + LEASE + timedelta(seconds=1), lease=LEASE)
    assert taken is not None and await store.renew(renewed, now=later + LEASE, lease=LEASE) is None
    assert [step.detail for step in await store.history(taken)][-2] == "lease renewed"


async def test_recoverable_lists_what_a_restart_must_enqueue(store: MessageStore) -> None:
    """After a restart, submitted messages and due retries are listed; pending retries and final ones are not."""
    for message_id in ("fresh@ap", "retry-due@ap", "retry-later@ap", "done@ap"):
        await store.submit(MessageInfo(message_id), [], now=T0)
    for message_id, retry in (("retry-due@ap", T0), ("retry-later@ap", T0 + timedelta(hours=1))):
        claimed = await store.claim(message_id, now=T0, lease=LEASE)
        assert claimed is not None
        assert await store.transition(claimed, S.AWAITING_RECEIPT, now=T0, next_attempt_at=retry)
    done = await store.claim("done@ap", now=T0, lease=LEASE)
    assert done is not None and await store.transition(done, S.DELIVERED, now=T0)
    assert sorted(await store.recoverable(now=T0)) == ["fresh@ap", "retry-due@ap"]


async def test_recoverable_with_idle_lists_only_due_messages_untouched_for_that_long(store: MessageStore) -> None:
    """The periodic sweep re-queues a due message only once nothing has touched it for a lease; a touch restarts it."""
    clock = ManualClock(T0)
    for message_id in ("waiting@ap", "retry@ap", "sending@ap", "done@ap"):
        await store.submit(MessageInfo(message_id), [], now=clock.now())
    retry = await store.claim("retry@ap", now=clock.now(), lease=LEASE)
    assert retry is not None
    due = clock.now() + timedelta(seconds=10)
    assert await store.transition(retry, S.AWAITING_RECEIPT, now=clock.now(), next_attempt_at=due)
    assert await store.claim("sending@ap", now=clock.now(), lease=LEASE) is not None  # its worker then dies
    done = await store.claim("done@ap", now=clock.now(), lease=LEASE)
    assert done is not None and await store.transition(done, S.DELIVERED, now=clock.now())

    # Due but touched within the lease: a queue may simply not have reached them yet.
    await clock.advance(LEASE - timedelta(seconds=1))
    assert await store.recoverable(now=clock.now()) == ["waiting@ap", "retry@ap"]
    assert await store.recoverable(now=clock.now(), idle=LEASE) == []

    # A lease after the last touch: lost by the queue, listed in the order they were stored.
    await clock.advance(timedelta(seconds=1))
    assert await store.recoverable(now=clock.now(), idle=LEASE) == ["waiting@ap", "retry@ap"]
    # The dead worker's lease runs out (strictly) a moment later; a final message is never listed.
    await clock.advance(timedelta(seconds=1))
    assert await store.recoverable(now=clock.now(), idle=LEASE) == ["waiting@ap", "retry@ap", "sending@ap"]

    # A claim touches the message: it is not listed again until a whole lease has passed without news.
    taken = await store.claim("waiting@ap", now=clock.now(), lease=LEASE)
    assert taken is not None
    await clock.advance(LEASE)
    assert await store.recoverable(now=clock.now(), idle=LEASE) == ["retry@ap", "sending@ap"]
    await clock.advance(timedelta(seconds=1))
    assert await store.recoverable(now=clock.now(), idle=LEASE) == ["waiting@ap", "retry@ap", "sending@ap"]


# --- duplicates ------------------------------------------------------------------------------------------


async def test_a_repeated_incoming_message_id_gets_the_stored_receipt(store: MessageStore) -> None:
    """The second reception of a MessageId is a duplicate answered with the receipt stored for the first."""
    first = await store.receive(MessageInfo("dup@partner"), [payload()], now=T0)
    receipt = await store.add_evidence(
        Direction.IN, "dup@partner", EvidenceKind.OUR_RECEIPT, chunks(b"<receipt/>"), now=T0, retain_for=KEEP
    )
    files_before = _files(store.files)
    second = await store.receive(MessageInfo("dup@partner"), [payload(data=b"other")], now=T0)
    assert second.duplicate and second.message == first.message and second.receipt == receipt
    assert second.receipt is not None and await collect(store.read(second.receipt)) == b"<receipt/>"
    assert _files(store.files) == files_before


async def test_evidence_given_with_a_message_or_a_move_is_kept_in_its_transaction(
    store: MessageStore, other: MessageStore
) -> None:
    """Evidence passed to receive, submit or transition is stored with them; a duplicate keeps none, a lost move
    still keeps the partner's receipt."""

    def raw(data: bytes) -> NewEvidence:
        return NewEvidence(EvidenceKind.RAW_MESSAGE, chunks(data), KEEP)

    receipt = NewEvidence(EvidenceKind.OUR_RECEIPT, chunks(b"<receipt/>"), KEEP)
    first = await store.receive(MessageInfo("ev@partner"), [payload()], now=T0, evidence=[raw(b"<raw/>"), receipt])
    kept = await store.evidence(Direction.IN, "ev@partner")
    assert [(e.kind, e.retain_until) for e in kept] == [(K.RAW_MESSAGE, T0 + KEEP), (K.OUR_RECEIPT, T0 + KEEP)]
    assert [await collect(store.read(e)) for e in kept] == [b"<raw/>", b"<receipt/>"]
    files_before = _files(store.files)
    second = await store.receive(MessageInfo("ev@partner"), [payload()], now=T0, evidence=[raw(b"<again/>")])
    assert second.duplicate and second.receipt == kept[1] and not first.duplicate
    assert (len(await store.evidence(Direction.IN, "ev@partner")), _files(store.files)) == (2, files_before)

    await store.submit(MessageInfo("ev@ap"), [], now=T0, evidence=[raw(b"<header/>")])
    sending = await store.claim("ev@ap", now=T0, lease=LEASE)
    assert sending is not None and await other.transition(sending, S.FAILED, now=T0) is not None
    late = NewEvidence(EvidenceKind.PARTNER_RECEIPT, chunks(b"<late/>"), KEEP)
    assert await store.transition(sending, S.DELIVERED, now=T0, evidence=[late]) is None
    kinds = [e.kind for e in await store.evidence(Direction.OUT, "ev@ap")]
    assert kinds == [K.RAW_MESSAGE, K.PARTNER_RECEIPT]


async def test_a_message_id_raced_by_two_instances_is_stored_once(store: MessageStore, other: MessageStore) -> None:
    """Two instances receiving the same MessageId at once: one stores it, the other reports a duplicate."""
    results = await asyncio.gather(
        *(node.receive(MessageInfo("twice@partner"), [payload(data=LONG)], now=T0) for node in (store, other))
    )
    assert sorted(result.duplicate for result in results) == [False, True]
    assert len(_files(store.files)) == 1  # the loser's payload file is gone


async def test_a_repeated_outgoing_message_id_is_refused(store: MessageStore) -> None:
    """Submitting an outgoing MessageId twice raises DuplicateMessage; the same id incoming is a different message."""
    await store.submit(MessageInfo("same@ap"), [], now=T0)
    with pytest.raises(DuplicateMessage):
        await store.submit(MessageInfo("same@ap"), [payload()], now=T0)
    assert not (await store.receive(MessageInfo("same@ap"), [], now=T0)).duplicate


# --- retention -------------------------------------------------------------------------------------------


async def test_payload_purge_keeps_evidence_and_follows_each_pmode(store: MessageStore) -> None:
    """Purges follow each P-Mode's durations, spare unfinished messages and leave evidence to its own schedule."""
    for message_id, pmode in (("short@ap", "p-short"), ("long@ap", "p-long"), ("open@ap", "p-short")):
        await store.submit(MessageInfo(message_id, pmode_id=pmode), [payload(data=LONG)], now=T0)
        await store.add_evidence(
            Direction.OUT, message_id, EvidenceKind.RAW_MESSAGE, chunks(b"raw"), now=T0, retain_for=timedelta(days=90)
        )
    for message_id in ("short@ap", "long@ap"):
        claimed = await store.claim(message_id, now=T0, lease=LEASE)
        assert claimed is not None and await store.transition(claimed, S.DELIVERED, now=T0)
    retention = {
        "p-short": Retention(payloads=timedelta(days=1), messages=timedelta(days=30)),
        "p-long": Retention(payloads=timedelta(days=10)),
    }

    report = await store.purge(now=T0 + timedelta(days=2), retention=retention)
    assert (report.payloads, report.messages) == (1, 0)
    short = await _get_out(store, "short@ap")
    assert await store.payloads(short) == [] and short.payloads_purged_at == T0 + timedelta(days=2)
    assert len(await store.payloads(await _get_out(store, "long@ap"))) == 1
    assert len(await store.payloads(await _get_out(store, "open@ap"))) == 1
    assert len(_files(store.files)) == 2  # two payloads left (the short evidence is kept inline)

    report = await store.purge(now=T0 + timedelta(days=31), retention=retention)
    assert (report.payloads, report.messages) == (1, 1)
    assert await store.get(Direction.OUT, "short@ap") is None
    [evidence] = await store.evidence(Direction.OUT, "short@ap")
    assert await collect(store.read(evidence)) == b"raw"

    assert (await store.purge_evidence(now=T0 + timedelta(days=89))).evidence == 0
    assert (await store.purge_evidence(now=T0 + timedelta(days=90))).evidence == 3
    assert await store.evidence(Direction.OUT, "short@ap") == []
    assert len(_files(store.files)) == 1  # the unfinished message's payload


async def test_default_retention_covers_pmodes_without_their_own(store: MessageStore) -> None:
    """The default retention applies to messages of unlisted P-Modes and of none."""
    for message_id, pmode in (("a@ap", None), ("b@ap", "unlisted"), ("c@ap", "listed")):
        await store.submit(MessageInfo(message_id, pmode_id=pmode), [payload()], now=T0)
        claimed = await store.claim(message_id, now=T0, lease=LEASE)
        assert claimed is not None and await store.transition(claimed, S.FAILED, now=T0)
    report = await store.purge(
        now=T0 + timedelta(days=2), retention={"listed": Retention()}, default=Retention(messages=timedelta(days=1))
    )
    assert report.messages == 2
    assert [m.message_id for m in await store.search(direction=Direction.OUT)] == ["c@ap"]


# --- the file store --------------------------------------------------------------------------------------


async def test_file_store_streams_hashes_and_refuses_past_the_limit(tmp_path: Path) -> None:
    """Writes stream chunk by chunk with size and SHA-256, and a stream past its limit or failing leaves no file."""
    files = FileStore(tmp_path)
    block = bytes(range(256)) * 256
    stored = await files.write(chunks(*([block] * 64)))
    assert stored.size == 64 * len(block)
    assert stored.sha256 == hashlib.sha256(block * 64).hexdigest()
    assert [len(chunk) async for chunk in files.read(stored.path)] == [256 * 1024] * 16

    with pytest.raises(FileTooLarge):
        await files.write(chunks(block, block), limit=len(block))

    async def broken() -> AsyncIterator[bytes]:
        yield block
        raise ConnectionResetError

    with pytest.raises(ConnectionResetError):
        await files.write(broken())
    assert _files(files) == [stored.path]
    with pytest.raises(ValueError, match="outside"):
        await collect(files.read("../../etc/passwd"))


async def test_file_store_small_and_empty_streams_read_back_exactly_and_a_long_failing_one_leaves_no_file(
    tmp_path: Path,
) -> None:
    """A stream within SMALL_FILE (written in one go) and an empty one read back as written; one that fails after
    going to its file leaves nothing behind."""
    files = FileStore(tmp_path)
    small = await files.write(chunks(b"<a>", b"4 KB", b"</a>"))
    empty = await files.write(chunks())
    assert await collect(files.read(small.path)) == b"<a>4 KB</a>"
    assert (small.size, small.sha256) == (11, hashlib.sha256(b"<a>4 KB</a>").hexdigest())
    assert ([chunk async for chunk in files.read(empty.path)], empty.size) == ([], 0)

    async def broken() -> AsyncIterator[bytes]:
        yield bytes(SMALL_FILE + 1)
        yield b"more"
        raise ConnectionResetError

    with pytest.raises(ConnectionResetError):
        await files.write(broken())
    assert _files(files) == sorted([small.path, empty.path])


def _files(files: FileStore) -> list[str]:
    return sorted(path.relative_to(files.root).as_posix() for path in files.root.rglob("*") if path.is_file())


async def _get_out(store: MessageStore, message_id: str) -> StoredMessage:
    message = await store.get(Direction.OUT, message_id)
    assert message is not None
    return message


def test_the_diagram_shows_exactly_the_table() -> None:
    """The generated Mermaid diagram has one arrow per table entry, plus the initial and final markers."""
    for direction in Direction:
        arrows = {tuple(line.strip().split(" --> ")) for line in diagram(direction).splitlines()[1:]}
        expected = {(source.value, target.value) for source, target in TRANSITIONS[direction]}
        expected |= {("[*]", INITIAL[direction].value)} | {(state.value, "[*]") for state in FINAL[direction]}
        assert arrows == expected


def test_the_operators_guide_shows_the_generated_diagrams() -> None:
    """accesspoint/msh/README.md shows exactly the generated diagrams, outgoing then incoming."""
    guide = (Path(__file__).resolve().parents[1] / "accesspoint" / "msh" / "README.md").read_text("utf-8")
    blocks = [block.split("```", 1)[0] for block in guide.split("```mermaid\n")[1:]]
    assert blocks == [diagram(Direction.OUT), diagram(Direction.IN)]


async def test_a_random_walk_follows_the_table_and_the_audit_records_it(store: MessageStore) -> None:
    """Random moves, legal or not, on a few messages: legal ones land with version + 1, others change nothing."""
    chooser = random.Random(4)
    now = T0
    messages: list[StoredMessage] = []
    for n in range(3):
        messages.append(await store.submit(MessageInfo(f"walk-{n}@ap"), [], now=now))
        messages.append((await store.receive(MessageInfo(f"walk-{n}@partner"), [], now=now)).message)
    walked = {message.pk: [message.state] for message in messages}
    for _ in range(60):
        index = chooser.randrange(len(messages))
        message, target = messages[index], chooser.choice(list(MessageState))
        now += LEASE * 2  # every lease has run out and every retry is due
        legal = (message.state, target) in TRANSITIONS[message.direction]
        if not legal:
            with pytest.raises(IllegalTransition):
                await store.transition(message, target, now=now)
            continue
        if target is S.SENDING:
            moved = await store.claim(message.message_id, now=now, lease=LEASE)
        else:
            moved = await store.transition(message, target, now=now, next_attempt_at=now)
        assert moved is not None and (moved.state, moved.version) == (target, message.version + 1)
        messages[index] = moved
        walked[moved.pk].append(target)
    for message in messages:
        assert await store.get(message.direction, message.message_id) == message
        assert [step.target for step in await store.history(message)] == walked[message.pk]


async def test_cancelled_callers_leave_the_store_usable(store: MessageStore) -> None:
    """Operations whose callers are cancelled mid-way still finish, so no connection is left holding a lock."""
    chooser = random.Random(7)
    for round_ in range(20):
        await store.submit(MessageInfo(f"cancel-{round_}@ap"), [], now=T0)
        call = asyncio.create_task(store.claim(f"cancel-{round_}@ap", now=T0, lease=LEASE))
        await asyncio.sleep(chooser.random() * 0.004)
        call.cancel()
        await asyncio.gather(call, return_exceptions=True)
        async with asyncio.timeout(5):
            # On SQLite a transaction abandoned half-way would hold the write lock: this insert would wait it out.
            await store.submit(MessageInfo(f"after-{round_}@ap"), [], now=T0)
    assert len(await store.search(limit=100)) == 40


async def test_file_store_memory_does_not_grow_with_the_stream(tmp_path: Path) -> None:
    """Writing and reading 32 MiB through the file store keeps under 2 MiB of Python memory at its peak."""
    files = FileStore(tmp_path)
    block = b"\xa5" * (64 * 1024)

    async def stream() -> AsyncIterator[bytes]:
        for _ in range(512):
            yield block

    tracemalloc.start()
    try:
        stored = await files.write(stream())
        size = 0
        async for chunk in files.read(stored.path):
            size += len(chunk)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size == stored.size == 32 * 1024 * 1024
    assert peak < 2 * 1024 * 1024
