"""A real SMTP server on a free loopback port (aiosmtpd, in its own thread), keeping what it receives."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from accesspoint.testing.services import free_port


@dataclass
class Mailbag:
    """What the server received: each message with its envelope recipients."""

    messages: list[tuple[list[str], EmailMessage]] = field(default_factory=list)

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        """Keep the message (aiosmtpd's handler hook)."""
        self.messages.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content, policy=policy.default)))
        return "250 Message accepted"

    def to(self, address: str) -> list[EmailMessage]:
        """The messages sent to ``address``."""
        return [message for recipients, message in self.messages if address in recipients]


@dataclass(frozen=True)
class SmtpServer:
    """Where the server listens and what it received."""

    host: str
    port: int
    bag: Mailbag


@contextlib.contextmanager
def smtp_server() -> Iterator[SmtpServer]:
    """Start aiosmtpd on 127.0.0.1 and a free port; stop it afterwards."""
    bag = Mailbag()
    port = free_port()
    controller = Controller(bag, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield SmtpServer("127.0.0.1", port, bag)
    finally:
        controller.stop()
