"""RFC 9457 problem details: the one error body of every HTTP service (``application/problem+json``).

A handler raises :class:`Problem`; :func:`problem_middleware` turns it, aiohttp's own HTTP errors (unknown route,
wrong method, body too large) and the service's own exceptions (through ``translate``) into a problem response.
Anything else is a bug: it is logged with an incident id and answered 500 with that id and nothing more, so no
exception text, path or SQL statement ever reaches a client.

Members: ``type`` (``urn:accesspoint:problem:<kind>`` when the problem has a kind of its own, else
``about:blank``), ``title`` (the kind, or the HTTP status phrase for ``about:blank``, as RFC 9457 4.2.1 asks),
``status``, ``detail``, and extension members (``field`` where a request field is at fault, ``instance`` for an
incident).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:accesspoint:problem:"
INTERNAL_DETAIL = "internal error; the service's log has the incident"

log = logging.getLogger("accesspoint.servicekit")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Translate = Callable[[Exception], "Problem | None"]


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class Problem(Exception):
    """An HTTP error answered with a problem document; raise it from a handler."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        kind: str | None = None,
        title: str | None = None,
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        if not 400 <= status <= 599:
            raise ValueError(f"a problem has a 4xx or 5xx status, not {status}")
        self.status = status
        self.detail = detail
        self.kind = kind
        self.title = title or kind or _phrase(status)
        self.headers = dict(headers or {})
        self.extensions = {key: value for key, value in extensions.items() if value is not None}
        super().__init__(f"{status} {self.title}: {detail}")

    @property
    def type(self) -> str:
        """The problem type URI."""
        return "about:blank" if self.kind is None else TYPE_PREFIX + self.kind

    def to_json(self) -> dict[str, Any]:
        """The problem document."""
        return {"type": self.type, "title": self.title, "status": self.status, "detail": self.detail, **self.extensions}

    def response(self) -> web.Response:
        """The HTTP response carrying it."""
        return web.Response(
            status=self.status, text=json.dumps(self.to_json()), content_type=PROBLEM_JSON, headers=self.headers
        )


# Headers an aiohttp HTTPException carries that describe its own body, not the problem's.
_BODY_HEADERS = frozenset({"content-type", "content-length", "content-encoding"})


def _bad_request(detail: str) -> Problem:
    return Problem(400, detail)


async def json_object(
    request: web.Request, refuse: Callable[[str], Exception] = _bad_request
) -> dict[str, Any]:
    """The request's body as a JSON object; ``refuse(detail)`` is raised when it is not JSON or not an object
    (a 400 problem unless the service maps its own exception to one)."""
    try:
        body = await request.json(loads=json.loads)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise refuse("the body is not JSON") from None
    if not isinstance(body, dict):
        raise refuse("the body must be a JSON object")
    return body


def from_http_exception(exc: web.HTTPException) -> Problem:
    """aiohttp's HTTP error (404 for an unknown route, 405, 413 …) as a problem; its headers (Allow …) kept."""
    headers = {name: value for name, value in exc.headers.items() if name.lower() not in _BODY_HEADERS}
    text = (exc.text or "").strip()
    # A 4xx text says what was wrong with the request; a 5xx one may say something about the server: dropped.
    detail = text if text and exc.status < 500 and not text.startswith(f"{exc.status}:") else exc.reason
    return Problem(exc.status, detail, title=exc.reason, headers=headers)


def internal_error(exc: BaseException, request: web.Request) -> Problem:
    """A 500 for a bug: the traceback goes to the log under an incident id, only the id goes to the client."""
    incident = uuid.uuid4().hex
    log.error("incident %s on %s %s", incident, request.method, request.path, exc_info=exc)
    return Problem(500, INTERNAL_DETAIL, instance=f"urn:uuid:{uuid.UUID(incident)}")


def problem_middleware(translate: Translate | None = None) -> Middleware:
    """The middleware answering every failure with a problem document.

    ``translate`` maps the service's own exceptions to problems (return None for "not mine"): FaR's FarError to
    its status, a database failure to 503, and so on. It runs before the catch-all 500.
    """

    @web.middleware
    async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except Problem as problem:
            return problem.response()
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return from_http_exception(exc).response()
        except Exception as exc:
            translated = None if translate is None else translate(exc)
            return (translated or internal_error(exc, request)).response()

    return problems
