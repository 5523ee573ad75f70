"""The key archive over HTTP (aiohttp; RFC 9457 problems; holders authenticate with e-ID, administrators with tokens).

=======  =====================================  ================================================================
POST     /api/v1/challenges                     ``{}`` → ``{"challenge", "expires_at"}`` (single use)
POST     /api/v1/holders/{holder}/keys          deposit: ``{"challenge", "eid", "private_key" (base64 PKCS#8 DER),
                                                "certificate" (PEM)}`` → 201
POST     /api/v1/holders/{holder}/releases      ``{"challenge", "eid", "client_key" (base64 raw X25519)}`` →
                                                ``{"keys": [{key_id, key_type, certificate, package (base64 CMS to
                                                client_key)}]}``
POST     /api/v1/holders/{holder}/deletion      ``{"challenge", "eid"}``: erase the holder's keys
POST     /api/v1/admin/acts                     (admin) ``{"action", "subject"}`` → 202, pending a second admin
POST     /api/v1/admin/acts/{id}/approve        (another admin) carry it out → 200 with the result
GET      /api/v1/admin/audit                    (admin) the chain verified: ``{ok, entries, head, broken_at}``
=======  =====================================  ================================================================

``eid`` is ``{certificate, chain, signature}`` (eid.py): the signature over the purpose, holder, challenge and,
for a release, the SHA-256 of client_key. A failed authentication is one generic 403 (the reason goes to the
audit log only); too many attempts 429 with Retry-After.

With ``admin`` in the settings, ``GET /metrics`` (Prometheus: the HTTP series by route template, so a holder's id
never becomes a label) is served on a listener of its own, never on this one.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from cryptography import x509

from accesspoint.keyarchive import eid
from accesspoint.keyarchive.master import MasterKeys
from accesspoint.keyarchive.model import upgrade_schema
from accesspoint.keyarchive.service import ArchiveError, Invalid, KeyArchive
from accesspoint.keyarchive.settings import ArchiveSettings
from accesspoint.servicekit.database import create_engine
from accesspoint.servicekit.metrics import Metrics, http_metrics_middleware
from accesspoint.servicekit.observability import admin_context
from accesspoint.servicekit.problems import Problem, json_object, problem_middleware
from accesspoint.servicekit.tokens import BearerAuth
from accesspoint.servicekit.tracing import trace_middleware, tracer_for

ARCHIVE = web.AppKey("archive", KeyArchive)
AUTH = web.AppKey("auth", BearerAuth)


def _problem(exc: Exception) -> Problem | None:
    if isinstance(exc, ArchiveError):
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return Problem(exc.status, exc.detail, headers=headers)
    return None


def _proof(body: dict[str, Any]) -> tuple[str, eid.EidProof]:
    challenge = body.get("challenge")
    if not isinstance(challenge, str):
        raise Invalid("challenge: required (POST /api/v1/challenges)")
    try:
        return challenge, eid.EidProof.from_json(body.get("eid"))
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def _b64(body: dict[str, Any], name: str) -> bytes:
    try:
        return base64.b64decode(str(body[name]), validate=True)
    except (KeyError, ValueError, binascii.Error):
        raise Invalid(f"{name}: required, base64") from None


async def challenge(request: web.Request) -> web.Response:
    """POST /api/v1/challenges."""
    value, expires = await request.app[ARCHIVE].challenge()
    return web.json_response({"challenge": value, "expires_at": expires.isoformat()}, status=201)


async def deposit(request: web.Request) -> web.Response:
    """POST /api/v1/holders/{holder}/keys."""
    body = await json_object(request, Invalid)
    challenge_, proof = _proof(body)
    try:
        certificate = x509.load_pem_x509_certificate(str(body.get("certificate", "")).encode())
    except ValueError:
        raise Invalid("certificate: a PEM certificate") from None
    kept = await request.app[ARCHIVE].deposit(
        request.match_info["holder"], challenge_, proof, _b64(body, "private_key"), certificate
    )
    return web.json_response(kept, status=201)


async def release(request: web.Request) -> web.Response:
    """POST /api/v1/holders/{holder}/releases."""
    body = await json_object(request, Invalid)
    challenge_, proof = _proof(body)
    packages = await request.app[ARCHIVE].release(
        request.match_info["holder"], challenge_, proof, _b64(body, "client_key")
    )
    return web.json_response({"keys": packages})


async def deletion(request: web.Request) -> web.Response:
    """POST /api/v1/holders/{holder}/deletion."""
    challenge_, proof = _proof(await json_object(request, Invalid))
    count = await request.app[ARCHIVE].delete(request.match_info["holder"], challenge_, proof)
    return web.json_response({"deleted": count})


async def propose(request: web.Request) -> web.Response:
    """POST /api/v1/admin/acts."""
    token = request.app[AUTH].authorize(request, "admin")
    body = await json_object(request, Invalid)
    act = await request.app[ARCHIVE].propose(token.name, str(body.get("action")), str(body.get("subject", "archive")))
    return web.json_response(act, status=202)


async def approve(request: web.Request) -> web.Response:
    """POST /api/v1/admin/acts/{id}/approve."""
    token = request.app[AUTH].authorize(request, "admin")
    return web.json_response(await request.app[ARCHIVE].approve(token.name, request.match_info["id"]))


async def audit_report(request: web.Request) -> web.Response:
    """GET /api/v1/admin/audit?expect_head=…."""
    request.app[AUTH].authorize(request, "admin")
    report = await request.app[ARCHIVE].verify(request.query.get("expect_head"))
    return web.json_response(report.to_json())


async def health(_request: web.Request) -> web.Response:
    """GET /health."""
    return web.json_response({"status": "ok"})


def create_app(settings: ArchiveSettings) -> web.Application:
    """The archive's application: the engine, the token session and the schema are opened at start-up."""
    # The HTTP series by route template only: a holder's id in a path never becomes a label.
    metrics = Metrics("keyarchive")
    middlewares = [
        http_metrics_middleware(metrics),
        trace_middleware(tracer_for("keyarchive")),
        problem_middleware(_problem),
    ]
    app = web.Application(middlewares=middlewares, client_max_size=1024 * 1024)
    app[AUTH] = BearerAuth(settings.tokens, realm="keyarchive")

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        engine = create_engine(settings.database)
        await upgrade_schema(engine)
        master_keys = MasterKeys(settings.hsm)
        archive = KeyArchive(
            engine, master_keys, settings.eid_anchors, limits=settings.limits, master_base=settings.master_label
        )
        await archive.start()
        app[ARCHIVE] = archive
        yield
        master_keys.close()
        await engine.dispose()

    app.cleanup_ctx.append(lifecycle)
    app.cleanup_ctx.append(admin_context(metrics, settings.observability.admin))
    app.router.add_post("/api/v1/challenges", challenge)
    app.router.add_post("/api/v1/holders/{holder}/keys", deposit)
    app.router.add_post("/api/v1/holders/{holder}/releases", release)
    app.router.add_post("/api/v1/holders/{holder}/deletion", deletion)
    app.router.add_post("/api/v1/admin/acts", propose)
    app.router.add_post("/api/v1/admin/acts/{id}/approve", approve)
    app.router.add_get("/api/v1/admin/audit", audit_report)
    app.router.add_get("/health", health)
    return app
