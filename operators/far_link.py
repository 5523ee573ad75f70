"""The operator's client of FaR's REST API (far/README.md, "Operators and their holders"): what it writes for its
holders with its own token (``write:operator=<orgnr>``), and what it asks about them.

FaR's refusals come back as :class:`FarRefused` with FaR's status, detail and code, so the holder API can pass the
reason on unchanged; a FaR that cannot be reached (or answers 5xx) is :class:`FarUnreachable`.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import aiohttp


class FarRefused(Exception):
    """FaR refused a request: its HTTP status, detail and (for 422) the reason's code."""

    def __init__(self, status: int, detail: str, code: str | None = None) -> None:
        self.status = status
        self.detail = detail
        self.code = code
        super().__init__(f"FaR {status}: {detail}")


class FarUnreachable(Exception):
    """FaR did not answer, or failed (5xx)."""


def _id(value: str) -> str:
    # An eIDAS identifier's "/" must stay inside one path segment.
    return quote(value, safe="")


class FarLink:
    """FaR over HTTP with the operator's token; one session, each call bounded by ``timeout`` seconds."""

    def __init__(self, url: str, token: str, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        """Close the session."""
        if self._session is not None:
            await self._session.close()

    async def call(self, method: str, path: str, body: Any = None, *, missing_ok: bool = False) -> Any:
        """One request; the JSON answer (None for 204, or for 404 when ``missing_ok``)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self.timeout, headers={"Authorization": f"Bearer {self.token}"}
            )
        try:
            async with self._session.request(method, self.url + path, json=body) as response:
                raw = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise FarUnreachable(f"{method} {path}: {exc or type(exc).__name__}") from None
        if status == 204 or (status == 404 and missing_ok):
            return None
        try:
            document = None if not raw else json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            document = None
        if status >= 500:
            detail = document.get("detail") if isinstance(document, dict) else None
            raise FarUnreachable(f"{method} {path}: HTTP {status} {detail or ''}".strip())
        if status >= 400:
            detail = str(document.get("detail")) if isinstance(document, dict) else f"HTTP {status}"
            code = document.get("code") if isinstance(document, dict) else None
            raise FarRefused(status, detail, code)
        return document

    # ------------------------------------------------------------------------------------------- reads

    async def recipient(self, recipient: str) -> dict[str, Any] | None:
        """The recipient as FaR has it (None: unknown)."""
        found = await self.call("GET", f"/api/v1/recipients/{_id(recipient)}", missing_ok=True)
        return None if found is None else dict(found)

    async def switch(self, recipient: str, switch_id: str | None = None) -> dict[str, Any] | None:
        """The pending switch of a recipient (or the switch ``switch_id`` in any state); None when there is none."""
        query = "" if switch_id is None else f"?id={quote(switch_id, safe='')}"
        found = await self.call("GET", f"/api/v1/switches/{_id(recipient)}{query}", missing_ok=True)
        return None if found is None else dict(found)

    async def access_rights(self, company: str, person: str) -> dict[str, Any]:
        """What ``person`` may do with ``company``'s mailbox, asked now."""
        return dict(await self.call("GET", f"/api/v1/access-rights/{_id(company)}/{_id(person)}"))

    # ------------------------------------------------------------------------------------------ writes

    async def register(self, recipient: str, text: str, signatures: list[dict[str, Any]], account_type: str) -> Any:
        """POST /api/v1/registrations (201 Complete or 202 waiting: both answer the authorization result)."""
        body = {"recipient": recipient, "account_type": account_type, "agreement_text": text, "signatures": signatures}
        return await self.call("POST", "/api/v1/registrations", body)

    async def deregister(self, recipient: str, text: str, signatures: list[dict[str, Any]]) -> Any:
        """POST /api/v1/deregistrations."""
        body = {"recipient": recipient, "agreement_text": text, "signatures": signatures}
        return await self.call("POST", "/api/v1/deregistrations", body)

    async def request_switch(
        self, recipient: str, text: str, signatures: list[dict[str, Any]], switch_at: str | None = None
    ) -> dict[str, Any]:
        """POST /api/v1/switches: the holder moves here (not before ``switch_at``, ISO 8601); the pending switch."""
        body = {"recipient": recipient, "agreement_text": text, "signatures": signatures}
        if switch_at is not None:
            body["switch_at"] = switch_at
        return dict((await self.call("POST", "/api/v1/switches", body))["switch"])

    async def complete_switch(self, recipient: str) -> dict[str, Any]:
        """POST /api/v1/switches/{recipient}/complete: hand the holder over (this operator holds the mailbox)."""
        return dict(await self.call("POST", f"/api/v1/switches/{_id(recipient)}/complete"))

    async def cancel_switch(self, recipient: str) -> dict[str, Any]:
        """DELETE /api/v1/switches/{recipient}."""
        return dict(await self.call("DELETE", f"/api/v1/switches/{_id(recipient)}"))

    async def store_preferences(self, recipient: str, body: dict[str, Any]) -> Any:
        """PUT /api/v1/recipients/{id}/preferences."""
        return await self.call("PUT", f"/api/v1/recipients/{_id(recipient)}/preferences", body)

    async def activity(self, recipients: list[str]) -> Any:
        """POST /api/v1/activity: these holders used their mailbox."""
        return await self.call("POST", "/api/v1/activity", {"recipients": recipients})
