"""The JSON object a request to FaR's REST API carries: what every handler that takes a body starts with."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from far.service import InvalidInput


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request's body as a JSON object; InvalidInput (400) when it is not JSON or not an object."""
    try:
        body = await request.json(loads=json.loads)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidInput("the body is not JSON") from None
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object")
    return body
