"""``accesspoint mailbox decrypt``: the holder's side of end-to-end encryption — open a letter with the holder's key.

``mailbox decrypt FILE --key KEY [--cert CERT] ... [--out FILE]`` reads a letter as the operator's mailbox API
serves it (the JSON of ``GET /api/v1/mailboxes/{holder}/messages/{id}``, its ``body`` in base64), or the body
itself (an SBD carrying ``<EncryptedContent>``, the ``<EncryptedContent>`` alone, or a CMS message in DER), and
decrypts it with whichever of the holder's keys it is for (old keys stay usable for old mail). The plaintext goes
to ``--out`` (or nowhere: the JSON says its size and SHA-256).

Exit codes: 0 decrypted; 1 refused (for another key, or it does not open: altered or the wrong key); 2 malformed
(nothing encrypted in it, not CMS); 64 usage (a key or file that cannot be read).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
from pathlib import Path
from typing import Any

from accesspoint.cli import EXIT_MALFORMED, EXIT_OK, EXIT_REFUSED, EXIT_USAGE, failure


def register(commands: Any) -> None:
    """Add ``mailbox decrypt``."""
    mailbox = commands.add_parser("mailbox", help="the mailbox holder's side")
    sub = mailbox.add_subparsers(dest="mailbox_command", required=True, parser_class=type(mailbox))
    decrypt = sub.add_parser("decrypt", help="decrypt a letter encrypted to the holder's key")
    decrypt.add_argument("file", help="the mailbox API's JSON for the letter, or its body")
    decrypt.add_argument("--key", action="append", required=True, help="a holder private key (PEM or PKCS#12)")
    decrypt.add_argument("--cert", action="append", default=[], help="the certificate of the --key at that place")
    decrypt.add_argument("--password", help="the keys' password, if any")
    decrypt.add_argument("--out", help="write the plaintext here")
    decrypt.set_defaults(handler=cmd_decrypt)


def letter_body(data: bytes) -> bytes:
    """The encrypted body: from the mailbox API's JSON (``body`` in base64), else the bytes as they are."""
    stripped = data.lstrip()
    if stripped.startswith(b"{"):
        try:
            document = json.loads(data)
            return base64.b64decode(document["body"], validate=True)
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise ValueError("a JSON document without a base64 body (the mailbox API's letter)") from None
    return data


def cmd_decrypt(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Decrypt the letter and report what was opened with which key."""
    from accesspoint.envelopes._common import EnvelopeError
    from accesspoint.envelopes.holder_content import decrypt_content
    from accesspoint.security import cms
    from accesspoint.security.keys import KeyLoadError, load_key_pair

    password = None if args.password is None else args.password.encode()
    try:
        certificates = args.cert + [None] * (len(args.key) - len(args.cert))
        keys = [
            cms.DecryptionKey.from_key_pair(load_key_pair(key, password, certificate=cert))
            for key, cert in zip(args.key, certificates, strict=True)
        ]
        data = Path(args.file).read_bytes()
    except (KeyLoadError, OSError, ValueError) as exc:
        return EXIT_USAGE, failure("usage", str(exc))
    try:
        body = letter_body(data)
        if body[:1] == b"\x30":  # a DER SEQUENCE: a bare CMS message
            key_id, content_type, plaintext = None, None, cms.decrypt(body, keys)
        else:
            wrapped, plaintext = decrypt_content(body, keys)
            key_id, content_type = wrapped.key_id, wrapped.content_type
    except cms.NotAddressedToUs as exc:
        return EXIT_REFUSED, failure("not-for-these-keys", str(exc), recipients=list(exc.key_ids))
    except cms.DecryptionFailed as exc:
        return EXIT_REFUSED, failure("decryption-failed", str(exc))
    except (cms.CmsError, EnvelopeError, ValueError) as exc:
        return EXIT_MALFORMED, failure("malformed", str(exc))
    used = next((k.key_id for k in keys if key_id is None or k.key_id == key_id), None)
    if args.out:
        Path(args.out).write_bytes(plaintext)
    return EXIT_OK, {
        "ok": True,
        "key_id": key_id or used,
        "content_type": content_type,
        "size": len(plaintext),
        "sha256": hashlib.sha256(plaintext).hexdigest(),
        "out": args.out,
    }
