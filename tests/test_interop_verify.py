"""Every signed message in ../shared/interop/ gets, from ``accesspoint verify``, the verdict its README gives.

The expected answers live in tests/interop_manifest.toml (``[[vector.verify]]``, described in its header); this
module runs the real CLI in a subprocess for each of them. The runs are independent processes, so they are
started together once per module and each test checks its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from accesspoint.cli import load_message, main
from accesspoint.core.model import MessageInfo, Receipt, ReferenceEcho, SignalMessage
from accesspoint.security.keys import KeyPair
from accesspoint.security.policy import SecurityPolicy, TokenReference
from accesspoint.security.receipts import sign_signal
from accesspoint.testing.pki import NOT_AFTER, NOT_BEFORE, later
from tests.conftest import REPO, interop_path

MANIFEST = Path(__file__).with_name("interop_manifest.toml")
VECTORS: list[dict[str, Any]] = tomllib.loads(MANIFEST.read_text(encoding="utf-8"))["vector"]
CASES: list[tuple[dict[str, Any], int]] = [(v, i) for v in VECTORS for i in range(len(v.get("verify", [])))]
CASE_IDS = [f"{v['path']}#{i}" for v, i in CASES]

OPTION_KEYS = {"trust", "trust_password", "key", "password", "at", "legacy"}
REFUSAL_KEYS = {"code", "reason_contains", "trust_failure"}
SUCCESS_KEYS = {"complete", "signer", "pinned", "unchecked", "warning_contains", "payloads"}
PAYLOAD_KEYS = {"content_id", "file", "size", "sha256"}
SIGNATURE_MARK = b"SignatureValue"


def _verify_problems(spec: dict[str, Any]) -> list[str]:
    problems = [
        f"unknown key {key!r}"
        for key in sorted(set(spec) - OPTION_KEYS - REFUSAL_KEYS - SUCCESS_KEYS - {"exit", "note"})
    ]
    exit_code = spec.get("exit")
    if exit_code not in (0, 1, 2, 3):
        return [*problems, f"exit {exit_code!r}"]
    if not isinstance(spec.get("trust"), list) or not spec["trust"]:
        problems.append("trust must be a non-empty list")
    if exit_code in (1, 2):
        problems += [f"{key!r} on a refusal" for key in sorted(SUCCESS_KEYS & set(spec))]
        if "code" not in spec:
            problems.append("a refusal without its ebMS code")
    else:
        problems += [f"{key!r} on a success" for key in sorted(REFUSAL_KEYS & set(spec))]
        if spec.get("complete") is not (exit_code == 0):
            problems.append("complete must be true for exit 0 and false for exit 3")
    if "password" in spec and "key" not in spec:
        problems.append("password without key")
    for payload in spec.get("payloads", []):
        problems += [f"payload key {key!r}" for key in sorted(set(payload) ^ PAYLOAD_KEYS)]
    for relative in [*spec.get("trust", []), spec.get("key", "")]:
        if relative.startswith("/") or ".." in Path(relative).parts:
            problems.append(f"{relative!r} is not relative to ../shared/interop")
    return problems


def test_verify_tables_are_well_formed() -> None:
    """Every ``verify`` table has a known exit code, trust files, and only the keys its outcome can be checked on."""
    problems = {f"{v['path']}#{i}": found for v, i in CASES if (found := _verify_problems(v["verify"][i]))}
    assert problems == {}


def test_every_signed_interop_vector_has_a_verify_table() -> None:
    """A vector marked signed, or whose file carries a ds:SignatureValue, states what ``verify`` answers for it."""
    root = interop_path(".")
    missing = [
        v["path"]
        for v in VECTORS
        if "verify" not in v and (v.get("signed") is True or SIGNATURE_MARK in (root / v["path"]).read_bytes())
    ]
    assert missing == []


def test_the_signed_flag_agrees_with_the_file() -> None:
    """``signed = true`` is given only to files that do carry a signature (the verify coverage check relies on it)."""
    root = interop_path(".")
    assert [
        v["path"] for v in VECTORS if v.get("signed") is True and SIGNATURE_MARK not in (root / v["path"]).read_bytes()
    ] == []


# ---------------------------------------------------------------------------------------------- the runs


@dataclass(frozen=True, slots=True)
class Run:
    """One ``accesspoint verify`` process: its exit code and the JSON document it printed."""

    code: int
    report: dict[str, Any]
    stderr: str


def _arguments(vector: dict[str, Any], spec: dict[str, Any], scratch: Path) -> list[str]:
    path = interop_path(vector["path"])
    args = [str(path)]
    if vector.get("preprocess") == "strip-before-xml-declaration":
        content_type, body = load_message(str(path), None)
        stripped = scratch / Path(vector["path"]).name
        stripped.write_bytes(body[body.index(b"<?xml") :])
        args = [str(stripped), "--content-type", content_type]
    for trust in spec["trust"]:
        args += ["--trust", str(interop_path(trust))]
    if "trust_password" in spec:
        args += ["--trust-password", spec["trust_password"]]
    if "key" in spec:
        args += ["--key", str(interop_path(spec["key"]))]
    if "password" in spec:
        args += ["--password", spec["password"]]
    if "at" in spec:
        args += ["--at", spec["at"]]
    if spec.get("legacy"):
        args.append("--legacy")
    return [*args, "--no-revocation"]


def _run_here(args: list[str]) -> Run:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["verify", *args])
    try:
        report = json.loads(out.getvalue())
    except json.JSONDecodeError:
        report = {"unparsable stdout": out.getvalue()}
    return Run(code, report, err.getvalue()[-2000:])


def _run(args: list[str]) -> Run:
    result = subprocess.run(
        [sys.executable, "-m", "accesspoint", "verify", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        report = {"unparsable stdout": result.stdout}
    return Run(result.returncode, report, result.stderr[-2000:])


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """Every verify case of the manifest through the CLI's ``main``: the first as an ``accesspoint verify`` process
    (the command as users run it), the rest in this process, one after another (a fresh interpreter per case cost
    about 40 s of the suite; ``verify`` keeps no state between calls, and each case gets its own arguments)."""
    interop_path(".")
    scratch = tmp_path_factory.mktemp("interop-verify")
    arguments = {
        case_id: _arguments(v, v["verify"][i], scratch) for case_id, (v, i) in zip(CASE_IDS, CASES, strict=True)
    }
    first = next(iter(arguments))
    return {case_id: (_run if case_id == first else _run_here)(args) for case_id, args in arguments.items()}


@pytest.mark.parametrize(("vector", "index"), CASES, ids=CASE_IDS)
def test_interop_vector_verifies_as_its_readme_says(vector: dict[str, Any], index: int, runs: dict[str, Run]) -> None:
    """``accesspoint verify`` exits as the manifest says, with its ebMS code and reason, or its signer and payloads."""
    spec = vector["verify"][index]
    run = runs[f"{vector['path']}#{index}"]
    report = run.report
    assert run.code == spec["exit"], (report, run.stderr)
    if "message_id" in report and "message_id" in vector:
        assert report["message_id"] == vector["message_id"]
    if spec["exit"] in (1, 2):
        assert report["ok"] is False
        assert report["error"]["code"] == spec["code"]
        assert spec.get("reason_contains", "") in report["error"]["reason"]
        assert report.get("trust_failure") == spec.get("trust_failure")
        return
    assert report["ok"] is True
    assert report["complete"] is spec["complete"]
    if "signer" in spec:
        assert spec["signer"] in report["signer"]["subject"]
    if "pinned" in spec:
        assert report["trust"]["pinned"] is spec["pinned"]
    unchecked = [r["uri"] for r in report["references"] if r["result"] != "valid"]
    assert unchecked == spec.get("unchecked", [])
    if "warning_contains" in spec:
        assert any(spec["warning_contains"] in warning for warning in report["warnings"]), report["warnings"]
    else:
        assert report["warnings"] == []
    if "payloads" in spec:
        expected = {(p["content_id"], p["size"], p["sha256"]) for p in spec["payloads"]}
        assert {(p["content_id"], p["size"], p["sha256"]) for p in report["payloads"]} == expected


@pytest.mark.parametrize(
    "payload",
    [p for v in VECTORS for spec in v.get("verify", []) for p in spec.get("payloads", [])],
    ids=lambda p: p["file"],
)
def test_expected_payload_digests_are_those_of_the_readme_files(payload: dict[str, Any]) -> None:
    """The size and SHA-256 a verify table expects are those of the decompressed payload file the README names."""
    data = interop_path(payload["file"]).read_bytes()
    assert (len(data), hashlib.sha256(data).hexdigest()) == (payload["size"], payload["sha256"])


# ------------------------------------------------------------------ Domibus-style partners, without the folder


def _keytool_style_certificate(common_name: str) -> KeyPair:
    """A self-signed certificate as keytool makes them (Domibus' blue_gw): basicConstraints CA, no keyUsage."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(key, certificate)


def test_signer_referenced_by_ski_is_found_among_self_signed_ca_trust_certificates(tmp_path: Path) -> None:
    """A receipt whose KeyInfo names a self-signed CA-flagged --trust certificate by SKI verifies, pinned (exit 0)."""
    partner = _keytool_style_certificate("blue_gw")
    policy = SecurityPolicy.edelivery_1_15(token_reference=TokenReference.SUBJECT_KEY_IDENTIFIER)
    echo = ReferenceEcho("cid:message", "http://www.w3.org/2001/04/xmlenc#sha256", "AAAA")
    signal = SignalMessage(MessageInfo("r-1@blue", later(30), "m-1@red"), receipt=Receipt(references=(echo,)))
    ids = iter(range(100))
    receipt = tmp_path / "receipt.xml"
    receipt.write_bytes(sign_signal(signal, partner, policy, new_id=lambda: f"_id{next(ids)}"))
    trusted = tmp_path / "blue_gw.pem"
    trusted.write_bytes(partner.certificate.public_bytes(serialization.Encoding.PEM))
    other = tmp_path / "red_gw.pem"
    other.write_bytes(_keytool_style_certificate("red_gw").certificate.public_bytes(serialization.Encoding.PEM))
    moment = ["--at", later(30).isoformat(), "--no-revocation"]

    run = _run([str(receipt), "--trust", str(trusted), str(other), *moment])
    assert run.code == 0, (run.report, run.stderr)
    assert run.report["signer"]["subject"] == "CN=blue_gw"
    assert run.report["trust"]["pinned"] is True
    run = _run([str(receipt), "--trust", str(other), *moment])
    assert (run.code, run.report["error"]["code"]) == (1, "EBMS:0101"), run.report
    assert "no known certificate has the referenced SKI" in run.report["error"]["reason"]
