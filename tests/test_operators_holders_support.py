"""Helpers for the operator's holder tests (no tests here): Kivra's operator beside a running FaR, and the desk a
test calls both through."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from operators.holders import login_text
from operators.service import Operator
from operators.settings import AccessPointLink, FarLink, OperatorSettings
from tests.test_far_holders_support import EID, OP_A, TEXT, Far
from tests.test_far_support import KIVRA, NOW
from tests.test_operators_support import OPERATOR

OPERATOR_ID = f"16{KIVRA.id}"
NAME = "Kivra"


def operator_settings(far: Far, tmp_path: Path, **more: Any) -> OperatorSettings:
    """Kivra's operator with FaR's link (Kivra's token), the test e-ID CA and its store under ``tmp_path``; ``more``
    adds settings (notifications, retention, trusted intermediaries)."""
    return OperatorSettings(
        id=OPERATOR_ID,
        name=NAME,
        keys=OPERATOR,
        access_point=AccessPointLink(
            "http://127.0.0.1:9", "access-point-token-0123", "webhook-secret-0123456", poll_interval=timedelta(0)
        ),
        database=f"sqlite+aiosqlite:///{tmp_path / 'mailbox.db'}",
        storage=tmp_path / "mail",
        far=FarLink(str(far.client.make_url("")).rstrip("/"), OP_A),
        eid_anchors=(EID.certificate,),
        **more,
    )


@dataclass
class Desk:
    """FaR and the operator, both running over HTTP."""

    far: Far
    client: TestClient[Any, Any]
    operator: Operator

    async def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        response = await self.client.request(method, path, json=body, headers=headers)
        return response.status, await response.json(content_type=None)

    async def open(self, holder: str, *signers: str, **sign: Any) -> tuple[int, Any]:
        signatures = [EID.sign(TEXT, s, at=NOW, **sign).to_json() for s in signers or (holder,)]
        return await self.call(
            "POST", "/api/v1/holders", {"holder": holder, "agreement_text": TEXT, "signatures": signatures}
        )

    async def login(self, person: str) -> str:
        text = login_text(OPERATOR_ID, NAME)
        status, body = await self.call(
            "POST",
            "/api/v1/sessions",
            {"agreement_text": text, "signatures": [EID.sign(text, person, at=NOW).to_json()]},
        )
        assert status == 201, body
        return str(body["token"])
