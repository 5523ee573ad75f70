"""Every AS4 message and signal in ../shared/interop/ gives the outcome tests/interop_manifest.toml records for it."""

from __future__ import annotations

import email
import email.policy
import tomllib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from accesspoint.cli import load_message
from accesspoint.core.envelope import ParsedEnvelope, parse_envelope
from accesspoint.core.errors import EbmsError
from accesspoint.core.message import ReceivedMessage, href_content_id, read_message
from accesspoint.core.mime import content_id_of, parse_content_type
from accesspoint.core.model import Party, SignalMessage, UserMessage
from accesspoint.core.signals import check_receipt, signed_references
from tests.cli import as_process, in_process
from tests.conftest import interop_path

MANIFEST = Path(__file__).with_name("interop_manifest.toml")
VECTORS: list[dict[str, Any]] = tomllib.loads(MANIFEST.read_text(encoding="utf-8"))["vector"]


def _vectors(predicate: Callable[[dict[str, Any]], bool] | None = None) -> pytest.MarkDecorator:
    chosen = [v for v in VECTORS if predicate is None or predicate(v)]
    return pytest.mark.parametrize("vector", chosen, ids=[v["path"] for v in chosen])


def _by_path(path: str) -> dict[str, Any]:
    return next(v for v in VECTORS if v["path"] == path)


# ------------------------------------------------------------------------------------- the manifest itself

OUTCOMES = {"parses", "refused", "not-as4"}
KINDS = {"user-message", "receipt", "error", "pull-request"}
# `verify` (what accesspoint verify answers) is checked by tests/test_interop_verify.py.
COMMON_KEYS = {"path", "origin", "outcome", "note", "preprocess", "unprocessed_code", "verify"}
FAILURE_KEYS = {"code", "detail_contains"}
HEADER_KEYS = {"kind", "soap_version", "signed", "message_id", "timestamp", "timestamp_utc", "ref_to_message_id"}
PARSES_ONLY_KEYS = {"mime", "root_part_equals"}
KIND_KEYS = {
    "user-message": {
        "from",
        "to",
        "agreement",
        "agreement_pmode",
        "service",
        "service_type",
        "action",
        "conversation_id",
        "mpc",
        "properties",
        "parts",
    },
    "receipt": {"non_repudiation", "references", "copied", "receipt_for"},
    "error": {"errors"},
    "pull-request": {"mpc"},
}
KIND_REQUIRED = {
    "user-message": {"from", "to", "service", "action", "conversation_id", "parts"},
    "receipt": {"non_repudiation", "references"},
    "error": {"errors"},
    "pull-request": {"mpc"},
}
PART_KEYS = {"href", "location", "mime_type", "compression_type", "size", "content_type", "decrypted_gz"}
ERROR_KEYS = {"code", "severity", "category", "short_description", "ref_to_message_in_error", "description", "detail"}
PARTY_KEYS = {"role", "party_ids"}
COPIED_KEYS = {"message_id", "from", "to"}


def _manifest_problems(vector: dict[str, Any]) -> list[str]:
    problems = []
    outcome = vector.get("outcome")
    allowed = set(COMMON_KEYS)
    required = {"path", "origin", "outcome"}
    if outcome not in OUTCOMES:
        return [f"outcome {outcome!r}"]
    kind = vector.get("kind")
    if outcome != "parses":
        allowed |= FAILURE_KEYS
        required |= {"code"}
    if outcome == "parses" or (outcome == "refused" and kind is not None):
        if kind not in KINDS:
            return [f"kind {kind!r}"]
        allowed |= HEADER_KEYS | KIND_KEYS[kind]
        required |= {"kind", "soap_version", "signed", "message_id", "timestamp"} | KIND_REQUIRED[kind]
    if outcome == "parses":
        allowed |= PARSES_ONLY_KEYS
        required |= {"mime"}
    if "unprocessed_code" in vector and "preprocess" not in vector:
        problems.append("unprocessed_code without preprocess")
    if vector.get("preprocess", "strip-before-xml-declaration") != "strip-before-xml-declaration":
        problems.append(f"preprocess {vector['preprocess']!r}")
    problems += [f"unknown key {key!r}" for key in sorted(set(vector) - allowed)]
    problems += [f"missing key {key!r}" for key in sorted(required - set(vector))]
    for part in vector.get("parts", []):
        problems += [f"unknown part key {key!r}" for key in sorted(set(part) - PART_KEYS)]
        if outcome != "parses" and {"size", "content_type", "decrypted_gz"} & set(part):
            problems.append("attachment facts on a message that is refused")
    for error in vector.get("errors", []):
        problems += [f"unknown error key {key!r}" for key in sorted(set(error) - ERROR_KEYS)]
    parties = [vector.get("from"), vector.get("to")]
    if "copied" in vector:
        problems += [f"unknown copied key {key!r}" for key in sorted(set(vector["copied"]) - COPIED_KEYS)]
        parties += [vector["copied"].get("from"), vector["copied"].get("to")]
    for party in parties:
        if party is not None and set(party) != PARTY_KEYS:
            problems.append(f"party keys {sorted(party)}")
    path = vector.get("path", "")
    if path.startswith("/") or ".." in Path(path).parts:
        problems.append(f"path {path!r} is not relative to ../shared/interop")
    return problems


def test_manifest_entries_are_well_formed() -> None:
    """Every manifest entry names a relative path once, a known outcome and only keys the tests check."""
    paths = [v.get("path") for v in VECTORS]
    assert len(paths) == len(set(paths)), "a path is listed twice"
    problems = {v.get("path"): _manifest_problems(v) for v in VECTORS}
    assert {path: found for path, found in problems.items() if found} == {}


WIRE_SUFFIXES = {".mime", ".as4in", ".as4out"}
SOAP_NAMESPACES = (b"http://www.w3.org/2003/05/soap-envelope", b"http://schemas.xmlsoap.org/soap/envelope/")


def _candidates(root: Path) -> set[str]:
    """Files that look like AS4 on the wire: MIME/HTTP dumps, and XML that mentions a SOAP envelope namespace."""
    found = set()
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        if path.suffix in WIRE_SUFFIXES or (
            path.suffix == ".xml" and any(ns in path.read_bytes() for ns in SOAP_NAMESPACES)
        ):
            found.add(path.relative_to(root).as_posix())
    return found


def test_candidate_rule_catches_new_wire_files_and_ignores_configuration(tmp_path: Path) -> None:
    """A new MIME dump or SOAP XML file counts as an AS4 candidate; a P-Mode or payload XML does not."""
    (tmp_path / "peer").mkdir()
    (tmp_path / "peer" / "new.as4in").write_bytes(b"Content-Type: application/soap+xml\n\n<x/>")
    (tmp_path / "peer" / "fault.xml").write_bytes(b'<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"/>')
    (tmp_path / "peer" / "pmode.xml").write_bytes(
        b"<PMode>http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/</PMode>"
    )
    (tmp_path / "peer" / "payload.xml").write_bytes(b"<StandardBusinessDocument/>")
    assert _candidates(tmp_path) == {"peer/new.as4in", "peer/fault.xml"}


def test_manifest_covers_every_interop_message() -> None:
    """Every SOAP, MIME or HTTP-dump file in the interop folders has a manifest entry, and every entry exists."""
    root = interop_path(".")
    listed = {v["path"] for v in VECTORS}
    assert sorted(_candidates(root) - listed) == []
    assert sorted(path for path in listed if not (root / path).is_file()) == []


# ---------------------------------------------------------------------------------------------- loading


def _load(vector: dict[str, Any]) -> tuple[str, bytes]:
    """The file as ``accesspoint inspect`` reads it, after the manifest's preprocessing."""
    content_type, body = load_message(str(interop_path(vector["path"])), None)
    if vector.get("preprocess") == "strip-before-xml-declaration":
        start = body.find(b"<?xml")
        assert start > 0, "nothing precedes the XML declaration"
        body = body[start:]
    return content_type, body


def _refusal(content_type: str, body: bytes) -> EbmsError:
    with pytest.raises(EbmsError) as caught:
        read_message(content_type, body)
    return caught.value


# ------------------------------------------------------------------------------------- header comparison


def _party(party: Party) -> dict[str, Any]:
    ids = [{"value": p.value} | ({} if p.type is None else {"type": p.type}) for p in party.party_ids]
    return {"role": party.role, "party_ids": ids}


def _check_user_message(vector: dict[str, Any], message: UserMessage, received: ReceivedMessage | None) -> None:
    collab = message.collaboration_info
    assert _party(message.party_info.sender) == vector["from"]
    assert _party(message.party_info.receiver) == vector["to"]
    agreement = collab.agreement_ref
    assert (None if agreement is None else agreement.value) == vector.get("agreement")
    assert (None if agreement is None else agreement.pmode) == vector.get("agreement_pmode")
    assert (collab.service.value, collab.service.type) == (vector["service"], vector.get("service_type"))
    assert collab.action == vector["action"]
    assert collab.conversation_id == vector["conversation_id"]
    assert message.mpc == vector.get("mpc")
    properties = [
        {"name": p.name, "value": p.value} | ({} if p.type is None else {"type": p.type})
        for p in message.message_properties
    ]
    assert properties == vector.get("properties", [])
    assert len(message.payload_info) == len(vector["parts"])
    for part, expected in zip(message.payload_info, vector["parts"], strict=True):
        assert part.href == expected.get("href")
        assert part.compression_type == expected.get("compression_type")
        if "location" in expected:
            in_body = part.href is None or part.href.startswith("#")
            assert ("body" if in_body else "attachment") == expected["location"]
        if "mime_type" in expected:
            assert part.mime_type == expected["mime_type"]
        if {"size", "content_type"} & set(expected):
            assert received is not None
            content_id = href_content_id(part)
            attachment = None if content_id is None else received.attachment(content_id)
            assert attachment is not None, f"no attachment for {part.href}"
            if "size" in expected:
                assert attachment.size == expected["size"]
            if "content_type" in expected:
                assert attachment.content_type == expected["content_type"]


def _check_signal(vector: dict[str, Any], signal: SignalMessage) -> None:
    if vector["kind"] == "pull-request":
        assert signal.pull_request is not None
        assert signal.pull_request.mpc == vector["mpc"]
    elif vector["kind"] == "receipt":
        receipt = signal.receipt
        assert receipt is not None
        assert receipt.is_non_repudiation is vector["non_repudiation"]
        assert [r.uri for r in receipt.references] == vector["references"]
        if "copied" in vector:
            copied = receipt.user_message
            assert copied is not None
            assert copied.message_id == vector["copied"]["message_id"]
            assert _party(copied.party_info.sender) == vector["copied"]["from"]
            assert _party(copied.party_info.receiver) == vector["copied"]["to"]
        else:
            assert receipt.user_message is None
    else:
        assert len(signal.errors) == len(vector["errors"])
        for error, expected in zip(signal.errors, vector["errors"], strict=True):
            assert (error.error_code, error.severity) == (expected["code"], expected["severity"])
            assert error.ref_to_message_in_error == expected.get("ref_to_message_in_error")
            for key in ("category", "short_description", "detail"):
                if key in expected:
                    assert getattr(error, key) == expected[key]
            if "description" in expected:
                assert error.description is not None
                assert error.description.text == expected["description"]


def _check_header(vector: dict[str, Any], parsed: ParsedEnvelope, received: ReceivedMessage | None = None) -> None:
    header = parsed.header
    info = header.message_info
    assert parsed.messaging.kind == vector["kind"]
    assert {"1.1": "V11", "1.2": "V12"}[vector["soap_version"]] == parsed.soap_version.name
    security = parsed.security_header
    signed = security is not None and security.find("{http://www.w3.org/2000/09/xmldsig#}Signature") is not None
    assert signed is vector["signed"]
    assert info.message_id == vector["message_id"]
    assert info.timestamp_text == vector["timestamp"]
    if "timestamp_utc" in vector:
        assert info.timestamp == datetime.fromisoformat(vector["timestamp_utc"])
    assert info.ref_to_message_id == vector.get("ref_to_message_id")
    if isinstance(header, UserMessage):
        _check_user_message(vector, header, received)
    else:
        _check_signal(vector, header)


# ------------------------------------------------------------------------------------------------ vectors


@_vectors()
def test_interop_vector(vector: dict[str, Any]) -> None:
    """The file parses to the manifest's ids, parties and parts, or is refused with exactly its ebMS code."""
    if "unprocessed_code" in vector:
        raw_type, raw_body = load_message(str(interop_path(vector["path"])), None)
        assert _refusal(raw_type, raw_body).code == vector["unprocessed_code"]
    content_type, body = _load(vector)
    if vector["outcome"] == "parses":
        received = read_message(content_type, body)
        assert received.is_mime is vector["mime"]
        if not received.is_mime:
            soap_media = {"1.1": "text/xml", "1.2": "application/soap+xml"}[vector["soap_version"]]
            assert parse_content_type(content_type).media_type == soap_media
        _check_header(vector, received.parsed, received)
        if "root_part_equals" in vector:
            assert received.envelope_bytes == interop_path(vector["root_part_equals"]).read_bytes()
        return
    refusal = _refusal(content_type, body)
    assert refusal.code == vector["code"], refusal.detail
    assert vector.get("detail_contains", "") in refusal.detail
    if "kind" in vector:
        # Refused as received, yet its SOAP header alone reads as the manifest says.
        _check_header(vector, parse_envelope(body))


@_vectors(lambda v: v["outcome"] == "parses" and v["mime"])
def test_mime_part_sizes_agree_with_the_stdlib_email_parser(vector: dict[str, Any]) -> None:
    """Python's email module finds the same attachment Content-IDs and decoded sizes as the manifest records."""
    message = email.message_from_bytes(interop_path(vector["path"]).read_bytes(), policy=email.policy.compat32)
    assert message.get_content_type() == "multipart/related"
    start = message.get_param("start")
    leaves = [part for part in message.walk() if not part.is_multipart()]
    root_index = 0
    if isinstance(start, str):
        root_index = next(i for i, part in enumerate(leaves) if part.get("Content-ID") == start)
    sizes = {}
    for index, part in enumerate(leaves):
        if index != root_index:
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            sizes[content_id_of(str(part.get("Content-ID")))] = len(payload)
    expected = {p["href"][len("cid:") :]: p["size"] for p in vector["parts"]}
    assert sizes == expected


@_vectors(lambda v: any("decrypted_gz" in p for p in v.get("parts", [])))
def test_encrypted_attachment_size_is_plaintext_plus_gcm_overhead(vector: dict[str, Any]) -> None:
    """An AES-GCM attachment as received is its decrypted gzip plus a 12-byte IV and a 16-byte tag."""
    for part in vector["parts"]:
        plaintext = interop_path(part["decrypted_gz"]).read_bytes()
        assert plaintext[:2] == b"\x1f\x8b", "the decrypted attachment is still gzip"
        assert part["size"] == len(plaintext) + 12 + 16


@_vectors(lambda v: "receipt_for" in v)
def test_receipt_echoes_what_its_user_message_signed(vector: dict[str, Any]) -> None:
    """A recorded receipt refers to its user message and echoes exactly that message's signed references."""
    signal = read_message(*_load(vector)).parsed.header
    assert isinstance(signal, SignalMessage)
    request = _by_path(vector["receipt_for"])
    content_type, body = _load(request)
    parsed = read_message(content_type, body).parsed if request["outcome"] == "parses" else parse_envelope(body)
    references = signed_references(parsed)
    assert len(references) == len(vector["references"])
    receipt = check_receipt(signal, sent_message_id=request["message_id"], sent_references=references)
    assert receipt is signal.receipt
    with pytest.raises(EbmsError) as other:
        check_receipt(signal, sent_message_id=request["message_id"] + "-other", sent_references=references)
    assert other.value.code == "EBMS:0302"


# ---------------------------------------------------------------------------------------------------- CLI


def _inspect(*args: str, process: bool = False) -> tuple[int, dict[str, Any]]:
    done = (as_process if process else in_process)("inspect", *args)
    return done.code, done.document


def test_cli_inspect_summarises_a_mime_user_message_with_exit_0() -> None:
    """``accesspoint inspect`` prints the user message's ids and its attachment's size as received, exit 0."""
    vector = _by_path("python-peers/as4.usermessage.mime")
    code, document = _inspect(str(interop_path(vector["path"])), process=True)
    assert code == 0
    assert document["ok"] is True
    assert (document["kind"], document["message_id"], document["mime"]) == ("user-message", vector["message_id"], True)
    assert document["from"]["party_ids"][0]["value"] == vector["from"]["party_ids"][0]["value"]
    assert [(p["href"], p["size"]) for p in document["parts"]] == [(p["href"], p["size"]) for p in vector["parts"]]


def test_cli_inspect_reads_a_headerless_soap11_receipt_as_soap11() -> None:
    """A bare SOAP 1.1 file that also declares the SOAP 1.2 namespace is inspected as a SOAP 1.1 receipt."""
    vector = _by_path("phase4/receipts/TestReceipt11.xml")
    code, document = _inspect(str(interop_path(vector["path"])))
    assert code == 0
    assert (document["kind"], document["soap_version"]) == ("receipt", "1.1")
    assert document["ref_to_message_id"] == vector["ref_to_message_id"]


@pytest.mark.parametrize(
    "path",
    [
        "phase4/negative/WrongCompression.mime",
        "phase4/negative/TwoUserMessages.xml",
        "domibus/harmony/messages/SOAPFaultResponse.xml",
        "python-peers/as4.usermessage.soap.xml",
    ],
)
def test_cli_inspect_reports_the_ebms_code_of_a_refused_file_with_exit_2(path: str) -> None:
    """A refused or non-AS4 file makes ``inspect`` print ok=false with the manifest's ebMS code and exit 2."""
    code, document = _inspect(str(interop_path(path)))
    assert code == 2
    assert document["ok"] is False
    assert document["error"]["code"] == _by_path(path)["code"]


def test_cli_inspect_content_type_option_wins_over_the_guess() -> None:
    """``--content-type`` multipart/related on a bare SOAP file is a MIME error (EBMS:0007), exit 2."""
    path = interop_path("python-peers/as4.receipt-by-as4.xml")
    code, document = _inspect(str(path), "--content-type", 'multipart/related; boundary="x"')
    assert code == 2
    assert document["error"]["code"] == "EBMS:0007"


def test_cli_inspect_of_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    """Inspecting a file that does not exist prints a usage error and exits 64."""
    code, document = _inspect(str(tmp_path / "absent.mime"))
    assert code == 64
    assert document["ok"] is False
    assert document["error"]["code"] == "usage"
