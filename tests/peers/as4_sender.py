"""as4 (PyPI) as a sending Peppol access point: build, sign, encrypt, POST, then verify the signed receipt.

Runs in the peer's own venv, never in ours. Prints one JSON document (message id, Content-ID, sha256 and size of
the SBD it sent, what the answer was) and exits 0 only when the answer is a receipt signed by PEER_CERT whose
non-repudiation information matches, reference for reference, what this side signed; 1 otherwise.

usage: python as4_sender.py URL PARTY_ID KEY.pem CERT.pem PEER_PARTY_ID PEER_CERT.pem DOCUMENT.xml SENDER RECIPIENT
"""

from __future__ import annotations

import hashlib
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

from as4 import AS4LocalPrivateKey
from as4.peppol import (
    build_peppol_message,
    create_peppol_external_party,
    create_peppol_internal_party,
    parse_peppol_receipt,
)
from cryptography import x509
from cryptography.hazmat.primitives import serialization

INVOICE = (
    "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2::Invoice"
    "##urn:cen.eu:en16931:2017#compliant#urn:fdc:peppol.eu:2017:poacc:billing:3.0::2.1"
)
BILLING = "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0"

url, party, key_path, cert_path, peer, peer_cert_path, document_path, sender, recipient = sys.argv[1:10]
peer_cert = x509.load_pem_x509_certificate(Path(peer_cert_path).read_bytes())
local = create_peppol_internal_party(
    party,
    x509.load_pem_x509_certificate(Path(cert_path).read_bytes()),
    AS4LocalPrivateKey(serialization.load_pem_private_key(Path(key_path).read_bytes(), None)),  # type: ignore[arg-type]
)
message = build_peppol_message(
    Path(document_path).read_bytes(),
    local_party=local,
    remote_party=create_peppol_external_party(peer, peer_cert),
    sender=sender,
    recipient=recipient,
    sender_country_id="SE",
    document_type_identifier_scheme="busdox-docid-qns",
    document_type_identifier_value=INVOICE,
    process_identifier=BILLING,
)
body, boundary = message.get_request_data()
((content_id, sbd),) = message.decrypted_data.items()  # the SBD as4 wrapped the document in, before gzip
report: dict[str, object] = {
    "message_id": message.message_id,
    "content_id": content_id,
    "sha256": hashlib.sha256(sbd).hexdigest(),
    "size": len(sbd),
}
request = urllib.request.Request(url, data=body, headers=message.get_http_headers(boundary), method="POST")  # noqa: S310
try:
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (the test's loopback URL)
        status, answer = response.status, response.read()
except urllib.error.HTTPError as exc:
    status, answer = exc.code, exc.read()
report["http_status"] = status
verified = False
try:
    receipt = parse_peppol_receipt(answer, peer_cert)  # the signature must verify and the signer be PEER_CERT
    if receipt.error is not None:
        report["ebms_error"] = {"code": receipt.error.error_code, "description": str(receipt.error.short_description)}
    else:
        receipt.verify_non_repudiation(message.signed_references)  # NRR digests must equal what was signed
        verified = True
except Exception as exc:  # any refusal by as4 is the outcome we report, not a crash
    report["refused"] = f"{type(exc).__name__}: {exc}"
report["receipt_verified"] = verified
print(json.dumps(report))
sys.exit(0 if verified else 1)
