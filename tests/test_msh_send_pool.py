"""The send pool: workers per partner sized by its backlog and its limits, fair between partners, none when idle."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from accesspoint.msh.app import METRICS, SEND_POOL
from accesspoint.msh.config import ConfigError, load_config
from accesspoint.msh.send_plan import Limits, Load, plan
from accesspoint.msh.send_pool import SendPool
from accesspoint.testing import services
from tests.inmemory import Node, Pair, eventually
from tests.test_msh import CERTS, SERVICE, _party
from tests.test_msh_support import agreements, submission

# --- the plan: a pure function, every case Hypothesis finds ---------------------------------------------------------


@st.composite
def _loads(draw: st.DrawFn) -> tuple[dict[str, Load], int]:
    total = draw(st.integers(1, 24))
    loads: dict[str, Load] = {}
    for index in range(draw(st.integers(0, 8))):
        maximum = draw(st.integers(1, 12))
        minimum = draw(st.integers(0, maximum))
        since = draw(st.none() | st.floats(0, 1000, allow_nan=False))
        backlog = draw(st.integers(0, 30))
        loads[f"p{index}"] = Load(backlog, draw(st.integers(0, maximum)), Limits(minimum, maximum), since)
    return loads, total


@given(_loads())
def test_the_plan_never_exceeds_the_global_or_a_partners_maximum(case: tuple[dict[str, Load], int]) -> None:
    """No plan gives more workers in all than send.workers, or to one partner than it may use."""
    loads, total = case
    planned = plan(loads, total)
    assert set(planned) == set(loads)
    assert sum(planned.values()) <= total
    for key, load in loads.items():
        assert 0 <= planned[key] <= min(load.limits.maximum, load.usable)


@given(_loads())
def test_the_plan_starves_no_partner_with_a_backlog(case: tuple[dict[str, Load], int]) -> None:
    """Every partner with a backlog gets a worker when there are workers enough for one each; else the longest
    waiting ones do."""
    loads, total = case
    planned = plan(loads, total)
    waiting = [key for key, load in loads.items() if load.backlog]
    if len(waiting) <= total:
        assert all(planned[key] >= 1 for key in waiting)
    else:
        first = sorted(waiting, key=lambda k: (loads[k].waiting_since is None, loads[k].waiting_since or 0.0, k))
        assert all(planned[key] >= 1 for key in first[:total])


@given(_loads())
def test_the_plan_is_fair_and_leaves_no_worker_unused_while_one_is_wanted(case: tuple[dict[str, Load], int]) -> None:
    """A partner planned below what it could use has at most one fewer than any other (beyond that one's minimum),
    and workers are left over only when every partner has what it can use."""
    loads, total = case
    planned = plan(loads, total)
    short = [key for key, load in loads.items() if planned[key] < load.usable]
    if short:
        assert sum(planned.values()) == total
    for key in short:
        for other, load in loads.items():
            assert planned[other] <= max(planned[key] + 1, min(load.limits.minimum, load.usable), 1)


@given(_loads())
def test_an_idle_plan_falls_back_to_the_minimums(case: tuple[dict[str, Load], int]) -> None:
    """With no backlog and no send under way, each partner is planned at its minimum (as far as send.workers goes)."""
    loads, total = case
    idle = {key: Load(0, 0, load.limits, None) for key, load in loads.items()}
    planned = plan(idle, total)
    assert all(planned[key] <= load.limits.minimum for key, load in idle.items())
    if sum(load.limits.minimum for load in idle.values()) <= total:
        assert all(planned[key] == load.limits.minimum for key, load in idle.items())


def test_the_plan_gives_the_free_worker_to_the_partner_waiting_beside_a_slow_one() -> None:
    """Two workers, a slow partner with both and more waiting, a fast one waiting: one each."""
    loads = {"slow": Load(5, 2, Limits(0, 2), 1.0), "fast": Load(1, 0, Limits(0, 2), 2.0)}
    assert plan(loads, 2) == {"slow": 1, "fast": 1}


# --- configuration ---------------------------------------------------------------------------------------------


def _settings_file(tmp_path: Path, send: dict[str, Any]) -> Path:
    key = CERTS / "ap-sweden-sign"
    file = tmp_path / "server.yaml"
    file.write_text(
        "pmodes: pmodes.yaml\n"
        f"keys: {{signing: {{key: {key}.key.pem, certificate: {key}.pem}}}}\n"
        f"send: {send!r}\n".replace("'", '"')
    )
    return file


def test_per_partner_takes_a_number_or_limits_and_partners_their_own(tmp_path: Path) -> None:
    """send.per_partner is a maximum or {min, max}; send.partners gives a party its own; maximums are held to
    send.workers."""
    loaded = load_config(_settings_file(tmp_path, {"workers": 8, "per_partner": 3}))
    assert loaded.send_per_partner == Limits(0, 3) and loaded.send_partners == {}
    loaded = load_config(
        _settings_file(
            tmp_path,
            {"workers": 8, "per_partner": {"min": 1, "max": 4}, "partners": {"partner-115": {"min": 2, "max": 20}}},
        )
    )
    assert loaded.send_per_partner == Limits(1, 4)
    assert loaded.send_partners == {"partner-115": Limits(2, 8)}
    assert load_config(_settings_file(tmp_path, {"workers": 4})).send_per_partner == Limits(0, 4)


@pytest.mark.parametrize(
    ("send", "field"),
    [
        ({"per_partner": {"min": 3, "max": 2}}, "send.per_partner.min: 3 is more than max (2)"),
        ({"per_partner": {"min": -1}}, "send.per_partner.min: a whole number"),
        ({"per_partner": {"most": 2}}, "send.per_partner.most: unknown setting"),
        ({"partners": {"partner-115": 0}}, "send.partners.partner-115: a positive integer"),
        ({"partners": {"partner-115": {"max": "many"}}}, "send.partners.partner-115.max: a positive integer"),
        (
            {"workers": 2, "partners": {"a": {"min": 2}, "b": {"min": 1}}},
            "send.partners: the minimums add up to 3, more than send.workers (2)",
        ),
    ],
)
def test_wrong_send_limits_are_refused_naming_file_and_field(tmp_path: Path, send: dict[str, Any], field: str) -> None:
    """A wrong per-partner limit stops the start with the file and the field to change."""
    file = _settings_file(tmp_path, send)
    with pytest.raises(ConfigError) as refused:
        load_config(file)
    assert f"{file}: field {field}" in str(refused.value)


# --- on the in-memory pair: a slow partner holding its answers beside Belgium answering at once ------------------


class HeldPartner:
    """An AS4 endpoint that keeps each request until released, then answers 503 (the sender retries later)."""

    def __init__(self) -> None:
        self.port = services.free_port()
        self.url = f"http://127.0.0.1:{self.port}/as4"
        self.received = 0
        self.holding = 0
        self.most = 0  # the most requests it held at once
        self.order: list[str] = []  # the MessageIds of the requests, as they came
        self.released = asyncio.Event()
        self._one = asyncio.Semaphore(0)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        found = re.search(rb"MessageId>([^<]+)<", body)
        self.order.append(found.group(1).decode() if found else "?")
        self.received += 1
        self.holding += 1
        self.most = max(self.most, self.holding)
        try:
            if not self.released.is_set():
                one = asyncio.ensure_future(self._one.acquire())
                every = asyncio.ensure_future(self.released.wait())
                await asyncio.wait([one, every], return_when=asyncio.FIRST_COMPLETED)
                for waiting in (one, every):
                    waiting.cancel()
        finally:
            self.holding -= 1
        return web.Response(status=503, text="busy")

    def release_one(self) -> None:
        """Let one held request be answered."""
        self._one.release()


@pytest.fixture
async def held() -> AsyncIterator[HeldPartner]:
    """The slow partner's endpoint, on a loopback port."""
    partner = HeldPartner()
    app = web.Application()
    app.router.add_post("/as4", partner.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", partner.port).start()
    yield partner
    partner.released.set()
    await runner.cleanup()


def _with_slow_partner(pair: Pair, held: HeldPartner, **send: Any) -> Node:
    """Sweden with a second partner (slow-partner, at the held endpoint) and the given send settings."""
    pmodes = agreements("ap-sweden", pair.se_url, pair.be_url)
    security = pmodes["pmodes"][0]["legs"][0]["security"]
    pmodes["parties"]["slow-partner"] = _party(
        "AP-SLOW-0001", signing_certificate=str(CERTS / "partner-115.pem"), endpoint=held.url
    )
    pmodes["pmodes"].append(
        {
            "id": "se-to-slow",
            "network": "edelivery-1.15",
            "initiator": {"party": "ap-sweden"},
            "responder": {"party": "slow-partner"},
            "legs": [{"service": SERVICE, "action": "Deliver", "security": security}],
        }
    )
    pair.se.write_pmodes(pmodes)
    pair.configure(pair.se, send={"timeout": "5s", "lease": "10s", **send})
    return pair.se


async def _submit(node: Node, pmode: str, *message_ids: str) -> None:
    for message_id in message_ids:
        assert (await node.api("POST", "/api/v1/messages", submission(pmode, b"<letter/>", message_id)))[0] == 202


async def _state(node: Node, message_id: str) -> str:
    return str((await node.message(message_id))["state"])


def _gauges(node: Node) -> dict[tuple[str, str], float]:
    assert node.app is not None
    text = node.app[METRICS].exposition().decode()
    return {
        (sample.name, sample.labels["partner"]): sample.value
        for family in text_string_to_metric_families(text)
        if family.name in {"as4_send_workers", "as4_send_backlog"}
        for sample in family.samples
    }


async def test_a_slow_partner_holds_no_more_than_its_fair_share_of_the_workers(
    pair_factory: Callable[..., Pair], held: HeldPartner
) -> None:
    """Two workers both held by a slow partner with more waiting: the first to come free goes to the fast partner's
    message that arrived after the slow backlog, not to the slow partner's next one."""
    pair = pair_factory()
    sweden = _with_slow_partner(pair, held, workers=2)
    await pair.be.start()
    await sweden.start()
    await _submit(sweden, "se-to-slow", "slow-1@se", "slow-2@se", "slow-3@se")
    await eventually(lambda: asyncio.sleep(0, held.holding), lambda n: n == 2, "both workers held by the slow partner")
    await _submit(sweden, "se-to-be", "fast@se")
    assert sweden.app is not None
    pool = sweden.app[SEND_POOL]
    await eventually(
        lambda: asyncio.sleep(0, list(pool.by_partner())),
        lambda partners: ("partner-115", 0, 1) in partners,
        "the fast partner's message claimed, waiting for a worker",
    )
    assert await _state(sweden, "fast@se") == "sending" and held.received == 2
    held.release_one()
    await eventually(lambda: _state(sweden, "fast@se"), lambda s: s == "delivered", "the fast partner's message")
    # The slow partner's third message waited for its share: no third request reached it before the fast one went.
    assert held.received == 2
    held.released.set()
    await eventually(lambda: asyncio.sleep(0, held.received), lambda n: n == 3, "the slow partner's third message")


async def test_the_pool_grows_with_a_partners_backlog_to_its_maximum_and_falls_back_to_none_when_idle(
    pair_factory: Callable[..., Pair], held: HeldPartner
) -> None:
    """A slow partner capped at three gets three workers under a backlog of five while the fast partner's messages
    go on the fourth; the gauges say so, and once all is answered no worker is left."""
    pair = pair_factory()
    sweden = _with_slow_partner(pair, held, workers=4, partners={"slow-partner": {"max": 3}})
    await pair.be.start()
    await sweden.start()
    assert sweden.app is not None
    pool = sweden.app[SEND_POOL]
    assert pool.running == 0  # an idle access point holds no worker
    await _submit(sweden, "se-to-slow", *(f"slow-{n}@se" for n in range(5)))
    await eventually(lambda: asyncio.sleep(0, held.holding), lambda n: n == 3, "three sends held by the slow partner")
    await _submit(sweden, "se-to-be", "fast-1@se", "fast-2@se")
    for message_id in ("fast-1@se", "fast-2@se"):
        await eventually(lambda m=message_id: _state(sweden, m), lambda s: s == "delivered", message_id)
    await eventually(
        lambda: asyncio.sleep(0, list(pool.by_partner())),
        lambda partners: ("slow-partner", 3, 2) in partners,
        "the slow partner at its maximum with two waiting",
    )
    assert sweden.app is not None
    await sweden.app[METRICS].refresh()
    gauges = _gauges(sweden)
    assert gauges[("as4_send_workers", "slow-partner")] == 3 and gauges[("as4_send_backlog", "slow-partner")] == 2
    held.released.set()
    await eventually(lambda: asyncio.sleep(0, held.received), lambda n: n == 5, "every slow message attempted")
    await eventually(lambda: asyncio.sleep(0, pool.running), lambda n: n == 0, "the workers to end once idle")
    assert held.most == 3 and list(pool.by_partner()) == []
    await sweden.app[METRICS].refresh()
    assert _gauges(sweden) == {}


async def _slow_partner_limited_to_one(pair: Pair, held: HeldPartner) -> tuple[Node, SendPool]:
    """Sweden (two workers) running, the slow partner limited to one send, slow-1..3 submitted to it."""
    sweden = _with_slow_partner(pair, held, workers=2, partners={"slow-partner": 1})
    await pair.be.start()
    await sweden.start()
    assert sweden.app is not None
    await _submit(sweden, "se-to-slow", "slow-1@se", "slow-2@se", "slow-3@se")
    return sweden, sweden.app[SEND_POOL]


async def test_a_full_partners_further_messages_stay_unclaimed_while_others_go_past_them(
    pair_factory: Callable[..., Pair], held: HeldPartner
) -> None:
    """A slow partner limited to one send, with one claimed message waiting behind it: its next message is kept
    unclaimed (still submitted) and the fast partner's message queued after it is sent first."""
    sweden, pool = await _slow_partner_limited_to_one(pair_factory(), held)
    await _submit(sweden, "se-to-be", "fast@se")
    await eventually(lambda: _state(sweden, "fast@se"), lambda s: s == "delivered", "the fast partner's message")
    # The slow worker may start after the fast message went (a loaded machine): the snapshot is taken once it holds.
    await eventually(lambda: asyncio.sleep(0, held.holding), lambda n: n == 1, "the slow partner holding one")
    assert list(pool.by_partner()) == [("slow-partner", 1, 2)]
    # slow-3 at least (slow-2 too, had it come before the worker took slow-1) is kept unclaimed.
    assert await _state(sweden, "slow-3@se") == "submitted"
    held.released.set()
    await eventually(lambda: asyncio.sleep(0, held.received), lambda n: n == 3, "every slow message attempted")
    assert held.most == 1


async def test_a_message_kept_unclaimed_for_a_full_partner_is_sent_before_one_that_came_after_it(
    pair_factory: Callable[..., Pair], held: HeldPartner
) -> None:
    """A slow partner limited to one send: a message kept unclaimed while its lane was full goes before a message
    submitted later and claimed at once, so kept messages are not passed over and over under load."""
    sweden, pool = await _slow_partner_limited_to_one(pair_factory(), held)
    await eventually(lambda: asyncio.sleep(0, held.holding), lambda n: n == 1, "the slow partner holding one")
    await eventually(
        lambda: asyncio.sleep(0, list(pool.by_partner())), lambda p: p == [("slow-partner", 1, 2)], "two waiting"
    )
    assert await _state(sweden, "slow-3@se") == "submitted"  # kept unclaimed: the lane was full
    held.release_one()
    await eventually(lambda: asyncio.sleep(0, held.order), lambda o: o[:2] == ["slow-1@se", "slow-2@se"], "slow-2")
    await _submit(sweden, "se-to-slow", "slow-4@se")  # the lane has room now: claimed at once
    await eventually(
        lambda: asyncio.sleep(0, list(pool.by_partner())), lambda p: p == [("slow-partner", 1, 2)], "both waiting"
    )
    held.release_one()
    await eventually(lambda: asyncio.sleep(0, held.received), lambda n: n >= 3, "the next slow message")
    assert held.order[2] == "slow-3@se", held.order
    held.released.set()
