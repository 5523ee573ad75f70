"""Who may change what in FaR: the register's administrators everything, an operator its own record and holders.

A caller is a bearer token or a TLS client certificate (``[[far.clients]]``), each with scopes
(:mod:`accesspoint.servicekit.tokens`). ``write`` is the administrator's: every change. ``write:operator=<orgnr>``
is an operator's: its own operator record, and recipients whose mailbox it holds (their account, refusals,
preferences, deregistration), new registrations at itself, a switch of a holder *to* itself (the holder's
signature decides) and completing a switch *away* from itself. Anything else is refused with 403
(:class:`far.service.Forbidden`), nothing changes, and the attempt is audited with who made it.

The operator's approval (``far/service.py``) is the register's, never the operator's: only the ``approve`` scope
changes it. A revoked operator's credentials no longer write (:func:`standing_writer`); a suspended one's still do,
so that its holders can leave.

Client certificates are matched by the SHA-256 of their DER, after the TLS layer checked them against
``tls.client_ca``; a request with an ``Authorization`` header is judged by its token.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from accesspoint.servicekit.problems import Problem
from accesspoint.servicekit.tokens import CALLER, BearerAuth, BearerToken, Scope
from far.service import FarService, Forbidden, Guard


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """A TLS client certificate, whose holder (``name``, the audit's actor) gets ``scopes``."""

    name: str
    sha256: str
    scopes: frozenset[Scope]

    @classmethod
    def load(cls, name: str, path: Path, scopes: frozenset[Scope]) -> ClientCertificate:
        """From a PEM or DER file (ValueError when it holds no certificate)."""
        data = path.read_bytes()
        certificate = (
            x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
        )
        return cls(name, hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest(), scopes)


class Callers:
    """Bearer tokens and client certificates: who is calling (``request[CALLER]``)."""

    def __init__(self, auth: BearerAuth, clients: Iterable[ClientCertificate] = ()) -> None:
        self.auth = auth
        self.clients = {client.sha256: client for client in clients}

    def identify(self, request: web.Request) -> BearerToken:
        """The caller: the bearer token if the request has an Authorization header, else the client certificate;
        a 401 Problem when neither identifies one."""
        if "Authorization" not in request.headers and self.clients:
            client = self.clients.get(peer_certificate_sha256(request) or "")
            if client is not None:
                token = BearerToken(f"tls:{client.name}", "", client.scopes)
                request[CALLER] = token
                return token
        return self.auth.authenticate(request)

    def authorize(self, request: web.Request, action: str, **resources: str) -> BearerToken:
        """The caller when a scope grants ``action``; else 401 or 403."""
        caller = self.identify(request)
        if not caller.allows(action, **resources):
            raise self.auth.insufficient(action, resources)
        return caller

    def writer(self, request: web.Request) -> Writer:
        """The caller as a writer: the administrator or an operator (403 when it may write nothing)."""
        caller = self.identify(request)
        writer = Writer.of(caller)
        if writer is None:
            raise self.auth.insufficient("write")
        return writer


def peer_certificate_sha256(request: web.Request) -> str | None:
    """The SHA-256 of the TLS client certificate the request came with (None over plain HTTP or without one)."""
    transport = request.transport
    tls = None if transport is None else transport.get_extra_info("ssl_object")
    if not isinstance(tls, ssl.SSLObject):
        return None
    der = tls.getpeercert(binary_form=True)
    return None if not der else hashlib.sha256(der).hexdigest()


@dataclass(frozen=True, slots=True)
class Writer:
    """A caller that may change something: the administrator (``admin``) or the operators it speaks for."""

    name: str
    admin: bool
    operators: frozenset[str]

    @classmethod
    def of(cls, caller: BearerToken) -> Writer | None:
        """The writer a caller is, or None when it has no write scope at all."""
        grant = caller.grant("write")
        if grant.nothing:
            return None
        return cls(caller.name, grant.unrestricted, grant.only.get("operator", frozenset()))

    def speaks_for(self, operator_id: str | None) -> bool:
        """Whether the caller may act as that operator."""
        return self.admin or (operator_id is not None and operator_id in self.operators)

    def operator(self, wanted: str | None = None) -> str:
        """The operator the caller acts as: ``wanted`` (which it must speak for), or its only one."""
        if wanted is not None:
            if not self.speaks_for(wanted):
                raise Forbidden(f"{self.name} does not act for operator {wanted}")
            return wanted
        if len(self.operators) == 1:
            return next(iter(self.operators))
        raise Problem(400, "name the operator (the caller acts for several, or is the administrator)", field="operator")

    # ------------------------------------------------------------------------------------------- guards

    def recipient_guard(self) -> Guard | None:
        """For changes of a recipient's account: the administrator anything; an operator only its own holders
        (or a recipient without an operator) and only to itself or to none."""
        if self.admin:
            return None

        def guard(current: str | None, after: str | None) -> None:
            if current is not None and current not in self.operators:
                raise Forbidden(f"{self.name} may not change a holder of operator {current}")
            if after is not None and after not in self.operators:
                raise Forbidden(
                    f"{self.name} may not move a holder to operator {after}: a holder changes operator through "
                    "changeServiceSupplier (POST /api/v1/switches) with their signature"
                )

        return guard

    def holder_guard(self) -> Guard | None:
        """For a recipient's refusals and preferences: only the operator that holds the mailbox."""
        if self.admin:
            return None

        def guard(current: str | None, _after: str | None) -> None:
            if current is None or current not in self.operators:
                raise Forbidden(f"{self.name} does not hold this recipient's mailbox")

        return guard

    def operator_guard(self) -> Guard | None:
        """For an operator record: the administrator any, an operator its own."""
        if self.admin:
            return None

        def guard(operator_id: str | None, _after: str | None) -> None:
            if operator_id not in self.operators:
                raise Forbidden(f"{self.name} may change only its own operator record, not {operator_id}")

        return guard


async def standing_writer(writer: Writer, service: FarService) -> Writer:
    """The writer without the operators that are revoked; Forbidden when it speaks for none that is not."""
    if writer.admin or not writer.operators:
        return writer
    revoked = await service.revoked_operators(writer.operators)
    if not revoked:
        return writer
    left = writer.operators - revoked
    if not left:
        raise Forbidden(f"{writer.name} acts for operator {', '.join(sorted(revoked))}, whose approval is revoked")
    return Writer(writer.name, False, left)
