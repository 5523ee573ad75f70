"""Pull, both ways (ebMS 3 3.4, AS4 2.1): serving partners' PullRequests, and pulling from partners.

``PullServer.serve`` answers an authorised PullRequest with the oldest message waiting on its MPC (or
EBMS:0006); the message then waits for its receipt and is offered again after the leg's retry delay.
``Puller.run`` (a supervised task) sends our signed PullRequests for every pull leg we initiate, accepts what
comes back like a pushed message and POSTs the receipt or error to the partner.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

import aiohttp
from aiohttp import web

from accesspoint.core.conformance import check_wire
from accesspoint.core.errors import EbmsError, ErrorCode
from accesspoint.core.message import ReceivedMessage
from accesspoint.core.model import SignalMessage
from accesspoint.core.namespaces import SoapVersion
from accesspoint.msh.context import Context
from accesspoint.msh.next_step import Action, Outcome
from accesspoint.msh.receiving import pull_request
from accesspoint.msh.send_pipeline import SendPipeline
from accesspoint.msh.sending import ANSWER_LIMIT
from accesspoint.msh.signals import Settlement
from accesspoint.msh.wire import READ_CHUNK, discard, read_message_body
from accesspoint.servicekit.httpclient import fetch, open_request, stall_timeout
from accesspoint.store import Direction, EvidenceKind, MessageState, StoredMessage
from pmode import Route

log = logging.getLogger("accesspoint.msh")

Accept = Callable[[ReceivedMessage, datetime, str], Awaitable[bytes]]


class PullServer:
    """Hands waiting messages to partners that pull them."""

    def __init__(self, ctx: Context, pipeline: SendPipeline, settlement: Settlement) -> None:
        self.ctx = ctx
        self.pipeline = pipeline
        self.settlement = settlement

    async def serve(
        self, request: web.Request, received: ReceivedMessage, signal: SignalMessage, now: datetime
    ) -> web.StreamResponse:
        """Answer an authorised PullRequest with the oldest message waiting on its MPC; EbmsError otherwise."""
        assert signal.pull_request is not None
        mpc = signal.pull_request.mpc
        authorised = await self._authorised(received, signal, mpc, now)
        check_wire(received.deviations, lenient=frozenset().union(*(r.pmode.leniency for r in authorised)))
        claimed = await self._claim(authorised)
        empty = EbmsError(ErrorCode.EMPTY_MPC, f"nothing waits on {mpc}", ref_to_message_id=signal.message_id)
        if claimed is None:
            raise empty
        message, route = claimed
        try:
            spooled = await self.pipeline.secure(message, route, received.parsed.messaging.soap_version)
        except (ValueError, EbmsError) as exc:
            # It would fail the same way on every pull (no certificate to encrypt to, say): fail it, not the pull.
            unsendable = EbmsError(ErrorCode.OTHER, f"cannot be prepared for pulling: {exc}")
            await self.settlement.failed(message, route, Outcome.UNSENDABLE, unsendable)
            raise empty from None
        try:
            # The signed envelope is kept as evidence before the puller can have it and send its receipt.
            await self.settlement.keep(message, route, EvidenceKind.RAW_MESSAGE, spooled.secured.envelope)
            await self.settlement.settle(message, route, Outcome.PULLED, detail=f"pulled on {mpc}")
            log.info("%s pulled on %s (attempt %d)", message.message_id, mpc, message.attempts)
            response = web.StreamResponse(status=200, headers={"Content-Type": spooled.content_type})
            response.content_length = spooled.size
            await response.prepare(request)
            body = spooled.payload()
            if isinstance(body, bytes):
                await response.write(body)
            else:
                async for chunk in body:
                    await response.write(chunk)
            await response.write_eof()
        finally:
            await spooled.close()
        return response

    async def _authorised(
        self, received: ReceivedMessage, signal: SignalMessage, mpc: str, now: datetime
    ) -> list[Route]:
        """The pull legs on the MPC whose partner signed this PullRequest (EBMS:0101 when there is none)."""
        why = f"no P-Mode serves pulls on {mpc!r}"
        authorised: list[Route] = []
        for route in self.ctx.agreements.current.pull_requests_to_serve(mpc):
            try:
                await self.ctx.verifier.signal(received, route, at=now)
            except EbmsError as exc:
                why = f"{route.name}: {exc.log_detail}"
                continue
            authorised.append(route)
        if not authorised:
            # The same answer whether the MPC is unknown or the signer wrong: a puller learns nothing from it.
            raise EbmsError(
                ErrorCode.FAILED_AUTHENTICATION,
                "the PullRequest is not authorised",
                ref_to_message_id=signal.message_id,
                log_detail=why,
            )
        return authorised

    async def _claim(self, routes: Sequence[Route]) -> tuple[StoredMessage, Route] | None:
        """Claim the oldest message of these legs that is due: submitted, offered before without receipt, stale."""
        store, now = self.ctx.store, self.ctx.clock.now()
        legs = {(r.pmode.id, r.leg.index): r for r in routes}
        candidates: list[StoredMessage] = []
        for pmode_id in {r.pmode.id for r in routes}:
            for state in (MessageState.SUBMITTED, MessageState.AWAITING_RECEIPT, MessageState.SENDING):
                candidates.extend(await store.search(direction=Direction.OUT, state=state, pmode_id=pmode_id, limit=50))
        for candidate in sorted(candidates, key=lambda m: m.pk):
            route = legs.get((candidate.pmode_id or "", candidate.leg or 0))
            if route is None:
                continue
            message = await store.claim(candidate.message_id, now=now, lease=self.ctx.settings.lease)
            if message is None:
                continue
            decision = self.settlement.decide(message, route, Outcome.CLAIMED)
            if decision.action is Action.OFFER:  # to this puller, now
                return message, route
            await self.settlement.apply(message, route, decision, outcome=Outcome.CLAIMED)
        return None


class Puller:
    """Sends our PullRequests for every pull leg we initiate (a supervised task)."""

    def __init__(self, ctx: Context, accept: Accept) -> None:
        self.ctx = ctx
        self.accept = accept

    async def run(self) -> None:
        """Pull from every partner whose legs are pull; drain while messages come, else wait the interval."""
        ctx = self.ctx
        while True:
            pulled = False
            for route in ctx.agreements.current.pull_requests_to_send():
                try:
                    pulled = await self.pull_once(route) or pulled
                except Exception:
                    log.exception("pulling %s failed", route.name)
            if not pulled:
                await ctx.clock.sleep_until(ctx.clock.now() + ctx.settings.pull_interval)

    async def pull_once(self, route: Route) -> bool:
        """Send one signed PullRequest for the leg's MPC; take the message it returns and POST our receipt back.

        True when a user message came (accepted or refused), False for EBMS:0006 or a failure to reach the partner.
        """
        ctx = self.ctx
        endpoint = route.endpoint
        if endpoint is None:
            return False
        policy = route.security
        request = ctx.signer.signal(pull_request(route.leg.mpc, at=ctx.clock.now()), policy, SoapVersion.V12)
        headers = {"Content-Type": f"{SoapVersion.V12.content_type}; charset=UTF-8"}
        try:
            # The pulled message may be as large as max_message_size: no whole-call limit, but none may stall.
            stall = stall_timeout(ctx.settings.send_timeout.total_seconds())
            call = open_request(ctx.http, "POST", endpoint, data=request, headers=headers, timeout=stall)
            async with call as response:
                if response.status != 200:
                    log.warning("PullRequest to %s: HTTP %d", endpoint, response.status)
                    return False
                received = await read_message_body(
                    response.content.iter_chunked(READ_CHUNK),
                    response.headers.get("Content-Type", ""),
                    limit=ctx.settings.max_message_size,
                    too_large="the pulled message is too large",
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("PullRequest to %s failed: %s", endpoint, exc)
            return False
        except EbmsError as exc:
            log.warning("PullRequest to %s: unreadable answer: %s", endpoint, exc)
            return False
        try:
            message = received.parsed.messaging.message
            if isinstance(message, SignalMessage):
                codes = [e.error_code for e in message.errors]
                if codes != [ErrorCode.EMPTY_MPC.code]:
                    log.warning("PullRequest to %s answered with %s", endpoint, codes or message.kind)
                return False
            soap_version = received.parsed.messaging.soap_version
            now = ctx.clock.now()
            try:
                answer = await self.accept(received, now, route.leg.mpc)
            except EbmsError as error:
                log.warning("refused a pulled message: %s", error)
                answer = ctx.signer.error(error, None, soap_version, at=now)
        finally:
            await discard(received)
        await self._post_signal(endpoint, answer, soap_version)
        return True

    async def _post_signal(self, endpoint: str, signal: bytes, soap_version: SoapVersion) -> None:
        """POST a receipt or error for a pulled message; if it is lost, the partner offers the message again and
        the duplicate gets the stored receipt."""
        headers = {"Content-Type": f"{soap_version.content_type}; charset=UTF-8"}
        try:
            answer = await fetch(self.ctx.http, "POST", endpoint, data=signal, headers=headers, max_bytes=ANSWER_LIMIT)
            if answer.status != 200:
                log.warning("signal to %s: HTTP %d", endpoint, answer.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("signal to %s failed: %s", endpoint, exc)
