"""The registers FaR asks about holders: the population register (folkbokföring: who a person is, their
guardians) and the business register with representation (who may sign for a company, who holds a role).

``Registers`` is the narrow interface FaR needs; ``RegistersClient`` speaks the HTTP shape below to a register
service, and ``reference_app`` *is* such a service over a JSON file: enough of Skatteverket's and Bolagsverket's
data to run FaR, the demo and the tests (``accesspoint far registers --data FILE``). A real deployment puts an
adapter to the authorities' services behind the same few calls.

=====  ========================================================  ============================================
GET    /population/v1/persons/{id}                               ``{id, name, guardians: [{id, name}]}``
GET    /business/v1/companies/{orgnr}                            ``{id, name, form, signatory_rule, signatories``
                                                                 ``: [{id, name}]}``
GET    /representation/v1/companies/{orgnr}/persons/{id}         ``{roles: ["read" | "manage", …]}``
PUT    the same three (bearer token)                             replace the record (the reference service)
=====  ========================================================  ============================================

**Signatory rules** (*firmateckning*) are texts as the business register writes them; ``interpret_rule`` reads
the common ones — "var för sig" (each signatory alone), "två/tre i förening" (that many together), "av
innehavaren" (a sole trader, *enskild firma*), "av styrelsen" (the whole board together) — and answers None for
any other, which the Recipient contract reports as ``RulesNotSupported``.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp
from aiohttp import web

from accesspoint.servicekit.problems import Problem, json_object, problem_middleware
from accesspoint.servicekit.tokens import BearerAuth, BearerToken, scopes


@dataclass(frozen=True, slots=True)
class Person:
    """A person as the registers name them."""

    id: str
    name: str

    def to_json(self) -> dict[str, str]:
        """``{id, name}``."""
        return {"id": self.id, "name": self.name}


@dataclass(frozen=True, slots=True)
class PersonRecord:
    """The population register's answer about one person."""

    id: str
    name: str
    guardians: tuple[Person, ...] = ()


@dataclass(frozen=True, slots=True)
class CompanyRecord:
    """The business register's answer about one company: its form, the signatory rule's text, the signatories."""

    id: str  # the 10-digit organisationsnummer
    name: str
    form: str  # AB, HB, KB, EF (enskild firma), EK, ideell förening …
    signatory_rule: str
    signatories: tuple[Person, ...]


@dataclass(frozen=True, slots=True)
class SignatoryRule:
    """An interpreted rule: ``count`` of ``persons`` together may sign (1: each alone)."""

    count: int
    persons: tuple[Person, ...]

    def satisfied_by(self, signers: set[str]) -> bool:
        """Whether these signers together may sign."""
        return len(signers & {p.id for p in self.persons}) >= self.count


class RegisterUnavailable(Exception):
    """A register could not answer (down, slow, an answer that is not the register's)."""


class Registers(Protocol):
    """What FaR asks the registers."""

    async def person(self, person_id: str) -> PersonRecord | None:
        """The person (None: unknown to the population register)."""
        ...

    async def company(self, orgnr: str) -> CompanyRecord | None:
        """The company (None: unknown to the business register)."""
        ...

    async def roles(self, orgnr: str, person_id: str) -> tuple[str, ...]:
        """The roles a person has been given for a company (``read``, ``manage``)."""
        ...


_NUMBERS = {"två": 2, "tre": 3, "fyra": 4, "fem": 5, "2": 2, "3": 3, "4": 4, "5": 5}
_JOINTLY = re.compile(r"\b(två|tre|fyra|fem|[2-5])\s+i\s+förening\b")


def interpret_rule(company: CompanyRecord) -> SignatoryRule | None:
    """The signatory rule as a count of signatories, or None when the text is not one this reads."""
    text = " ".join(company.signatory_rule.lower().split())
    if not company.signatories or not text.startswith("firman tecknas"):
        return None
    rest = text.removeprefix("firman tecknas").strip(" .")
    if rest in ("av innehavaren", "av ägaren") and company.form.upper() in ("EF", "ENSKILD FIRMA"):
        return SignatoryRule(1, company.signatories[:1])
    if "var för sig" in rest and " och " not in rest:
        return SignatoryRule(1, company.signatories)
    match = _JOINTLY.search(rest)
    if match is not None and " och " not in rest:
        return SignatoryRule(_NUMBERS[match.group(1)], company.signatories)
    if rest == "av styrelsen":
        return SignatoryRule(len(company.signatories), company.signatories)
    return None


def _person(item: Any) -> Person:
    return Person(str(item["id"]), str(item["name"]))


def person_record(item: Mapping[str, Any]) -> PersonRecord:
    """From the JSON shape (KeyError, TypeError when it is not one)."""
    return PersonRecord(str(item["id"]), str(item["name"]), tuple(_person(g) for g in item.get("guardians", ())))


def company_record(item: Mapping[str, Any]) -> CompanyRecord:
    """From the JSON shape (KeyError, TypeError when it is not one)."""
    return CompanyRecord(
        str(item["id"]),
        str(item["name"]),
        str(item.get("form", "AB")),
        str(item.get("signatory_rule", "")),
        tuple(_person(s) for s in item.get("signatories", ())),
    )


class RegistersClient:
    """The registers over HTTP (one session; every call bounded by ``timeout`` seconds)."""

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()

    async def _get(self, path: str) -> Any | None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        try:
            async with self._session.get(self.url + path) as response:
                if response.status == 404:
                    return None
                if response.status != 200:
                    raise RegisterUnavailable(f"{path}: HTTP {response.status}")
                return await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise RegisterUnavailable(f"{path}: {exc or type(exc).__name__}") from None

    async def person(self, person_id: str) -> PersonRecord | None:
        """GET /population/v1/persons/{id}."""
        found = await self._get(f"/population/v1/persons/{quote(person_id, safe='')}")
        try:
            return None if found is None else person_record(found)
        except (KeyError, TypeError):
            raise RegisterUnavailable("the population register's answer is not a person") from None

    async def company(self, orgnr: str) -> CompanyRecord | None:
        """GET /business/v1/companies/{orgnr}."""
        found = await self._get(f"/business/v1/companies/{quote(orgnr, safe='')}")
        try:
            return None if found is None else company_record(found)
        except (KeyError, TypeError):
            raise RegisterUnavailable("the business register's answer is not a company") from None

    async def roles(self, orgnr: str, person_id: str) -> tuple[str, ...]:
        """GET /representation/v1/companies/{orgnr}/persons/{id}."""
        found = await self._get(
            f"/representation/v1/companies/{quote(orgnr, safe='')}/persons/{quote(person_id, safe='')}"
        )
        if found is None:
            return ()
        roles = found.get("roles") if isinstance(found, dict) else None
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise RegisterUnavailable("the representation answer has no list of roles")
        return tuple(roles)


# ----------------------------------------------------------------------------------- the reference service

DATA = web.AppKey("registers_data", dict)


def reference_app(data: dict[str, Any], *, token: str | None = None) -> web.Application:
    """The reference register service over ``data`` (``{"persons": {id: …}, "companies": {orgnr: …},
    "roles": {orgnr: {person: [role, …]}}}``); with ``token``, PUT replaces records (tests and the demo change
    a company's signatories this way)."""
    auth = BearerAuth([BearerToken("registers-admin", token, scopes("write"))] if token else [], realm="registers")
    app = web.Application(middlewares=[problem_middleware()])
    # A copy: PUTs change this service's records, never the caller's.
    app[DATA] = copy.deepcopy({"persons": {}, "companies": {}, "roles": {}, **data})
    lock = asyncio.Lock()

    def found(kind: str, key: str) -> Any:
        item = app[DATA][kind].get(key)
        if item is None:
            raise Problem(404, f"no {kind[:-1]} {key}", kind="not-found")
        return item

    async def person(request: web.Request) -> web.Response:
        person_id = request.match_info["id"]
        return web.json_response({"id": person_id, **found("persons", person_id)})

    async def company(request: web.Request) -> web.Response:
        orgnr = request.match_info["orgnr"]
        return web.json_response({"id": orgnr, **found("companies", orgnr)})

    async def roles(request: web.Request) -> web.Response:
        given = app[DATA]["roles"].get(request.match_info["orgnr"], {})
        return web.json_response({"roles": list(given.get(request.match_info["id"], []))})

    async def replace(request: web.Request) -> web.Response:
        auth.authorize(request, "write")
        body = await json_object(request)
        try:
            await _store(request.match_info, body)
        except (KeyError, TypeError) as exc:
            raise Problem(400, f"not a register record: {exc}") from None
        return web.Response(status=204)

    async def _store(info: Mapping[str, str], body: dict[str, Any]) -> None:
        async with lock:
            if "orgnr" in info and "id" in info:
                app[DATA]["roles"].setdefault(info["orgnr"], {})[info["id"]] = list(body.get("roles", []))
            elif "orgnr" in info:
                company_record({"id": info["orgnr"], **body})  # the shape must hold
                app[DATA]["companies"][info["orgnr"]] = body
            else:
                person_record({"id": info["id"], **body})
                app[DATA]["persons"][info["id"]] = body

    for path, reader in (
        ("/population/v1/persons/{id}", person),
        ("/business/v1/companies/{orgnr}", company),
        ("/representation/v1/companies/{orgnr}/persons/{id}", roles),
    ):
        app.router.add_get(path, reader)
        app.router.add_put(path, replace)

    async def health(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app.router.add_get("/health", health)
    return app


def load_data(path: Path) -> dict[str, Any]:
    """A reference data file (JSON); ValueError when it is not a mapping."""
    data = json.loads(path.read_text("utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level must be an object")
    return data
