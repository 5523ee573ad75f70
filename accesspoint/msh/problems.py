"""RFC 9457 problem bodies for the backend API: ``problem`` raises one, ``problems`` answers unknown routes too."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from aiohttp import web

PROBLEM_JSON = "application/problem+json"

_CLASSES: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest,
    401: web.HTTPUnauthorized,
    404: web.HTTPNotFound,
    409: web.HTTPConflict,
    422: web.HTTPUnprocessableEntity,
    503: web.HTTPServiceUnavailable,
}


def problem(status: int, kind: str, detail: str) -> web.HTTPException:
    """An HTTP error with a problem body: ``urn:accesspoint:problem:<kind>`` as its type, the kind as its title."""
    document = {"type": f"urn:accesspoint:problem:{kind}", "title": kind, "status": status, "detail": detail}
    return _CLASSES[status](text=json.dumps(document), content_type=PROBLEM_JSON)


def _any(status: int, reason: str) -> web.HTTPException:
    exc = web.HTTPException(
        text=json.dumps({"type": "about:blank", "title": reason, "status": status}), content_type=PROBLEM_JSON
    )
    exc.set_status(status, reason)
    return exc


@web.middleware
async def problems(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Unknown routes and wrong methods answer with problem bodies too."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.content_type == PROBLEM_JSON or exc.status < 400:
            raise
        raise _any(exc.status, exc.reason) from None
