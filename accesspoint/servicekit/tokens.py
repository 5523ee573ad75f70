"""Bearer tokens with scopes (RFC 6750), the same for every service.

**Scopes.** A scope is ``action`` or ``action:kind=value``: ``read`` and ``write`` (FaR), ``write`` (the SMP's
management API), ``read:recipient=197001011234`` (an operator's mailbox API), and what the access point's API
and FaR's writes will narrow to: ``submit:pmode=se-to-no``, ``read:party=0007:5567212345``,
``write:operator=5567212345``. ``action`` alone grants the action on everything; ``action:kind=value`` only on
resources whose ``kind`` is ``value``. A request names the resources it touches
(``token.allows("read", pmode="se-to-no", party="0007:5567212345")``) and is allowed when any one scope
grants it. A narrowed scope never grants a request that does not name its kind, so a token restricted to one
P-Mode is refused wherever the P-Mode is not known (fail closed). :meth:`BearerToken.grant` tells a search which
resources to filter on.

**The header.** ``Authorization: Bearer <token>``; the scheme in any case (``bearer``, ``BEARER``; RFC 9110
11.1: schemes are case-insensitive), one or more spaces before the token. A bare token without the scheme, or
another scheme, counts as no credentials. The token is compared with every configured one through SHA-256
digests of equal length (``hmac.compare_digest``), so neither a near miss nor the token's length shows in the
answer's timing.

**Answers.** No credentials: 401 with ``WWW-Authenticate: Bearer realm="…"`` (RFC 6750 3.1: no error code
when the request had no authentication). Credentials that match no token: 401 with
``error="invalid_token"``. A known token without the scope: 403 with ``error="insufficient_scope"`` and the
``scope`` needed. Each with an RFC 9457 problem body (:mod:`accesspoint.servicekit.problems`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from aiohttp import web

from accesspoint.servicekit.problems import Problem

MIN_TOKEN_LENGTH = 16
# Visible ASCII: what an Authorization header carries unchanged (a space would end the credentials).
TOKEN_CHARACTERS = re.compile(r"^[\x21-\x7e]+$")
_NAME = r"[A-Za-z][A-Za-z0-9_.-]*"
_SCOPE = re.compile(rf"^(?P<action>{_NAME})(?::(?P<kind>{_NAME})=(?P<value>[\x21-\x7e]+))?$")
_CREDENTIALS = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*) +(?P<token>[\x21-\x7e]+)$")


@dataclass(frozen=True, slots=True)
class Scope:
    """``action`` on everything, or only on resources whose ``kind`` is ``value``."""

    action: str
    kind: str | None = None
    value: str | None = None

    @classmethod
    def parse(cls, text: str) -> Scope:
        """``read``, ``write:operator=5567212345`` …; ValueError for anything else."""
        match = _SCOPE.match(text)
        if match is None:
            raise ValueError(f"{text!r} is not a scope (action, or action:kind=value)")
        return cls(match.group("action"), match.group("kind"), match.group("value"))

    def allows(self, action: str, resources: Mapping[str, str]) -> bool:
        """Whether this scope grants ``action`` on a request touching ``resources`` (kind -> value)."""
        if action != self.action:
            return False
        return self.kind is None or (self.kind in resources and resources[self.kind] == self.value)

    def __str__(self) -> str:
        return self.action if self.kind is None else f"{self.action}:{self.kind}={self.value}"


@dataclass(frozen=True, slots=True)
class Grant:
    """What a token may do with one action: everything (``unrestricted``), or resources by kind."""

    unrestricted: bool
    only: Mapping[str, frozenset[str]]

    @property
    def nothing(self) -> bool:
        """Whether the action is not granted at all."""
        return not self.unrestricted and not self.only

    def covers(self, **resources: str) -> bool:
        """Whether a request touching ``resources`` is granted."""
        return self.unrestricted or any(resources.get(kind) in values for kind, values in self.only.items())


@dataclass(frozen=True, slots=True)
class BearerToken:
    """A configured token: who holds it (recorded as the actor), the secret, and its scopes."""

    name: str
    secret: str = field(repr=False)
    scopes: frozenset[Scope] = frozenset()

    def allows(self, action: str, **resources: str) -> bool:
        """Whether some scope grants ``action`` on the named resources."""
        return any(scope.allows(action, resources) for scope in self.scopes)

    def grant(self, action: str) -> Grant:
        """Everything this token may do with ``action``, for filtering a search."""
        only: dict[str, set[str]] = {}
        for scope in self.scopes:
            if scope.action != action:
                continue
            if scope.kind is None:
                return Grant(True, {})
            only.setdefault(scope.kind, set()).add(str(scope.value))
        return Grant(False, {kind: frozenset(values) for kind, values in only.items()})


def scopes(*texts: str) -> frozenset[Scope]:
    """Scopes from their text forms."""
    return frozenset(Scope.parse(text) for text in texts)


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


def bearer_credentials(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme in any case); None for anything else."""
    match = _CREDENTIALS.match((header or "").strip())
    if match is None or match.group("scheme").lower() != "bearer":
        return None
    return match.group("token")


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def www_authenticate(realm: str, error: str | None = None, **parameters: str) -> str:
    """A ``WWW-Authenticate`` challenge for the Bearer scheme (RFC 6750 3)."""
    items = [f"realm={_quoted(realm)}"]
    if error is not None:
        items.append(f"error={_quoted(error)}")
    items += [f"{name}={_quoted(value)}" for name, value in parameters.items()]
    return "Bearer " + ", ".join(items)


CALLER = web.RequestKey("bearer_token", BearerToken)


class BearerAuth:
    """The tokens of one service and the checks every request with a token goes through."""

    def __init__(self, tokens: Iterable[BearerToken], *, realm: str) -> None:
        self.tokens = tuple(tokens)
        self.realm = realm
        self._digests = tuple((_digest(token.secret), token) for token in self.tokens)

    def identify(self, header: str | None) -> BearerToken:
        """The token an Authorization header presents; a 401 Problem when it presents none or an unknown one."""
        presented = bearer_credentials(header)
        if presented is None:
            raise Problem(
                401,
                "a valid bearer token is required (Authorization: Bearer <token>)",
                kind="unauthorised",
                headers={"WWW-Authenticate": www_authenticate(self.realm)},
            )
        wanted = _digest(presented)
        found = None
        # Every token is compared, each through equal-length digests: timing says nothing about near misses.
        for digest, token in self._digests:
            if hmac.compare_digest(wanted, digest):
                found = token
        if found is None:
            raise Problem(
                401,
                "the bearer token is not valid here",
                kind="unauthorised",
                headers={
                    "WWW-Authenticate": www_authenticate(self.realm, "invalid_token", error_description="unknown token")
                },
            )
        return found

    def authorize(self, request: web.Request, action: str, **resources: str) -> BearerToken:
        """The request's token when a scope grants ``action`` on ``resources``; else a 401 or 403 Problem.

        The token is also kept as ``request[CALLER]`` for handlers that record who did what.
        """
        token = self.authenticate(request)
        if not token.allows(action, **resources):
            raise self.insufficient(action, resources)
        return token

    def authenticate(self, request: web.Request) -> BearerToken:
        """The request's token whatever it may do (``request[CALLER]``); the handler checks scopes itself."""
        token = self.identify(request.headers.get("Authorization"))
        request[CALLER] = token
        return token

    def insufficient(self, action: str, resources: Mapping[str, str] | None = None) -> Problem:
        """The 403 for a known token without the scope for ``action`` (on ``resources``)."""
        on = "".join(f" for {kind} {value}" for kind, value in (resources or {}).items())
        return Problem(
            403,
            f"this token lacks the {action} scope{on}",
            kind="forbidden",
            headers={"WWW-Authenticate": www_authenticate(self.realm, "insufficient_scope", scope=action)},
        )
