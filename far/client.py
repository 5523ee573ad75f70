"""A client of FaR's REST API with the same ``is_reachable`` as FarService, for a FaR in another process."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import aiohttp

from accesspoint.servicekit.httpclient import fetch, new_session
from far.senders import SenderRegister, SenderView
from far.service import FarService, InvalidInput, NotFound, Operator, Reachability, Routes, read_routes

_Read = TypeVar("_Read")
MAX_ANSWER = 4 * 1024 * 1024  # FaR's answer about a batch of recipients; more is a failure, not read on


class ReachabilityLookup(Protocol):
    """What the access point's router needs from FaR: FarService in-process, FarClient over HTTP."""

    async def is_reachable(self, sender: str, recipients: Sequence[str]) -> list[Reachability]:
        """One Reachability per recipient, in order (``sender`` a party id, far/parties.py)."""
        ...

    async def routes(self, sender: str, recipients: Sequence[str]) -> Routes:
        """As ``is_reachable``, where only routing is asked (reachable, reason, operator, endpoint): the router."""
        ...


class SenderLookup(Protocol):
    """What the router needs from the sender register: SenderRegister in-process, FarClient over HTTP."""

    async def get(self, sender_id: str) -> SenderView:
        """The sender with its dispatchers; NotFound when it is not registered."""
        ...


class FarUnavailable(Exception):
    """FaR could not be reached or failed (connection refused, timeout, 5xx, an answer that is not FaR's)."""


class FarClient:
    """``async with FarClient(url, token) as far: await far.is_reachable(sender, recipients)``."""

    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> FarClient:
        headers = {} if self.token is None else {"Authorization": f"Bearer {self.token}"}
        # FaR is where the settings say: its address is not policed, its answers are bounded like any other.
        self._session = new_session(timeout=self.timeout, headers=headers)
        return self

    async def __aexit__(
        self, _type: type[BaseException] | None, _value: BaseException | None, _tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def is_reachable(self, sender: str, recipients: Sequence[str]) -> list[Reachability]:
        """Ask FaR; InvalidInput when FaR refuses the request (4xx), FarUnavailable when it cannot answer."""
        answer = await self._post("/api/v1/reachable", {"sender": sender, "recipients": list(recipients)})
        try:
            operators: dict[tuple[Any, ...], Operator] = {}
            return [Reachability.from_json(item, operators) for item in answer["results"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise FarUnavailable(f"FaR's answer is malformed: {exc}") from None

    async def routes(self, sender: str, recipients: Sequence[str]) -> Routes:
        """``is_reachable`` in the compact form (``service.Routes``): reachable, reason, operator, endpoint."""
        body = {"sender": sender, "recipients": list(recipients), "answer": "routes"}
        answer = await self._post("/api/v1/reachable", body)
        try:
            return read_routes(answer, len(recipients))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise FarUnavailable(f"FaR's answer is malformed: {exc!r}") from None

    async def operators(self) -> list[Operator]:
        """Every operator FaR knows (for an operator broadcast); FarUnavailable when FaR cannot answer."""
        return await self._read("/api/v1/operators", lambda found: [Operator.from_json(i) for i in found["operators"]])

    async def operator(self, operator_id: str) -> Operator:
        """One operator with its approval status (``GET /api/v1/operators/{id}``); NotFound when FaR has none."""
        return await self._read("/api/v1/operators/" + quote(operator_id, safe=""), Operator.from_json)

    async def get(self, sender_id: str) -> SenderView:
        """The sender register's record of a sender (``GET /api/v1/senders/{id}``); NotFound when unregistered."""
        return await self._read("/api/v1/senders/" + quote(sender_id, safe=":"), SenderView.from_json)

    async def _read(self, path: str, parse: Callable[[Any], _Read]) -> _Read:
        """GET ``path`` and read the answer with ``parse``; FarUnavailable when it does not fit."""
        answer = await self._request("GET", path)
        try:
            return parse(answer)
        except (KeyError, TypeError, ValueError) as exc:
            raise FarUnavailable(f"FaR's answer is malformed: {exc}") from None

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        return await self._request("POST", path, body)

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        if self._session is None:
            raise RuntimeError("use FarClient as an async context manager")
        try:
            answer = await fetch(self._session, method, self.base_url + path, json=body, max_bytes=MAX_ANSWER)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise FarUnavailable(f"FaR at {self.base_url} cannot be reached: {exc or type(exc).__name__}") from None
        status = answer.status
        try:
            document = json.loads(answer.body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise FarUnavailable(f"FaR answered HTTP {status} without JSON") from None
        if status == 404:
            raise NotFound(document.get("detail", "not found") if isinstance(document, dict) else "not found")
        if 400 <= status < 500:
            detail = document.get("detail", "") if isinstance(document, dict) else ""
            field = document.get("field") if isinstance(document, dict) else None
            raise InvalidInput(f"FaR refused the request (HTTP {status}): {detail}", field=field)
        if status != 200 or not isinstance(document, dict):
            raise FarUnavailable(f"FaR answered HTTP {status}")
        return document


def _lookups(service: FarService, client: FarClient) -> list[ReachabilityLookup]:
    """Never called: mypy checks here that both the in-process service and the client fit the router's protocol."""
    return [service, client]


def _senders(register: SenderRegister, client: FarClient) -> list[SenderLookup]:
    """Never called: as above, for the sender register."""
    return [register, client]
