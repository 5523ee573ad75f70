"""A webhook receiver on loopback: what an access point's backend would be, for tests that follow its events."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from accesspoint.servicekit.webhooks import SIGNATURE_HEADER, signature


class WebhookListener:
    """Takes POSTed events in a thread; ``received`` holds each one's JSON document and whether it was signed
    with ``secret``."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.received: list[tuple[dict[str, Any], bool]] = []
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                signed = self.headers.get(SIGNATURE_HEADER) == signature(listener.secret, body)
                listener.received.append((json.loads(body), signed))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def hook(self, *events: str) -> dict[str, Any]:
        """The access point's ``webhooks`` entry for these events (retried quickly)."""
        url = f"http://127.0.0.1:{self._server.server_address[1]}/events"
        return {"url": url, "events": list(events), "secret": self.secret, "backoff": "200ms"}

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> WebhookListener:
        return self

    def __exit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()
