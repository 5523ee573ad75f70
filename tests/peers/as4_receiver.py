"""as4 (PyPI) as a receiving Peppol access point: verify, decrypt and answer each POST with its signed signal.

Runs in the peer's own venv, never in ours. as4 has no HTTP layer; this stdlib server is the whole wrapper.
Each request leaves ``OUT/<n>.json`` (outcome, message id, error, sha256 and size of the decrypted payload) beside
the raw request, the signal and the payload, so the test can check what the peer saw.

usage: python as4_receiver.py PORT PARTY_ID KEY.pem CERT.pem TRUST_CA.pem OUT_DIR
prints ``listening PORT`` once it accepts connections.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from as4 import AS4LocalPrivateKey
from as4.peppol import create_peppol_internal_party, parse_peppol_message, peppol_security_policy
from cryptography import x509
from cryptography.hazmat.primitives import serialization

port, party, key_path, cert_path, ca_path, out_dir = sys.argv[1:7]
out = Path(out_dir)
out.mkdir(parents=True, exist_ok=True)
local = create_peppol_internal_party(
    party,
    x509.load_pem_x509_certificate(Path(cert_path).read_bytes()),
    AS4LocalPrivateKey(serialization.load_pem_private_key(Path(key_path).read_bytes(), None)),  # type: ignore[arg-type]
)
# CN == eb:From/PartyId and a chain to the anchor: what a Peppol AP checks of its partners.
policy = peppol_security_policy(x509.load_pem_x509_certificate(Path(ca_path).read_bytes()))
lock = threading.Lock()
count = 0


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        global count
        body = self.rfile.read(int(self.headers["Content-Length"]))
        content_type = self.headers["Content-Type"]
        with lock:
            count += 1
            number = count
        (out / f"{number}.request").write_bytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
        try:
            exchange = parse_peppol_message(
                request_headers={"Content-Type": content_type},
                request_body=body,
                local_party=local,
                security_policy=policy,
            )
            headers, signal = exchange.build_signal()
        except Exception as exc:  # as4 raises where it cannot even build an error signal: tell the test
            (out / f"{number}.json").write_text(json.dumps({"successful": False, "error": repr(exc)}))
            self.send_error(500, "as4 could not answer")
            return
        message = exchange.message
        payloads = dict(message.decrypted_data) if exchange.successful else {}
        record = {
            "successful": exchange.successful,
            "message_id": exchange.message_id,
            "error": None if message.parse_error is None else repr(message.parse_error),
            "payloads": {
                cid: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)} for cid, data in payloads.items()
            },
        }
        (out / f"{number}.signal.xml").write_bytes(signal)
        for index, data in enumerate(payloads.values()):
            (out / f"{number}.payload{index}.xml").write_bytes(data)
        (out / f"{number}.json").write_text(json.dumps(record, indent=1))
        self.send_response(200)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(signal)))
        self.end_headers()
        self.wfile.write(signal)

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write("as4-receiver: " + format % args + "\n")


server = ThreadingHTTPServer(("127.0.0.1", int(port)), Handler)
print("listening", server.server_address[1], flush=True)
server.serve_forever()
